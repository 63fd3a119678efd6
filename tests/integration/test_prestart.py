"""Warm start (flavors/prestart.py): under the local orchestrator an engine the run will use
begins its start while ZenML prepares the run; the first step that asks waits only for
what is left. Checked on real engines: what starts, when it stops, what the metadata says.
"""

from __future__ import annotations

import logging
import time

import pytest

from zenml_compute_engines.flavors import prestart
from zenml_compute_engines.flavors.engine import live_engines
from tests.support import zenml_env
from tests.support.dask_cluster import leftover_workers
from tests.support.ports import free_port

# Worker processes of their own, so that what was started and stopped can be counted.
DASK = {"n_workers": 1, "threads_per_worker": 1, "memory_limit": "1GiB", "startup_timeout_s": 60, "prestart": "auto"}
SPARK = {"master": "local[2]", "ui_enabled": False, "prestart": "auto"}


@pytest.fixture
def stack(zen):
    """Activate a stack with an engine of the given flavor and config."""
    yield zenml_env.activate_engine_stack
    zenml_env.teardown_engines()


@pytest.fixture
def prestart_log(caplog):
    caplog.set_level(logging.INFO, logger="zenml_compute_engines")
    return lambda: [r.getMessage() for r in caplog.records if "while ZenML prepares the run" in r.getMessage()]


def test_a_spark_run_begins_its_engine_before_its_first_step(stack, prestart_log):
    from tests.integration.prestart_pipelines import spark_typed_pipeline

    stack("spark", SPARK)
    run = spark_typed_pipeline()
    first, second = (zenml_env.step_metadata(run, name) for name in ("spark_frame", "spark_count"))
    assert first["prestarted"] is True and "pyspark.sql" in first["prestart_reason"], first
    # The step waited for only part of the start: the rest overlapped ZenML's own work.
    assert 0 <= first["prestart_waited_s"] < first["prestart_start_s"], first
    assert second["prestarted"] is True and second["prestart_waited_s"] == 0.0
    assert first["engine_starts_in_process"] == second["engine_starts_in_process"]  # one engine
    assert len(prestart_log()) == 1
    assert live_engines() == {} and zenml_env.java_children(settle_s=10) == []


