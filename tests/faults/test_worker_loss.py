"""A worker or executor killed while a step's tasks run on it.

What must hold: the step succeeds through the engine's own retry (Dask reschedules a lost
worker's tasks on the worker its nanny restarts, Ray retries a task whose worker process
died, Spark relaunches a lost executor and retries its tasks), with the right result; the
owned engine is torn down after the run and an attached cluster stays up.
"""

from __future__ import annotations

import time

import psutil
import pytest

from tests.support.dask_cluster import is_dask_worker_process
from tests.support import zenml_env
from tests.support.zenml_env import descendants

EXPECTED = sum(i * i for i in range(4))
# What each engine logs when it notices the loss (proof the kill hit the running work).
NOTICED = {
    "dask": "was killed by signal 9",
    "ray": "A worker died or was killed while executing a task",
    "spark": "Lost executor",
}


def _kill_one(find, timeout_s=30):
    """Kill the first process `find()` returns, waiting for one to appear."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        found = find()
        if found:
            zenml_env.kill_quietly(found[:1])
            return found[0]
        time.sleep(0.2)
    raise AssertionError("no worker process to kill")


def _named(procs, prefix):
    out = []
    for proc in procs:
        try:
            if proc.name().startswith(prefix) or " ".join(proc.cmdline()).startswith(prefix):
                out.append(proc)
        except psutil.NoSuchProcess:
            pass
    return out


def _result(pipeline):
    run = pipeline.latest_run()
    return run.steps["survive_worker_loss"].outputs["output"][0].load()


@pytest.mark.parametrize("engine", ["dask", "ray"])
def test_a_killed_worker_is_survived_through_the_engines_retry(held, report, engine):
    pipeline = held(engine, kind="worker_loss")
    pipeline.wait_ready()
    time.sleep(1)  # the first task is running
    if engine == "dask":
        _kill_one(lambda: [p for p in pipeline.processes()
                           if p.pid != pipeline.process.pid and is_dask_worker_process(p)])
    else:
        _kill_one(lambda: _named(pipeline.processes(), "ray::slow_square"))
    try:
        code = pipeline.process.wait(timeout=180)
    except Exception:
        report("worker-killed", engine, hung=True)
        raise
    left = pipeline.processes(settle_s=15)
    report("worker-killed", engine, leaked=len(left))
    assert code == 0, pipeline.output()
    assert NOTICED[engine] in pipeline.output(tail=None)
    assert _result(pipeline) == EXPECTED
    assert left == []


@pytest.mark.slow
def test_a_killed_spark_executor_is_relaunched_and_its_tasks_retried(held, report, spark_cluster):
    pipeline = held("spark", {"master": spark_cluster.master_url, "ui_enabled": False}, kind="worker_loss")
    pipeline.wait_ready()

    def executors_running_python_tasks():
        # Executors are children of this session's cluster worker, not of another session's.
        # Only one whose Python workers are up runs the tasks: an executor killed while it
        # still registers is replaced without the driver ever noticing a loss.
        return [p for proc in spark_cluster.processes for p in descendants(["java"], proc.pid)
                if "CoarseGrainedExecutorBackend" in " ".join(_cmdline(p)) and _runs_python(p)]

    _kill_one(executors_running_python_tasks, timeout_s=120)
    try:
        code = pipeline.process.wait(timeout=300)
    except Exception:
        report("worker-killed", "spark", hung=True)
        raise
    left = pipeline.processes(settle_s=15)
    report("worker-killed", "spark", leaked=len(left))
    assert code == 0, pipeline.output()
    assert NOTICED["spark"] in pipeline.output(tail=None)
    assert _result(pipeline) == EXPECTED
    assert spark_cluster.alive()
    assert left == []


def _runs_python(proc):
    try:
        return any(child.name().startswith("python") for child in proc.children(recursive=True))
    except psutil.NoSuchProcess:
        return False


def _cmdline(proc):
    try:
        return proc.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return []
