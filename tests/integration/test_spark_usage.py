"""Each Spark step's usage and its own event log, on real Spark (owned and attached).

The steps (spark_usage_pipelines.py) run jobs of known sizes: one job of N tasks each,
and a DataFrame of N partitions, which the output materializer writes in one job of N
tasks on the step's thread.
"""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import psutil
import pytest
from zenml.client import Client

from zenml_compute_engines.flavors.spark.usage import cut_step_events
from tests.integration import spark_usage_pipelines as P
from tests.support.ports import free_port
from tests.support.zenml_env import ROOT_DIR, java_children, step_metadata

LOCAL = {"master": "local[2]", "ui_enabled": False}


def _usage(run, step):
    return step_metadata(run, step)["usage"]


def test_two_steps_on_one_engine_count_their_own_tasks(spark_stack):
    spark_stack(**LOCAL)
    run = P.two_steps_pipeline()
    first, second = _usage(run, "three_tasks_and_a_frame"), _usage(run, "five_tasks_and_a_frame")
    assert step_metadata(run, "three_tasks_and_a_frame")["application_id"] == step_metadata(run, "five_tasks_and_a_frame")["application_id"]
    # Its own job, then the write of its output: one stage each, a task per partition.
    assert (first["jobs"], first["stages"], first["tasks"], first["failed_tasks"]) == (2, 2, 3 + 3, 0)
    assert (second["jobs"], second["stages"], second["tasks"], second["failed_tasks"]) == (2, 2, 5 + 5, 0)
    assert first["source"] == second["source"] == "spark status store"
    assert first["busy_s"] > 0 and second["busy_s"] > 0
    assert java_children() == []


def test_usage_is_recorded_for_a_failed_step(spark_stack, zen):
    spark_stack(**LOCAL)
    with pytest.raises(RuntimeError):
        P.failing_after_a_job_pipeline()
    run = zen.get_pipeline("failing_after_a_job_pipeline").last_run
    assert str(run.steps["three_tasks_then_fail"].status) == "failed"
    usage = _usage(run, "three_tasks_then_fail")
    assert (usage["jobs"], usage["tasks"], usage["failed_tasks"]) == (1, 3, 0)
    assert java_children() == []


@pytest.mark.slow
def test_a_step_on_a_shared_cluster_counts_only_its_own_tasks(spark_stack, spark_cluster, tmp_path):
    # One core per application: both get an executor on the worker's two cores.
    spark_stack(
        master=spark_cluster.master_url, master_ui_url=spark_cluster.ui_url, ui_enabled=False,
        conf={"spark.cores.max": 1, "spark.executor.memory": "512m"},
    )
    started, release = tmp_path / "started", tmp_path / "release"
    script = (
        "from tests.integration.spark_usage_pipelines import held_tasks_pipeline\n"
        f"held_tasks_pipeline(partitions=7, started={str(started)!r}, release={str(release)!r})\n"
    )
    # The other pipeline: its own driver, an application of its own on the same cluster,
    # whose job is running (held) while ours runs.
    other = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT_DIR, start_new_session=True)
    try:
        deadline = time.time() + 180
        while not started.exists() and time.time() < deadline and other.poll() is None:
            time.sleep(0.2)
        assert started.exists(), "the other pipeline never started its job"
        run = P.three_tasks_pipeline()
        assert other.poll() is None, "the other pipeline's job ended before ours ran"
        release.touch()
        assert other.wait(timeout=120) == 0
    finally:
        if other.poll() is None:
            os.killpg(other.pid, signal.SIGKILL)
    usage = _usage(run, "three_tasks")
    assert step_metadata(run, "three_tasks")["mode"] == "attached"
    assert (usage["jobs"], usage["stages"], usage["tasks"]) == (1, 1, 3)
    theirs = Client().get_pipeline("held_tasks_pipeline").last_run
    assert step_metadata(theirs, "tasks_held_until")["application_id"] != step_metadata(run, "three_tasks")["application_id"]
    assert _usage(theirs, "tasks_held_until")["tasks"] == 7
    assert spark_cluster.alive()


def _get_json(url):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


