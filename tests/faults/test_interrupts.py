"""Interrupting a pipeline mid-step, for every engine.

Each case states what must survive and what must be cleaned up:

- Ctrl-C (SIGINT): the process exits promptly, ZenML records the step and run as failed,
  the owned engine's processes are gone; an attached cluster keeps running.
- SIGKILL (the OOM killer; no handler runs): within 30 s no process of the owned engine is
  left, wherever it was reparented to. How long they lived is reported.
- Two pipelines at the same time, each with its own owned engine: both finish with
  correct results, neither stops the other's engine, nothing is left after.

BigQuery starts no process: Ctrl-C there must cancel the job the step was waiting for
(SIGKILL leaves nothing of ours behind, and nothing can cancel that job; a job outlives the
process that started it, capped by `maximum_bytes_billed`).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from zenml.enums import ExecutionStatus

from tests.faults.conftest import OWNED
from tests.support import zenml_env

ENGINES = ["spark", "dask", "ray"]
PROMPT_EXIT_S = 30  # after Ctrl-C, the process is gone within this
ORPHAN_LIMIT_S = 30  # after SIGKILL, every engine process is gone within this
ATTACHED = {
    "spark": ("spark_cluster", lambda c: {"master": c.master_url, "ui_enabled": False}, lambda c: c.alive()),
    "dask": ("dask_cluster", lambda c: {"scheduler_address": c.address, "startup_timeout_s": 30}, lambda c: c.alive()),
    "ray": ("ray_cluster", lambda c: {"address": c.address, "startup_timeout_s": 60}, lambda c: c.status_ok()),
}


def _interrupt(pipeline, signum):
    """Send `signum` mid-step; the seconds until the process exited (None: it hung)."""
    pipeline.wait_ready()
    assert pipeline.processes(), "the step's engine should have started processes"
    sent = time.time()
    pipeline.process.send_signal(signum)
    try:
        pipeline.process.wait(timeout=PROMPT_EXIT_S)
    except Exception:
        return sent, None
    return sent, time.time() - sent


def _assert_run_failed(pipeline, step="hold"):
    run = pipeline.latest_run()
    assert run is not None
    assert run.status in (ExecutionStatus.FAILED, ExecutionStatus.STOPPED), run.status
    assert run.steps[step].status in (ExecutionStatus.FAILED, ExecutionStatus.STOPPED)


def _bigquery_config(request):
    """A BigQuery engine on the session's emulator, behind its recording proxy (cleared)."""
    _, proxy = request.getfixturevalue("bq_emulator")
    proxy.clear()
    return proxy, {"project": "test", "api_endpoint": proxy.url}


@pytest.mark.parametrize("engine", ENGINES)
def test_ctrl_c_mid_step_stops_the_owned_engine_and_exits_promptly(held, report, engine):
    pipeline = held(engine)
    sent, exit_s = _interrupt(pipeline, signal.SIGINT)
    left = pipeline.processes(settle_s=15)
    report("sigint", engine, leaked=len(left), hung=exit_s is None)
    assert exit_s is not None, f"still running {PROMPT_EXIT_S}s after Ctrl-C:\n{pipeline.output()}"
    assert pipeline.process.returncode != 0
    assert left == [], f"left after Ctrl-C: {left}\n{pipeline.output()}"
    _assert_run_failed(pipeline)
    assert f"Stopped the {engine} engine" in pipeline.output(tail=None)


def test_ctrl_c_mid_query_cancels_the_bigquery_job_and_exits_promptly(held, report, request):
    proxy, config = _bigquery_config(request)
    pipeline = held("bigquery", config, kind="query")
    pipeline.wait_ready()
    job_id = pipeline.ready.read_text()
    assert proxy.cancels() == []  # the job is running
    sent = time.time()
    pipeline.process.send_signal(signal.SIGINT)
    try:
        pipeline.process.wait(timeout=PROMPT_EXIT_S)
        exit_s = time.time() - sent
    except Exception:
        exit_s = None
    left = pipeline.processes(settle_s=2)
    report("sigint", "bigquery", leaked=len(left), hung=exit_s is None)
    assert exit_s is not None, f"still running {PROMPT_EXIT_S}s after Ctrl-C:\n{pipeline.output()}"
    assert pipeline.process.returncode != 0
    assert proxy.cancels() == [job_id], pipeline.output()
    assert f"Cancelled BigQuery job {job_id}" in pipeline.output(tail=None)
    assert left == []
    _assert_run_failed(pipeline, step="hold_in_query")


@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINES)
def test_ctrl_c_mid_step_leaves_an_attached_cluster_running(held, report, request, engine):
    fixture, config_for, is_up = ATTACHED[engine]
    cluster = request.getfixturevalue(fixture)  # started before the marked pipeline process
    pipeline = held(engine, config_for(cluster))
    sent, exit_s = _interrupt(pipeline, signal.SIGINT)
    left = pipeline.processes(settle_s=15)
    report("sigint-attached", engine, leaked=len(left), hung=exit_s is None)
    assert exit_s is not None, f"still running {PROMPT_EXIT_S}s after Ctrl-C:\n{pipeline.output()}"
    assert left == []
    _assert_run_failed(pipeline)
    assert is_up(cluster), "an attached cluster was stopped"


CANCEL_LIMIT_S = 10  # after Ctrl-C, no task of the interrupted step runs any more


def _last_beat(directory) -> float:
    """When a task of the long job last wrote its heartbeat (0: none yet)."""
    times = []
    for path in directory.glob("beat-*"):
        try:
            times.append(float(path.read_text() or 0))
        except (OSError, ValueError):  # being written
            continue
    return max(times, default=0.0)


