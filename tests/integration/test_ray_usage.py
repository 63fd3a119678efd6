"""A Ray step's usage and timeline, from Ray's own task events, against real Ray processes.

Each step of tests/integration/ray_usage_pipelines.py runs a known number of remote tasks;
its `compute_engine.usage` must count exactly those (not another step's, not another
driver's on a shared cluster), also when it failed, and its timeline artifact must be the
Chrome trace of those tasks.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import zenml_env
from tests.support.ray_cluster import AUTH_ENV, LOOPBACK_ENV, ray_processes, use_test_auth_mode, wait_gone
from tests.support.zenml_env import describe

use_test_auth_mode()  # before `import ray`: see tests/support/ray_cluster.py

import ray  # noqa: E402
import ray.data  # noqa: E402  (registers our materializer for ray.data.Dataset)

from tests.integration import ray_usage_pipelines as up  # noqa: E402
from tests.integration.test_ray_engine import ROOT, SMALL, last_run, ray_stack  # noqa: E402, F401 (fixture)


def usage_of(run, step):
    return zenml_env.step_metadata(run, step)["usage"]


def timeline_of(run, step):
    """The step's timeline artifact and its events."""
    from zenml.client import Client
    from zenml.io import fileio

    record = zenml_env.step_metadata(run, step)["record"]
    artifact = Client().get_artifact_version(record["artifact"])
    loaded = artifact.load()
    assert loaded.kind == "ray timeline" and loaded.filename == "ray_timeline.json"
    assert record["open"].endswith(f"load {record['uri']}/ray_timeline.json"), record
    with fileio.open(loaded.path, "r") as handle:
        return artifact, json.load(handle)


def assert_no_ray_left(timeout: float = 15.0) -> None:
    left = wait_gone(ray_processes(), timeout=timeout)
    assert not left, f"Ray processes left behind: {describe(left)}"


def test_two_steps_on_one_owned_engine_count_their_own_tasks_and_keep_their_timelines(ray_stack):
    ray_stack(**SMALL, keep_step_record=True)
    up.three_then_five()
    run = last_run("three_then_five")
    assert run.status == "completed"

    three, five = usage_of(run, "three_tasks"), usage_of(run, "five_tasks")
    assert three["source"] == five["source"] == "ray gcs task events"
    assert (three["tasks"], five["tasks"]) == (3, 5), (three, five)
    assert three["failed_tasks"] == five["failed_tasks"] == 0
    # Each task sleeps 50 ms, and none ran longer than its step (a fresh worker's first task
    # also imports the function: seconds on a loaded machine).
    for step, usage, count in (("three_tasks", three, 3), ("five_tasks", five, 5)):
        step_s = (run.steps[step].end_time - run.steps[step].start_time).total_seconds()
        assert 0.05 * count <= usage["busy_s"] <= count * step_s, (step, usage, step_s)
    assert not {"bytes_read", "bytes_shuffled", "bytes_spilled", "peak_memory_bytes"} & set(three)

    # Ray Data writes a lazy dataset while ZenML saves the step's output: in the step's window.
    assert usage_of(run, "lazy_dataset")["tasks"] >= 4  # one block per write task at least

    for step, function, count in (("three_tasks", "three_tasks_work", 3), ("five_tasks", "five_tasks_work", 5)):
        artifact, events = timeline_of(run, step)
        assert {"ph", "ts", "dur", "name", "cat", "pid", "tid"} <= set(events[0]), events[0]
        spans = [e for e in events if e["cat"] == f"task::{function}"]
        assert len(spans) == count, [e["cat"] for e in events]
        assert all(e["name"].endswith(function) for e in spans), spans
        assert not [e for e in events if "tasks_work" in e["cat"] and function not in e["cat"]]
        assert f"three_then_five::{step}::ray_timeline" in run.steps[step].outputs  # kept as the step's artifact
    assert not ray.is_initialized()
    assert_no_ray_left()


