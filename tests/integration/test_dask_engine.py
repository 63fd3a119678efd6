"""The Dask engine against real processes on 127.0.0.1: owned LocalCluster, attached scheduler, adoption."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid

import pandas as pd
import pytest

from zenml_compute_engines import EngineError, compute_engine
from zenml_compute_engines.flavors.engine import live_engines
from tests.support import zenml_env
from tests.support.dask_cluster import leftover_workers, wait_until_gone
from tests.support.ports import free_port, is_loopback

# Tiny engines: other engineers share this 2-core machine.
TINY = {"n_workers": 1, "threads_per_worker": 1, "memory_limit": "1GiB"}
# Threads in the pipeline process: no memory_limit, Dask would measure (and pause on) the whole process.
IN_PROCESS = {"processes": False, "n_workers": 1, "threads_per_worker": 1}


@pytest.fixture
def dask_stack(zen):
    """Activate a stack whose feature_store is a Dask engine with the given config."""

    def make(**config):
        return zenml_env.activate_engine_stack("dask", config)

    yield make
    zenml_env.teardown_engines()


def _expected_sums(n: int) -> dict:
    from tests.integration.dask_pipelines import numbers

    return {str(k): float(v) for k, v in numbers(n).groupby("k").x.sum().items()}


def _no_workers_left() -> None:
    alive = wait_until_gone([p.pid for p in leftover_workers()], timeout=15)
    assert alive == [], f"Dask worker processes left behind: {alive}"


def test_owned_cluster_is_shared_by_the_run_and_stopped(dask_stack):
    import dask.dataframe as dd
    from zenml.client import Client

    from zenml_compute_engines.materializers import dataset
    from tests.integration.dask_pipelines import frame_pipeline

    stack = dask_stack(**TINY)
    run = frame_pipeline(n=100)

    summary = run.steps["summarize"].outputs["summary"][0].load()
    assert summary["sums"] == _expected_sums(100)
    assert summary["rows"] == 100
    assert summary["npartitions"] == 4
    # The output of make_frame was computed by a worker process while it was written.
    assert summary["writer_pids"] == [summary["task_pid"]]
    assert summary["task_pid"] != summary["driver_pid"] == os.getpid()
    # Scheduler, nanny, worker and HTTP servers all listen on loopback only (so do the
    # session's other servers, which are this process's children too).
    assert summary["listening_ips"] and all(is_loopback(ip) for ip in summary["listening_ips"])

    facts = [zenml_env.step_metadata(run, name) for name in ("make_frame", "summarize")]
    for fact in facts:
        assert fact["engine"] == "dask" and fact["mode"] == "owned"
        assert fact["engine_starts_in_process"] == 1  # one LocalCluster for the whole run
        assert fact["cluster"] == "LocalCluster"
        assert (fact["n_workers"], fact["threads_per_worker"]) == (1, 1)
        assert fact["memory_limit_per_worker"] == "1.00 GiB"
        assert fact["address"].startswith("tcp://127.0.0.1:")
        assert fact["dask_version"]
        if "dashboard_url" in fact:  # bokeh installed: served on loopback
            assert fact["dashboard_url"].startswith("http://127.0.0.1:")
        else:
            assert fact["dashboard"].startswith("unavailable: install bokeh")
    assert facts[0]["address"] == facts[1]["address"] == summary["scheduler"]
    assert facts[0]["client_id"] == facts[1]["client_id"] == summary["client_id"]

    assert stack.feature_store.id not in live_engines()
    assert wait_until_gone([summary["task_pid"]]) == []
    _no_workers_left()

    # The artifact between the steps: parquet parts + manifest, loadable after the run.
    artifact = run.steps["make_frame"].outputs["frame"][0]
    manifest = dataset.read_manifest(Client().active_stack.artifact_store, artifact.uri)
    assert [f.path for f in manifest.files] == [f"part.{i:05d}.parquet" for i in range(4)]
    assert manifest.num_rows == 100 and manifest.engine == "dask"
    assert [c["name"] for c in manifest.schema] == ["id", "k", "x", "pid"]  # no __null_dask_index__
    metadata = artifact.run_metadata
    assert (metadata["num_rows"], metadata["num_files"], metadata["npartitions"]) == (100, 4, 4)
    assert artifact.visualizations
    loaded = artifact.load()
    assert isinstance(loaded, dd.DataFrame) and loaded.npartitions == 4
    frame = loaded.compute()
    assert frame.id.tolist() == list(range(100))
    assert set(frame.pid) == {summary["task_pid"]}


def test_materializer_keeps_values_dtypes_order_and_index(zen):
    import dask.dataframe as dd
    from zenml.client import Client

    from zenml_compute_engines.materializers import dataset
    from zenml_compute_engines.materializers.dask_dataframe import DaskDataFrameMaterializer

    store = Client().active_stack.artifact_store
    n = 36
    source = pd.DataFrame(
        {
            "i": range(n),
            "f": [i / 4 for i in range(n)],
            "s": [f"row{i}" for i in range(n)],
            "t": pd.date_range("2024-01-01", periods=n, freq="h"),
            "b": [i % 2 == 0 for i in range(n)],
            "o": pd.array([None if i % 5 == 0 else i for i in range(n)], dtype="Int64"),
        },
        index=pd.Index(range(1000, 1000 + n), name="key"),
    )
    frame = dd.from_pandas(source, npartitions=12)  # > 10 parts: file order must stay numeric

    uri = f"{store.path}/dask-roundtrip-{uuid.uuid4().hex}"
    materializer = DaskDataFrameMaterializer(uri, artifact_store=store)
    with pytest.raises(dataset.IncompleteDatasetError):
        materializer.load(dd.DataFrame)
    materializer.save(frame)
    assert materializer.extract_metadata(frame)["num_rows"] == n

    loaded = DaskDataFrameMaterializer(uri, artifact_store=store).load(dd.DataFrame)
    assert loaded.npartitions == 12
    assert loaded.known_divisions and loaded.divisions == frame.divisions
    assert dict(loaded.dtypes) == dict(frame.dtypes)
    pd.testing.assert_frame_equal(loaded.compute(), frame.compute())

    # An artifact of another engine (Spark-style names, no pandas metadata) loads too.
    import pyarrow as pa
    import pyarrow.parquet as pq

    other = f"{store.path}/spark-style-{uuid.uuid4().hex}"
    store.makedirs(dataset.data_dir(other))
    for part in range(2):
        table = pa.table({"v": list(range(part * 5, part * 5 + 5))})
        with store.open(f"{dataset.data_dir(other)}/part-0000{part}-abc.snappy.parquet", "wb") as handle:
            pq.write_table(table, handle)
    with store.open(f"{dataset.data_dir(other)}/_SUCCESS", "w") as handle:
        handle.write("")
    dataset.commit(store, other, engine="spark", engine_version="test")
    spark_like = DaskDataFrameMaterializer(other, artifact_store=store).load(dd.DataFrame)
    assert spark_like.npartitions == 2
    assert spark_like.compute().v.tolist() == list(range(10))


def test_failing_step_stops_the_owned_cluster(dask_stack):
    from tests.integration.dask_pipelines import failing_dask_pipeline

    stack = dask_stack(**TINY)
    from zenml.client import Client

    with pytest.raises(Exception, match="fail_with_dask"):
        failing_dask_pipeline()
    run = Client().get_pipeline("failing_dask_pipeline").last_run
    assert "fails on purpose" in zenml_env.step_error(run.steps["fail_with_dask"]).message
    frame = run.steps["make_frame"].outputs["frame"][0].load().compute()
    assert stack.feature_store.id not in live_engines()
    assert wait_until_gone(frame.pid.unique().tolist()) == []
    _no_workers_left()


def test_run_ends_with_no_cluster_when_a_failure_blocks_the_consumer(dask_stack):
    """Continue-on-failure: the step consuming make_frame's output never runs, because an
    earlier step failed, so the run is over once make_frame has ended."""
    from zenml.client import Client

    from tests.integration.dask_pipelines import blocked_consumer_pipeline

    stack = dask_stack(**TINY)
    with pytest.raises(Exception, match="fail_without_dask"):
        blocked_consumer_pipeline()
    steps = Client().get_pipeline("blocked_consumer_pipeline").last_run.steps
    assert steps["fail_without_dask"].end_time <= steps["make_frame"].start_time  # the failure came first
    assert steps["make_frame"].status.value == "completed"
    assert "count_rows" not in steps or steps["count_rows"].status.value != "completed"
    assert stack.feature_store.id not in live_engines()
    _no_workers_left()


class _Records(logging.Handler):
    """Keeps the records of a logger (and of its children) in a list."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_steps_reusing_an_owned_cluster_log_no_connection_noise(dask_stack):
    """Before each reuse the engine asks whether its scheduler still answers. The owned
    scheduler runs in this process and logs to its output, so that question must not log:
    a bare TCP probe made it log "Connection from ... closed before handshake completed"
    at every step after the first."""
    from tests.integration.dask_pipelines import client_step_chain

    dask_stack(**TINY)
    handler = _Records()
    dask_logger = logging.getLogger("distributed")  # does not propagate to the root logger
    dask_logger.addHandler(handler)
    try:
        run = client_step_chain(steps=5)
    finally:
        dask_logger.removeHandler(handler)
    # One engine served the five steps: four reuses, each after the liveness check.
    facts = [zenml_env.step_metadata(run, f"step_{i}") for i in range(5)]
    assert [f["engine_starts_in_process"] for f in facts] == [1] * 5
    assert len({f["client_id"] for f in facts}) == 1
    assert any("Scheduler" in r.getMessage() for r in handler.records), "no Dask log records captured"
    noise = [r.getMessage() for r in handler.records if "closed before handshake" in r.getMessage()]
    assert noise == []
    _no_workers_left()