def _interrupt_the_long_job(pipeline, beats) -> float:
    """Wait until the long job's tasks run, then send SIGINT to the process group, as a
    terminal's Ctrl-C and Jupyter's interrupt do (the engine processes we spawned are in
    that group too); when it was sent."""
    deadline = time.time() + 180
    while _last_beat(beats) == 0.0:
        assert time.time() < deadline and pipeline.process.poll() is None, pipeline.output()
        time.sleep(0.2)
    time.sleep(2)  # well into the job
    sent = time.time()
    os.killpg(pipeline.process.pid, signal.SIGINT)
    return sent


@pytest.mark.parametrize("engine", ENGINES)
def test_an_interrupted_steps_work_is_cancelled_and_the_next_run_starts_at_once(held, report, tmp_path, engine):
    """A notebook with reuse=process: Ctrl-C during a step whose long job (400 one-second
    tasks) runs on the kept engine; the next cell's run on the same engine."""
    beats = tmp_path / "beats"
    (beats / "next").mkdir(parents=True)
    pipeline = held(engine, {**OWNED[engine], "reuse": "process"}, kind="interrupted_then_again", ready=beats)
    sent = _interrupt_the_long_job(pipeline, beats)
    code = pipeline.process.wait(timeout=180)
    ran_on_s = _last_beat(beats) - sent  # how long a task of the interrupted step still ran
    left = pipeline.processes(settle_s=15)
    report("sigint-kept-engine", engine, leaked=len(left), hung=ran_on_s >= CANCEL_LIMIT_S)
    output = pipeline.output(tail=None)
    assert ran_on_s < CANCEL_LIMIT_S, f"a task of the interrupted step still ran {ran_on_s:.0f}s after Ctrl-C:\n{output[-3000:]}"
    assert code == 0, output[-3000:]
    assert Path(f"{beats}.report.interrupted").exists()  # the first call ended with the interrupt
    assert f"cancelled its work on the {engine} engine" in output, output[-3000:]
    # The next run's four tasks ran at once, not behind the interrupted job's 400.
    assert float(Path(f"{beats}.report").read_text()) < 60, output[-3000:]
    assert left == []


@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINES)
def test_on_an_attached_cluster_only_the_interrupted_steps_work_is_cancelled(held, report, request, tmp_path, engine):
    """The same on a cluster another pipeline uses at the same time: its job, submitted
    before the interrupt, finishes with the right result."""
    fixture, config_for, is_up = ATTACHED[engine]
    cluster = request.getfixturevalue(fixture)
    config = {**config_for(cluster), "reuse": "process"}
    if engine == "spark":  # two applications share the worker's 2 cores
        config["conf"] = {"spark.cores.max": "1"}
    beats, neighbour_beats = tmp_path / "beats", tmp_path / "neighbour"
    (beats / "next").mkdir(parents=True)
    neighbour_beats.mkdir()
    pipeline = held(engine, config, kind="interrupted_then_again", ready=beats)
    neighbour = held(engine, config, kind="neighbour", ready=neighbour_beats)
    submitted = Path(f"{neighbour_beats}.submitted")
    deadline = time.time() + 180
    while not (submitted.exists() and _last_beat(beats)):
        assert time.time() < deadline and neighbour.process.poll() is None, neighbour.output()
        time.sleep(0.2)
    time.sleep(2)  # the neighbour's tasks are queued or running
    sent = _interrupt_the_long_job(pipeline, beats)
    codes = [p.process.wait(timeout=240) for p in (pipeline, neighbour)]
    ran_on_s = _last_beat(beats) - sent
    left = pipeline.processes(settle_s=15) + neighbour.processes(settle_s=15)
    report("sigint-attached-kept-engine", engine, leaked=len(left), hung=ran_on_s >= CANCEL_LIMIT_S)
    assert ran_on_s < CANCEL_LIMIT_S, f"a task of the interrupted step still ran {ran_on_s:.0f}s after Ctrl-C"
    assert codes == [0, 0], f"{pipeline.output()}\n-----\n{neighbour.output()}"
    assert _last_beat(neighbour_beats) > 0  # the neighbour's tasks ran, and its result was right
    assert float(Path(f"{beats}.report").read_text()) < 60
    assert left == [] and is_up(cluster)


@pytest.mark.parametrize("engine", ENGINES)
def test_sigkill_mid_step_leaves_no_engine_process_behind(held, report, engine):
    pipeline = held(engine)
    sent, exit_s = _interrupt(pipeline, signal.SIGKILL)
    assert exit_s is not None
    orphan_s = pipeline.seconds_until_no_process(sent, ORPHAN_LIMIT_S)
    left = pipeline.processes()
    report("sigkill", engine, leaked=len(left), orphan_s=orphan_s)
    assert orphan_s is not None, f"alive {ORPHAN_LIMIT_S}s after SIGKILL: {zenml_env.describe(left)}"


@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINES + ["bigquery"])
def test_two_pipelines_at_once_each_keep_their_own_engine(held, report, request, engine):
    config = _bigquery_config(request)[1] if engine == "bigquery" else None
    # Both hold their step long enough to overlap; each step runs a job before and after.
    first, second = held(engine, config, hold_s=20), held(engine, config, hold_s=1)
    first.wait_ready()
    second.wait_ready()
    codes = [p.process.wait(timeout=180) for p in (first, second)]
    left = first.processes(settle_s=15) + second.processes(settle_s=15)
    report("concurrent", engine, leaked=len(left))
    assert codes == [0, 0], f"{first.output()}\n-----\n{second.output()}"
    for pipeline in (first, second):
        assert pipeline.latest_run().status == ExecutionStatus.COMPLETED
    assert left == []
