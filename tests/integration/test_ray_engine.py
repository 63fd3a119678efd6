"""The Ray engine against real Ray processes on 127.0.0.1: owned, attached, adopted, failures.

Every test asserts on processes: an owned Ray leaves no raylet/gcs_server/worker behind, an
attached cluster (`ray start --head`, the `ray_cluster` fixture) stays alive and usable.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from zenml_compute_engines import compute_engine
from tests.support import zenml_env
from tests.support.ports import free_port
from tests.support.zenml_env import describe
from tests.support.ray_cluster import (
    LOOPBACK_ENV,
    RAY_DAEMONS,
    ray_processes,
    use_test_auth_mode,
    wait_gone,
)

use_test_auth_mode()  # before `import ray`: see tests/support/ray_cluster.py

import ray  # noqa: E402
import ray.data  # noqa: E402  (registers our materializer for ray.data.Dataset)

from tests.integration import ray_pipelines as rp  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SMALL = {"num_cpus": 1, "object_store_memory": 100 * 1024 * 1024, "startup_timeout_s": 60}


@pytest.fixture
def ray_stack(zen):
    """Activate a stack whose feature_store is a Ray engine with `config`; tears engines down after."""

    def make(**config):
        return zenml_env.activate_engine_stack("ray", config)

    yield make
    zenml_env.teardown_engines()
    if ray.is_initialized():  # a test failed half-way: never leak a driver into the next test
        ray.shutdown()


@pytest.fixture
def init_calls(monkeypatch):
    """Every `ray.init` call in this process, by the address it was called with."""
    calls = []
    real_init = ray.init

    def counting_init(*args, **kwargs):
        calls.append(kwargs.get("address", args[0] if args else None))
        return real_init(*args, **kwargs)

    monkeypatch.setattr(ray, "init", counting_init)
    return calls


def assert_no_ray_left(timeout: float = 15.0) -> None:
    left = wait_gone(ray_processes(), timeout=timeout)
    assert not left, f"Ray processes left behind: {describe(left)}"


def engine_metadata(run, step):
    return zenml_env.step_metadata(run, step)


def last_run(pipeline_name: str):
    from zenml.client import Client

    return Client().get_pipeline(pipeline_name).last_run


# ---- owned --------------------------------------------------------------------------


def test_owned_engine_one_init_per_run_dataset_artifacts_and_teardown(ray_stack, init_calls):
    ray_stack(**SMALL, prestart="auto")
    rp.dataset_pipeline(n=1000)
    run = last_run("dataset_pipeline")
    assert run.status == "completed"

    summary = run.steps["summarize"].outputs["output"][0].load()
    assert summary["rows"] == 1000
    assert summary["total_v"] == 2 * sum(range(1000))
    assert summary["keys"] == [0, 1, 2]
    assert summary["same_runtime"] is True
    assert run.steps["assigned_cpus"].output.load() == 0.5  # RayEngineSettings.remote_args

    # One ray.init for the whole run (4 steps, two of them calling the accessor twice or
    # loading inputs), bound to loopback.
    assert init_calls == ["local"]
    steps = ["make_dataset", "double", "summarize", "assigned_cpus"]
    metas = [engine_metadata(run, s) for s in steps]
    for step, meta in zip(steps, metas):
        assert meta["engine"] == "ray", step
        assert meta["mode"] == "owned", step
        assert meta["engine_starts_in_process"] == 1, step
        assert meta["address"].startswith("127.0.0.1:"), meta["address"]
    assert len({m["ray_session"] for m in metas}) == 1
    assert len({m["job_id"] for m in metas}) == 1
    # Ray began while ZenML prepared the run (the steps pass Ray Datasets); the first step
    # waited only for what was left of it.
    meta = metas[0]
    assert meta["prestarted"] is True and "ray.data" in meta["prestart_reason"]
    assert meta["prestart_waited_s"] < meta["prestart_start_s"]
    assert meta["ray_version"] == ray.__version__
    assert meta["node_count"] == 1
    assert meta["cluster_resources"]["CPU"] == 1.0
    assert meta["cluster_resources"]["object_store_memory_bytes"] == 100 * 1024 * 1024
    assert summary["address"] == meta["address"]

    # Dataset artifacts are in the shared format: Ray's part files plus the manifest.
    from zenml_compute_engines.materializers import dataset

    artifact = run.steps["double"].outputs["output"][0]
    manifest = dataset.read_manifest(_store(), artifact.uri)
    assert manifest.engine == "ray" and manifest.num_rows == 1000
    assert len(manifest.files) >= 1
    assert {c["name"] for c in manifest.schema} == {"id", "k", "v"}
    assert all(f.path.startswith("part_") and f.path.endswith(".parquet") for f in manifest.files)
    assert artifact.run_metadata["num_rows"] == 1000
    assert artifact.visualizations, "no HTML visualization"

    assert not ray.is_initialized()
    assert_no_ray_left()


def _store():
    from zenml.client import Client

    return Client().active_stack.artifact_store


def test_materializer_contract_and_materialized_datasets(ray_stack):
    """ZenML's materializer checks on fresh instances; a `MaterializedDataset` (what
    `from_items` and `.materialize()` return) loads back as one."""
    from ray.data.dataset import MaterializedDataset

    from zenml_compute_engines.materializers.ray_dataset import RayDatasetMaterializer
    from tests.support.contract import check_materializer_contract

    ray_stack(**SMALL)
    compute_engine("ray").session()  # our engine, not Ray's auto-init (which we would adopt)
    data = ray.data.from_items([{"a": i, "b": str(i)} for i in range(5)])
    assert isinstance(data, MaterializedDataset)
    loaded, opened = check_materializer_contract(RayDatasetMaterializer, data, MaterializedDataset, _store())
    assert sorted(r["a"] for r in loaded.take_all()) == list(range(5))
    assert all(path.endswith("_manifest.json") for path in opened), opened  # Ray's workers read the parts
    zenml_env.teardown_engines()
    assert not ray.is_initialized()
    assert_no_ray_left()


def test_dataset_artifact_loads_outside_a_step(ray_stack):
    ray_stack(**SMALL)
    rp.small_dataset_pipeline(n=100)
    artifact = last_run("small_dataset_pipeline").steps["make_dataset"].outputs["output"][0]
    # Loading starts the active stack's engine outside a step (reuse until teardown).
    ds = artifact.load()
    assert isinstance(ds, ray.data.Dataset)
    assert sorted(r["id"] for r in ds.take_all()) == list(range(100))
    zenml_env.teardown_engines()
    assert not ray.is_initialized()
    assert_no_ray_left()


@pytest.mark.slow
def test_per_step_runtime_env_restarts_an_owned_engine(ray_stack, init_calls):
    ray_stack(**SMALL)
    rp.runtime_env_pipeline()
    run = last_run("runtime_env_pipeline")
    assert run.steps["before"].output.load() == "<unset>"
    assert run.steps["env_in_task_with_setting"].output.load() == "from-settings"
    assert init_calls == ["local", "local"]
    before, after = engine_metadata(run, "before"), engine_metadata(run, "env_in_task_with_setting")
    assert before["ray_session"] != after["ray_session"]
    assert after["runtime_env_fields"] == ["env_vars"]
    assert "from-settings" not in str(after)  # runtime_env values may be secrets
    assert_no_ray_left()


COMPONENT_ENV = {"env_vars": {"ZEN_RAY_COMPONENT_ENV": "from-component"}}


def test_a_components_runtime_env_holds_for_every_step_of_one_ray(ray_stack, init_calls):
    ray_stack(**SMALL, runtime_env=COMPONENT_ENV)
    rp.component_env_pipeline()
    run = last_run("component_env_pipeline")
    assert [run.steps[s].output.load() for s in ("first", "second")] == ["from-component"] * 2
    assert init_calls == ["local"]  # the second step asks for the runtime_env Ray runs with
    assert_no_ray_left()


def test_failing_step_shuts_the_owned_engine_down(ray_stack):
    ray_stack(**SMALL)
    with pytest.raises(RuntimeError, match="fail_with_ray"):
        rp.failing_pipeline()
    run = last_run("failing_pipeline")
    assert run.status == "failed"
    assert engine_metadata(run, "fail_with_ray")["mode"] == "owned"
    assert not ray.is_initialized()
    assert_no_ray_left()


def test_an_owned_rays_session_folder_goes_with_it(ray_stack, tmp_path):
    """Ray keeps a session folder per `ray.init` in its temp dir (~0.6 MB, ~120 files): a
    process that runs pipelines in a loop would pile up one per run. Only ours goes."""
    ray_stack(**SMALL)
    rp.session_folder_pipeline()
    folder = Path(last_run("session_folder_pipeline").steps["session_folder"].output.load())
    assert folder.name.startswith("session_")
    assert not folder.exists(), sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))[:20]
    latest = folder.parent / "session_latest"
    assert not (latest.is_symlink() and os.path.realpath(latest) == str(folder))
    assert_no_ray_left()


def test_a_process_starting_ray_again_is_told_about_reuse_process_once(ray_stack, monkeypatch, caplog):
    """Every ray.init/ray.shutdown leaves a native thread and some memory in the process
    (Ray's own): a process that runs pipelines one after another hears of the remedy."""
    from zenml_compute_engines.flavors.ray import engine as ray_engine

    monkeypatch.setattr(ray_engine, "_owned_starts", 0, raising=False)  # as in a fresh process
    ray_stack(**SMALL)
    for _ in range(3):
        rp.session_folder_pipeline()
    hints = [r for r in caplog.records if "reuse: process" in r.getMessage()]
    assert len(hints) == 1, [r.getMessage() for r in hints]
    assert "started its own Ray a second time" in hints[0].getMessage()
    assert_no_ray_left()


def test_an_owned_ray_counts_as_gone_once_its_gcs_died(ray_stack):
    """Between steps the engine asks whether its Ray still runs (a step on a dead one would
    end the process); for an owned Ray it asks the daemons it started, not the network."""
    from zenml_compute_engines.flavors.engine import live_engines

    ray_stack(**SMALL)
    engine = compute_engine("ray")
    engine.session()
    live = live_engines()[engine.id]
    assert engine._is_alive(live)
    gcs = zenml_env.named(ray_processes(), "gcs_server")
    assert len(gcs) == 1, describe(ray_processes())
    gcs[0].kill()
    deadline = time.monotonic() + 10  # a killed multi-threaded daemon takes a moment to exit
    while engine._is_alive(live):
        assert time.monotonic() < deadline, f"still counted alive after its GCS was killed: {describe(gcs)}"
        time.sleep(0.1)
    engine._close(live, reason="it no longer answered", bounded=True)  # what the step would do
    assert not ray.is_initialized()
    assert_no_ray_left()


def test_a_ray_whose_stop_gave_up_stays_ours_and_is_never_adopted(ray_stack, monkeypatch):
    """A stop of ours that gives up at its bound leaves `ray.shutdown()` running, and Ray
    still initialized meanwhile; the next start must not take that Ray for one the user
    initialized (its handle may be dead), but wait for the stop and start a Ray of its own."""
    from zenml_compute_engines.flavors import engine as core
    from zenml_compute_engines.flavors.engine import live_engines
    from zenml_compute_engines.flavors.ray.engine import RayEngine

    ray_stack(**SMALL)
    engine = compute_engine("ray")
    engine.session()
    live = live_engines()[engine.id]
    real_stop = RayEngine._stop

    def slow_stop(self, handle, owned):
        time.sleep(3)  # a stop slower than its bound, as after the cluster went away
        real_stop(self, handle, owned)

    monkeypatch.setattr(RayEngine, "_stop", slow_stop)
    monkeypatch.setattr(core, "_BOUNDED_STOP_S", 0.5)
    engine._close(live, reason="it no longer answered", bounded=True)  # what the step would do
    assert ray.is_initialized(), "the stop was expected to still run"
    engine.session()
    again = live_engines()[engine.id]
    assert again.mode == "owned" and engine.start_count == 2
    assert ray.is_initialized()
    engine._close(again, reason="test over")
    assert_no_ray_left()


@pytest.mark.slow
def test_sigterm_during_a_step_leaves_no_ray_processes(ray_stack, tmp_path):
    ray_stack(**SMALL)
    marker = tmp_path / "step-started"
    log = tmp_path / "pipeline.log"
    with zenml_env.pipeline_until_marker("tests.integration.ray_pipelines:sleeping_pipeline", marker, log) as child:
        started = ray_processes(child.pid)
        names = {name for name in RAY_DAEMONS if zenml_env.named(started, name)}
        assert set(RAY_DAEMONS) <= names, f"expected raylet and gcs_server under the pipeline: {describe(started)}"
        child.send_signal(signal.SIGTERM)
        child.wait(timeout=60)
    left = wait_gone(started, timeout=20)
    assert not left, f"left after SIGTERM: {describe(left)}\n{log.read_text()[-3000:]}"
    assert "Stopped the ray engine" in log.read_text()


@pytest.mark.slow
def test_dashboard_url_is_recorded_and_served(ray_stack):
    ray_stack(**SMALL, include_dashboard=True)
    rp.dashboard_pipeline()
    run = last_run("dashboard_pipeline")
    result = run.steps["dashboard_status"].output.load()
    assert result["status"] == 200, result  # the dashboard answered during the step
    assert result["url"].startswith("http://127.0.0.1:")
    assert engine_metadata(run, "dashboard_status")["dashboard_url"] == result["url"]
    assert_no_ray_left()
    host, port = result["url"].removeprefix("http://").split(":")
    with pytest.raises(OSError):  # and is gone with the engine
        socket.create_connection((host, int(port)), timeout=2).close()


def test_engine_free_steps_do_not_start_ray(ray_stack, init_calls):
    ray_stack(**SMALL)
    rp.engine_free_pipeline()
    run = last_run("engine_free_pipeline")
    assert run.steps["engine_free"].output.load() == 2
    assert init_calls == []
    assert engine_metadata(run, "engine_free") == {}


# ---- adopted ------------------------------------------------------------------------


def test_ray_initialized_by_the_user_is_adopted_and_never_shut_down(ray_stack, init_calls):
    from zenml_compute_engines.flavors.ray.engine import _loopback_node_ip

    with _loopback_node_ip(True):
        ray.init(address="local", num_cpus=1, object_store_memory=100 * 1024 * 1024, include_dashboard=False)
    try:
        session = ray._private.worker.global_worker.node.session_name
        user_processes = ray_processes()
        ray_stack(**SMALL)
        rp.small_dataset_pipeline(n=100)
        run = last_run("small_dataset_pipeline")
        assert run.steps["summarize"].output.load()["rows"] == 100
        meta = engine_metadata(run, "summarize")
        assert meta["mode"] == "adopted"
        assert meta["ray_session"] == session
        assert init_calls == ["local"]  # only the user's own call
        zenml_env.teardown_engines()  # also at process exit: still not ours to stop
        assert ray.is_initialized()
        assert ray.get(ray.remote(lambda: 41).remote()) + 1 == 42
        assert not [p for p in user_processes if not p.is_running()]
        folder = Path(ray._private.worker.global_worker.node.get_session_dir_path())
    finally:
        ray.shutdown()
    assert_no_ray_left()
    assert (folder / "logs").is_dir()  # the user's Ray's session folder is theirs
    shutil.rmtree(folder, ignore_errors=True)


# ---- attached -----------------------------------------------------------------------


def _cluster_jobs(cluster):
    result = cluster.run_driver(
        "import json, ray\n"
        "ray.init(address=ADDRESS, log_to_driver=False)\n"
        "print('JOBS', json.dumps({j['JobID']: j['IsDead'] for j in ray._private.state.jobs()}))\n"
        "print('ANSWER', ray.get(ray.remote(lambda: 42).remote()))\n"
        "ray.shutdown()\n"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = {line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in result.stdout.splitlines() if " " in line}
    import json

    assert lines["ANSWER"] == "42"
    return json.loads(lines["JOBS"])


@pytest.mark.slow
def test_attached_cluster_stays_alive_and_our_driver_disconnects(ray_cluster, ray_stack, init_calls):
    daemons = ray_cluster.daemons()
    assert {name for name in RAY_DAEMONS if zenml_env.named(daemons, name)} == set(RAY_DAEMONS)
    ray_stack(address=ray_cluster.address, startup_timeout_s=60)
    rp.small_dataset_pipeline(n=200)
    run = last_run("small_dataset_pipeline")
    summary = run.steps["summarize"].output.load()
    assert summary["rows"] == 200 and summary["total_v"] == 2 * sum(range(200))
    meta = engine_metadata(run, "summarize")
    assert meta["mode"] == "attached"
    assert meta["address"] == ray_cluster.address
    assert meta["node_count"] == 1 and meta["cluster_resources"]["CPU"] == 1.0
    assert init_calls == [ray_cluster.address]

    # Our driver is gone (its job is dead on the cluster), the cluster is not.
    assert not ray.is_initialized()
    assert ray_cluster.process.poll() is None
    assert not [p for p in daemons if not p.is_running()], "a cluster daemon died"
    assert ray_cluster.status_ok()
    jobs = _cluster_jobs(ray_cluster)
    assert jobs[summary["job_id"]] is True, jobs
    assert not ray_processes(), "the attached run started Ray processes of its own"
    # The cluster's session folder (on this machine, where our driver joined it) is theirs.
    assert (Path(ray_cluster.temp_dir) / meta["ray_session"] / "logs").is_dir()


@pytest.mark.slow
def test_an_attached_cluster_runs_every_step_with_the_components_runtime_env(ray_cluster, ray_stack):
    ray_stack(address=ray_cluster.address, startup_timeout_s=60, runtime_env=COMPONENT_ENV)
    rp.component_env_pipeline()
    run = last_run("component_env_pipeline")
    assert [run.steps[s].output.load() for s in ("first", "second")] == ["from-component"] * 2


@pytest.mark.slow
def test_attached_cluster_refuses_a_differing_runtime_env(ray_cluster, ray_stack):
    ray_stack(address=ray_cluster.address, startup_timeout_s=60)
    with pytest.raises(RuntimeError, match="env_in_task_with_setting"):
        rp.runtime_env_pipeline()  # first step connects without, second asks for a runtime_env
    run = last_run("runtime_env_pipeline")
    assert run.steps["before"].output.load() == "<unset>"
    failure = zenml_env.step_error(run.steps["env_in_task_with_setting"])
    assert "runtime_env differs" in failure.message and ray_cluster.address in failure.message
    assert "EngineError" in failure.traceback
    assert not ray.is_initialized()
    assert ray_cluster.status_ok()


@pytest.mark.slow
def test_ray_client_address_runs_tasks_and_dataset_artifacts(ray_cluster, ray_stack):
    # The default startup_timeout_s leaves room for the engine to connect again when the
    # server fails to spawn our session, which takes Ray ~40 s to report (see the engine).
    ray_stack(address=ray_cluster.client_address)
    # The Dataset artifacts are written and read by tasks on the cluster (Ray Data cannot
    # execute on a Ray Client driver); step code does the same (summarize_in_task).
    rp.client_dataset_pipeline(n=50)
    run = last_run("client_dataset_pipeline")
    summary = run.steps["summarize_in_task"].output.load()
    assert summary["rows"] == 50 and summary["total_v"] == 2 * sum(range(50))
    meta = engine_metadata(run, "make_dataset")
    assert meta["mode"] == "attached" and meta["client_mode"] is True
    assert meta["address"] == ray_cluster.client_address
    assert meta["cluster_resources"]["CPU"] == 1.0
    assert not ray.is_initialized()
    assert ray_cluster.status_ok()
    assert not ray_processes(), "the attached run started Ray processes of its own"


# ---- unreachable heads ----------------------------------------------------------------


def _session_error() -> tuple:
    """(seconds until compute_engine("ray").session() raised EngineError, its message)."""
    from zenml_compute_engines import EngineError, compute_engine

    started = time.monotonic()
    with pytest.raises(EngineError) as error:
        compute_engine("ray").session()
    return time.monotonic() - started, str(error.value)


def test_unreachable_head_fails_fast_naming_the_address(ray_stack):
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    ray_stack(address=address, startup_timeout_s=3)
    elapsed, message = _session_error()
    assert elapsed < 3 + 2, elapsed
    assert address in message and "unreachable" in message
    assert not ray.is_initialized()


def test_silent_port_fails_within_startup_timeout(ray_stack):
    # Accepts TCP but never speaks gRPC: a bare ray.init hangs forever on this.
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted = []
    stop = threading.Event()

    def accept():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    address = f"127.0.0.1:{server.getsockname()[1]}"
    try:
        ray_stack(address=f"ray://{address}", startup_timeout_s=3)
        elapsed, message = _session_error()
        assert elapsed < 3 + 2, elapsed
        assert address in message
        assert accepted, "the probe never reached the server"
        assert not ray.is_initialized()
    finally:
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()
        server.close()


# ---- import hygiene -------------------------------------------------------------------


def test_importing_flavors_imports_no_ray():
    code = (
        "import sys\n"
        "from zenml_compute_engines import RayEngineConfig, RayEngineFlavor, RayEngineSettings, ray_runtime\n"
        "RayEngineFlavor().config_class(address='127.0.0.1:6379')\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('ray', 'pyspark', 'dask'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, env={**os.environ, **LOOPBACK_ENV})