@pytest.mark.slow
def test_sigterm_stops_the_owned_cluster(dask_stack, tmp_path):
    dask_stack(**TINY)  # active in the session's ZenML config, which the subprocess inherits
    marker = tmp_path / "started.json"
    log = tmp_path / "pipeline.log"
    pipeline = "tests.integration.dask_pipelines:sleeping_dask_pipeline"
    with zenml_env.pipeline_until_marker(pipeline, marker, log) as proc:
        started = json.loads(marker.read_text())
        assert started["driver"] == proc.pid and started["workers"]
        workers = started["workers"]
        assert all(w != proc.pid for w in workers)
        assert wait_until_gone(workers, timeout=0.5) == workers  # alive before the signal

        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=40)
        assert proc.returncode != 0
        assert wait_until_gone(workers, timeout=15) == []
        # Our SIGTERM handler closed the cluster (Dask's nannies would also take their
        # workers down with a dying parent, but not gracefully).
        output = log.read_text()
        assert "Stopped the dask engine" in output and "(shutdown)" in output, output[-3000:]


@pytest.mark.slow
def test_attached_cluster_runs_the_work_and_survives(dask_stack, dask_cluster):
    from distributed import Client as DaskClient

    from tests.integration.dask_pipelines import frame_pipeline

    before = set(dask_cluster.clients_ever_connected())
    stack = dask_stack(scheduler_address=dask_cluster.address, startup_timeout_s=30)
    run = frame_pipeline(n=80)

    summary = run.steps["summarize"].outputs["summary"][0].load()
    assert summary["sums"] == _expected_sums(80)
    worker_tree = dask_cluster.worker_tree_pids()
    assert summary["task_pid"] in worker_tree  # the fixture's worker ran the tasks...
    assert set(summary["writer_pids"]) <= worker_tree  # ...and wrote the artifact
    assert summary["scheduler"] == dask_cluster.address

    facts = [zenml_env.step_metadata(run, name) for name in ("make_frame", "summarize")]
    for fact in facts:
        assert fact["mode"] == "attached" and fact["address"] == dask_cluster.address
        assert fact["engine_starts_in_process"] == 1
        assert (fact["n_workers"], fact["threads_per_worker"]) == (1, 1)
        assert fact["worker_resources_total"] == {"slot": 1}
        assert "cluster" not in fact
    # One Client for the whole run, shared by both steps (never one per step or task).
    new_clients = [c for c in dask_cluster.clients_ever_connected() if c not in before]
    assert new_clients == [summary["client_id"]] == [facts[0]["client_id"]]

    # After the run: our client is gone, the cluster is alive and usable.
    assert stack.feature_store.id not in live_engines()
    deadline = time.time() + 10
    while dask_cluster.connected_clients() and time.time() < deadline:
        time.sleep(0.2)
    assert dask_cluster.connected_clients() == []
    assert dask_cluster.alive() and dask_cluster.worker_count() == 1
    with dask_cluster.checker() as checker:
        assert checker.submit(sum, [1, 2, 3]).result() == 6
    with pytest.raises(ValueError):
        DaskClient.current()  # no client of ours left as the process default
    _no_workers_left()