@pytest.mark.slow  # records a class archive of its own: a start and a stop about 25 s longer
def test_the_first_run_with_default_options_records_the_class_archive_and_the_next_maps_it(zen, tmp_path):
    """A user's plain script on a stack with a default Spark component: the warm start
    launches the driver JVM through the component object ZenML built while preparing the
    run, and the step's component object stops it. The recording must survive that."""
    import json
    import os
    import subprocess
    import sys

    from zenml.client import Client

    stack_id = zenml_env.register_engine_stack("spark", {}).id
    env = {**os.environ, "ZENML_ENGINES_CACHE_DIR": str(tmp_path), "ZENML_ACTIVE_STACK_ID": str(stack_id)}
    states = []
    for attempt in ("first", "second"):
        done = subprocess.run(
            [sys.executable, "-m", "tests.integration.prestart_pipelines", "spark_typed_pipeline"],
            cwd=zenml_env.ROOT_DIR, env=env, capture_output=True, text=True, timeout=300,
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        run_id = next(line.split()[1] for line in done.stdout.splitlines() if line.startswith("RUN_ID "))
        facts = zenml_env.step_metadata(Client().get_pipeline_run(run_id), "spark_frame")
        assert facts["prestarted"] is True, json.dumps(facts)
        states.append(facts["jvm_class_cache"])
        if attempt == "first":
            # Whole and in place: the recording JVM exited cleanly; no claim or part file left.
            files = sorted(path.name for path in (tmp_path / "spark-jvm").iterdir())
            assert len(files) == 1 and files[0].endswith(".jsa"), files
    assert states == ["recording", "used"]
    assert zenml_env.java_children(settle_s=10) == []


def test_the_last_run_of_a_pipeline_tells_which_engines_the_next_will_use(stack, prestart_log):
    from tests.integration.prestart_pipelines import untyped_dask_pipeline

    stack("dask", DASK)
    before = untyped_dask_pipeline()
    assert zenml_env.step_metadata(before, "dask_sum")["prestarted"] is False  # nothing said it would
    after = untyped_dask_pipeline()
    facts = zenml_env.step_metadata(after, "dask_sum")
    assert facts["prestarted"] is True, facts
    assert f"of the last run, {before.name}, used it" in facts["prestart_reason"]
    assert after.steps["dask_sum"].outputs["output"][0].load() == sum(range(10))
    assert live_engines() == {} and leftover_workers() == []


def test_a_run_that_loads_the_stack_begins_the_engine_before_it_compiles(stack, prestart_log, caplog):
    from zenml.client import Client

    from tests.integration.prestart_pipelines import spark_typed_pipeline

    # Activated but not loaded: the pipeline call loads the stack, as in a fresh process.
    Client().activate_stack(zenml_env.register_engine_stack("spark", SPARK).id)
    misspelled = spark_typed_pipeline.with_options(settings={"feature_store": {"not_a_setting": 1}})
    with pytest.raises(Exception, match="not_a_setting"):
        misspelled()  # fails to compile, after the stack was loaded
    assert len(prestart_log()) == 1, prestart_log()
    # No step will take it: once up, it is stopped, and nothing is left behind. (Up may take
    # more than a minute on a loaded 2-core machine: wait past the start's own 120 s timeout.)
    assert _said_within(caplog, "no step of its run used it", 150)
    assert live_engines() == {} and zenml_env.java_children(settle_s=10) == []


def _said_within(caplog, text: str, seconds: float) -> bool:
    """Whether a log record says `text` within `seconds`; if not, the pending warm starts
    and where their threads are (once seen on ZenML 0.90 under load) go to stderr, which
    the failure report shows."""
    deadline = time.time() + seconds
    while not any(text in record.getMessage() for record in caplog.records):
        if time.time() >= deadline:
            _print_prestart_threads()
            return False
        time.sleep(0.25)
    return True


def _print_prestart_threads() -> None:
    import sys
    import threading
    import traceback

    frames = sys._current_frames()
    print(f"pending warm starts: {[(p, p.error) for p in prestart._PENDING.values()]}", file=sys.stderr)
    for thread in threading.enumerate():
        if thread.name.endswith("-prestart") and thread.ident in frames:
            print(f"thread {thread.name}:\n{''.join(traceback.format_stack(frames[thread.ident]))}", file=sys.stderr)


def test_an_engine_free_pipeline_starts_nothing_unless_prestart_is_always(stack, prestart_log):
    from tests.integration.prestart_pipelines import engine_free_only_pipeline

    stack("dask", DASK)
    engine_free_only_pipeline()
    assert prestart_log() == [] and leftover_workers() == []

    stack("dask", {**DASK, "prestart": "always"})
    run = engine_free_only_pipeline()
    began = prestart_log()
    assert len(began) == 1 and "prestart=always" in began[0], began
    # Begun for the run, used by no step: stopped before the run's call returned.
    assert zenml_env.step_metadata(run, "no_engine") == {}
    assert prestart.pending(_active_engine()) is None
    assert live_engines() == {} and leftover_workers() == []


def _active_engine():
    from zenml.client import Client

    return Client().active_stack.feature_store


def test_dask_begins_by_default_and_never_leaves_the_start_to_the_first_step(stack, prestart_log):
    from tests.integration.prestart_pipelines import engine_free_then_dask_pipeline

    stack("dask", {k: v for k, v in DASK.items() if k != "prestart"})  # Dask's default: auto
    run = engine_free_then_dask_pipeline()
    facts = zenml_env.step_metadata(run, "dask_frame")
    assert facts["prestarted"] is True and "dask.dataframe" in facts["prestart_reason"], facts
    assert len(prestart_log()) == 1

    stack("dask", {**DASK, "prestart": "never"})
    run = engine_free_then_dask_pipeline()
    assert zenml_env.step_metadata(run, "dask_frame")["prestarted"] is False
    assert len(prestart_log()) == 1  # no second warm start
    assert live_engines() == {} and leftover_workers() == []


def test_a_prestarted_dask_cluster_warms_its_workers_up(stack):
    from tests.integration.prestart_pipelines import dask_warm_up_pipeline

    stack("dask", {**DASK, "prestart": "always"})
    run = dask_warm_up_pipeline()
    assert zenml_env.step_metadata(run, "dask_worker_imported_dataframes")["prestarted"] is True
    assert run.steps["dask_worker_imported_dataframes"].outputs["output"][0].load() is True
    assert live_engines() == {} and leftover_workers() == []


def test_a_failed_prestart_is_reported_by_the_step_that_asks_for_the_engine(stack):
    from tests.integration.prestart_pipelines import engine_free_then_dask_pipeline

    address = f"tcp://127.0.0.1:{free_port()}"  # nothing listens there
    stack("dask", {"scheduler_address": address, "startup_timeout_s": 5, "prestart": "auto"})
    with pytest.raises(RuntimeError):
        engine_free_then_dask_pipeline()
    from zenml.client import Client

    run = Client().list_pipeline_runs(sort_by="desc:created", size=1).items[0]
    assert str(run.steps["no_engine"].status) == "completed"  # the unrelated step is untouched
    error = zenml_env.step_error(run.steps["dask_frame"])
    assert error is not None and "Could not connect to the dask engine" in error.message and address in error.message


def test_steps_that_run_elsewhere_never_prestart_in_the_submitting_process(stack, prestart_log):
    from tests.integration.prestart_pipelines import engine_free_then_dask_pipeline

    stack("dask", {**DASK, "prestart": "always"}, orchestrator=zenml_env.process_per_step_orchestrator())
    run = engine_free_then_dask_pipeline()
    assert prestart_log() == []
    assert zenml_env.step_metadata(run, "dask_frame")["prestarted"] is False  # its own process started it
    assert live_engines() == {}


@pytest.mark.slow
def test_an_engine_begun_for_a_run_served_from_the_cache_is_stopped(stack, prestart_log, caplog):
    from tests.integration.prestart_pipelines import cached_spark_pipeline

    stack("spark", SPARK)
    n = free_port()  # a value no earlier run used, so that the first run executes
    cached_spark_pipeline(n=n)
    assert zenml_env.java_children(settle_s=10) == []
    cached_spark_pipeline(n=n)  # every step cached: no step hook runs
    assert len(prestart_log()) == 2
    # The start began, no step took it, and the pipeline call returned: once up, it is stopped.
    assert _said_within(caplog, "no step of its run used it", 60)
    assert zenml_env.java_children(settle_s=10) == []