def test_usage_left_for_later_steps_is_recorded_by_the_end_of_the_run(ray_stack):
    # Without the timeline, a step followed by a consumer leaves its wait for the last task
    # events to the next step's end; the run's last step waits itself.
    for reuse in ("pipeline_run", "process"):
        ray_stack(**SMALL, reuse=reuse)
        up.three_then_five()
        run = last_run("three_then_five")
        assert run.status == "completed"
        counts = [usage_of(run, step)["tasks"] for step in ("three_tasks", "five_tasks", "lazy_dataset")]
        assert counts[:2] == [3, 5] and counts[2] >= 4, (reuse, counts)
    zenml_env.teardown_engines()
    assert_no_ray_left()


@pytest.mark.slow
def test_a_terminated_run_still_records_the_usage_left_for_later(ray_stack, tmp_path):
    ray_stack(**SMALL)
    marker = tmp_path / "second-step-started"
    log = tmp_path / "pipeline.log"
    pipeline = "tests.integration.ray_usage_pipelines:three_then_terminated"
    with zenml_env.pipeline_until_marker(pipeline, marker, log) as child:
        child.send_signal(signal.SIGTERM)  # the run stops, and with it the engine, after taking that usage
        child.wait(timeout=60)
    run = last_run("three_then_terminated")
    assert usage_of(run, "three_tasks")["tasks"] == 3, log.read_text()[-3000:]
    assert_no_ray_left()


def test_a_failed_step_records_the_tasks_it_ran(ray_stack):
    ray_stack(**SMALL)
    with pytest.raises(RuntimeError, match="two_tasks_then_fail"):
        up.failing_after_tasks()
    run = last_run("failing_after_tasks")
    assert run.status == "failed"
    usage = usage_of(run, "two_tasks_then_fail")
    assert usage["tasks"] == 2 and usage["failed_tasks"] == 0, usage
    assert "record" not in zenml_env.step_metadata(run, "two_tasks_then_fail")  # keep_step_record is off
    assert_no_ray_left()


_OTHER_DRIVER = """
import os, sys, time
import ray
ray.init(address=sys.argv[1])

@ray.remote
def other_driver_work(i):
    time.sleep(0.01)
    return i

started = False
count = 0
while not os.path.exists(sys.argv[2] + ".stop"):
    ray.get([other_driver_work.remote(i) for i in range(4)])
    count += 4
    if not started:
        open(sys.argv[2], "w").write("running")
        started = True
print(count)
"""


@pytest.mark.slow
def test_an_attached_cluster_shared_with_another_driver_counts_only_our_tasks(ray_cluster, ray_stack, tmp_path):
    started = tmp_path / "other-driver-running"
    env = {**os.environ, **LOOPBACK_ENV, **AUTH_ENV}
    other = subprocess.Popen(
        [sys.executable, "-c", _OTHER_DRIVER, ray_cluster.address, str(started)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not started.exists():
            assert other.poll() is None and time.monotonic() < deadline, f"the other driver did not run: {other.stdout.read()}"
            time.sleep(0.1)
        ray_stack(address=ray_cluster.address, startup_timeout_s=60, keep_step_record=True)
        up.three_then_five()
    finally:
        Path(f"{started}.stop").touch()
        output, _ = other.communicate(timeout=60)
    assert other.returncode == 0, output
    assert int(output.strip().splitlines()[-1]) > 8, output  # it kept running tasks meanwhile

    run = last_run("three_then_five")
    meta = zenml_env.step_metadata(run, "three_tasks")
    assert meta["mode"] == "attached"
    assert (usage_of(run, "three_tasks")["tasks"], usage_of(run, "five_tasks")["tasks"]) == (3, 5)
    _, events = timeline_of(run, "five_tasks")
    assert not [e for e in events if "other_driver_work" in e["name"]]
    assert ray_cluster.status_ok()