@pytest.mark.slow
def test_user_client_is_adopted_and_never_closed(dask_stack, dask_cluster):
    from distributed import Client as DaskClient

    from tests.integration.dask_pipelines import two_client_steps

    stack = dask_stack(**IN_PROCESS)  # owned config, but a user client exists: adopt it
    user = DaskClient(dask_cluster.address, timeout="20s")
    try:
        run = two_client_steps()
        facts = [run.steps[name].outputs["facts"][0].load() for name in ("first", "second")]
        assert facts[0]["client_id"] == facts[1]["client_id"] == user.id
        assert facts[0]["same_client_twice"]
        metadata = zenml_env.step_metadata(run, "first")
        assert metadata["mode"] == "adopted" and metadata["address"] == dask_cluster.address
        assert stack.feature_store.id not in live_engines()
        assert user.status == "running" and DaskClient.current() is user
        assert user.id in dask_cluster.connected_clients()
        assert user.submit(sum, [1, 1]).result() == 2
        assert leftover_workers() == []  # no LocalCluster was started
    finally:
        user.close()


def test_unreachable_scheduler_fails_within_the_startup_timeout(dask_stack):
    from distributed import Client as DaskClient

    from tests.integration.dask_pipelines import two_client_steps

    timeout = 3.0
    # Nothing listens: refused at once.
    refused = f"tcp://127.0.0.1:{free_port()}"
    dask_stack(scheduler_address=refused, startup_timeout_s=timeout)
    started = time.time()
    with pytest.raises(EngineError, match=refused):
        compute_engine("dask").session()
    assert time.time() - started < timeout + 2

    # A socket that accepts connections but never speaks Dask's protocol: only the timeout ends it.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    try:
        address = f"tcp://127.0.0.1:{silent.getsockname()[1]}"
        stack = dask_stack(scheduler_address=address, startup_timeout_s=timeout)
        started = time.time()
        with pytest.raises(EngineError, match=f"{address}.*no Dask handshake"):
            compute_engine("dask").session()
        assert time.time() - started < timeout + 2
        assert stack.feature_store.id not in live_engines()
    finally:
        silent.close()
    with pytest.raises(ValueError):
        DaskClient.current()  # the abandoned connection left no client behind

    # In a pipeline, the step fails with the same message.
    from zenml.client import Client

    dask_stack(scheduler_address=refused, startup_timeout_s=timeout)
    with pytest.raises(Exception, match="first"):
        two_client_steps()
    failed = zenml_env.step_error(Client().get_pipeline("two_client_steps").last_run.steps["first"])
    assert "EngineError" in failed.traceback and refused in failed.message