@pytest.mark.slow  # 20 to 30 s: a run, then the History Server's start
def test_the_history_server_shows_a_steps_own_event_log(spark_stack, tmp_path):
    import pyspark

    spark_stack(**LOCAL, keep_step_record=True)
    run = P.two_steps_pipeline()
    record = step_metadata(run, "five_tasks_and_a_frame")["record"]
    log_dir = record["uri"]
    assert record["artifact"] == "two_steps_pipeline::five_tasks_and_a_frame::spark_event_log"
    assert record["history_server"] == (
        f"SPARK_HISTORY_OPTS=-Dspark.history.fs.logDirectory={log_dir} $SPARK_HOME/sbin/start-history-server.sh"
    )
    assert record["jobs"] == 2
    port = free_port()
    spark_home = os.path.dirname(pyspark.__file__)
    env = {
        **os.environ,
        "SPARK_HOME": spark_home,
        "SPARK_LOCAL_IP": "127.0.0.1",
        "SPARK_LOG_DIR": str(tmp_path / "logs"),
        "SPARK_PID_DIR": str(tmp_path / "pids"),
        "SPARK_HISTORY_OPTS": f"-Dspark.history.fs.logDirectory={log_dir} -Dspark.history.ui.port={port}",
    }
    sbin = os.path.join(spark_home, "sbin")
    subprocess.run(["bash", os.path.join(sbin, "start-history-server.sh")], env=env, check=True, capture_output=True)
    try:
        url = f"http://127.0.0.1:{port}/api/v1/applications"
        deadline, applications = time.time() + 90, []
        while not applications and time.time() < deadline:
            try:
                applications = _get_json(url)
            except OSError:
                time.sleep(0.5)
        (application,) = applications
        assert application["id"] == record["application_id"]
        assert application["attempts"][0]["completed"] is True
        jobs = _get_json(f"{url}/{application['id']}/jobs")
        # The step's own job (5 tasks) and its output's write (5 tasks); none of the first step's.
        assert sorted(job["numTasks"] for job in jobs) == [5, 5]
        assert all(job["status"] == "SUCCEEDED" for job in jobs)
    finally:
        subprocess.run(["bash", os.path.join(sbin, "stop-history-server.sh")], env=env, capture_output=True)
    assert _history_servers(port) == []


def _history_servers(port):
    """Java processes of a History Server on `port`, after a few seconds to exit."""
    deadline = time.time() + 15
    while True:
        found = []
        for proc in psutil.process_iter():
            try:
                cmdline = proc.cmdline()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            if "org.apache.spark.deploy.history.HistoryServer" in cmdline and f"-Dspark.history.ui.port={port}" in cmdline:
                found.append(proc)
        if not found or time.time() > deadline:
            return found
        time.sleep(0.5)


def test_a_steps_event_log_keeps_the_application_and_its_own_jobs_only():
    """The cut, on a log of two steps' jobs, ending in an event the driver still writes."""
    def line(**event):
        return json.dumps(event) + "\n"

    ours, theirs = "zenml-step-a", "zenml-step-b"
    log = [
        line(Event="SparkListenerApplicationStart", **{"App ID": "local-1"}),
        line(Event="SparkListenerExecutorAdded", **{"Executor ID": "driver"}),
        line(Event="org.apache.spark.sql.execution.ui.SparkListenerSQLExecutionStart", executionId=0),
        line(Event="SparkListenerJobStart", **{"Job ID": 0, "Stage IDs": [0], "Properties": {"spark.job.tags": theirs, "spark.sql.execution.id": "0"}}),
        line(Event="SparkListenerTaskStart", **{"Stage ID": 0, "Task Info": {"Task ID": 0}}),
        line(Event="SparkListenerJobEnd", **{"Job ID": 0}),
        line(Event="org.apache.spark.sql.execution.ui.SparkListenerSQLExecutionStart", executionId=1),
        line(Event="SparkListenerJobStart", **{"Job ID": 1, "Stage IDs": [1, 2], "Properties": {"spark.job.tags": f"x,{ours}", "spark.sql.execution.id": "1"}}),
        line(Event="SparkListenerStageSubmitted", **{"Stage Info": {"Stage ID": 1}}),
        line(Event="SparkListenerTaskStart", **{"Stage ID": 1, "Task Info": {"Task ID": 1}}),
        line(Event="SparkListenerTaskGettingResult", **{"Task Info": {"Task ID": 1}}),
        line(Event="SparkListenerTaskGettingResult", **{"Task Info": {"Task ID": 0}}),
        line(Event="SparkListenerTaskEnd", **{"Stage ID": 1, "Task Info": {"Task ID": 1}}),
        line(Event="SparkListenerStageCompleted", **{"Stage Info": {"Stage ID": 1}}),
        line(Event="SparkListenerJobEnd", **{"Job ID": 1}),
        line(Event="org.apache.spark.sql.execution.ui.SparkListenerSQLExecutionEnd", executionId=1),
        line(Event="org.apache.spark.sql.execution.ui.SparkListenerSQLExecutionEnd", executionId=0),
    ]
    being_written = '{"Event":"SparkListenerTaskEnd","Stage ID":1,"Task'
    kept, jobs = cut_step_events(log + [being_written], ours)
    assert jobs == 1
    assert kept == log[:2] + log[6:11] + log[12:16]