def test_step_settings_apply_to_their_step_only(dask_stack):
    from tests.integration.dask_pipelines import missing_resource_pipeline, settings_dask_pipeline

    dask_stack(**{**IN_PROCESS, "threads_per_worker": 2, "worker_resources": {"slot": 2}})
    run = settings_dask_pipeline()
    with_settings = run.steps["probe_with_settings"].outputs["with_settings"][0].load()
    assert with_settings["submit"]["held"] == {"slot": 1}
    assert with_settings["submit"]["available"] == {"slot": 1}  # 2 offered, 1 held by this task
    assert with_settings["submit"]["annotations"] == {"priority": 7, "retries": 2}
    assert with_settings["compute_held"] == [1.0]  # DataFrame tasks hold the resource too
    assert with_settings["retries_on_scheduler"] == 2
    without = run.steps["probe_without_settings"].outputs["without_settings"][0].load()
    assert without["submit"] == {"available": {"slot": 2}, "held": {}, "annotations": {}}

    # A resource no worker offers fails the step clearly instead of queueing forever.
    from zenml.client import Client

    with pytest.raises(Exception, match="wants_missing_resource"):
        missing_resource_pipeline()
    failed = zenml_env.step_error(Client().get_pipeline("missing_resource_pipeline").last_run.steps["wants_missing_resource"])
    assert "'gpu': 1" in failed.message and "worker_resources" in failed.message


# ---- a user's script -------------------------------------------------------------------

SCRIPT = '''
import dask.dataframe as dd
import pandas as pd
from zenml import pipeline, step
from zenml_compute_engines import dask_client


@step
def total(n: int) -> int:
    frame = dd.from_pandas(pd.DataFrame({"x": range(n)}), npartitions=2)
    return int(dask_client().compute(frame.x.sum()).result())


@pipeline(enable_cache=False)
def script_pipeline(n: int = 10) -> None:
    total(n)


'''


@pytest.mark.parametrize("guarded", [False, True], ids=["unguarded", "guarded"])
def test_a_script_calling_the_pipeline_at_module_level_fails_once_naming_the_guard(zen, tmp_path, guarded):
    """Dask's worker processes import the user's script again (spawn); an unguarded
    pipeline call there would start a run in each. Refused before any worker starts."""
    from zenml.client import Client

    call = 'if __name__ == "__main__":\n    script_pipeline()\n' if guarded else "script_pipeline()\n"
    (tmp_path / "run.py").write_text(SCRIPT + call)
    stack = zenml_env.register_engine_stack("dask", {"n_workers": 1, "threads_per_worker": 1, "memory_limit": "1GiB"})
    env = {**os.environ, "ZENML_ACTIVE_STACK_ID": str(stack.id), "ZENML_CUSTOM_SOURCE_ROOT": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "run.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    output = done.stdout + done.stderr
    runs = Client().list_pipeline_runs(stack_id=stack.id, size=10).items
    assert len(runs) == 1, [run.name for run in runs]  # no run begun by a re-imported script
    if guarded:
        assert done.returncode == 0, output[-3000:]
    else:
        assert done.returncode != 0
        # As the user reads it: ZenML 0.90 colours a `quoted` part of a log line instead of the backticks.
        plain = re.sub(r"\x1b\[[0-9;]*m", "", output).replace("`", "")
        fix = "run.py, line 19, runs the pipeline when the script is imported"
        assert fix in plain and 'Wrap the pipeline call in if __name__ == "__main__":' in plain, output[-3000:]
        assert "Nanny failed to start" not in output
    assert leftover_workers() == []
