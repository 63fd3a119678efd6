"""A step's own account on Spark: its usage from the driver's status store, and its event log.

The engine tags every job a step's thread starts with the step's job tag (engine.py,
`_job_tag`). `step_usage` adds up, over those jobs, what Spark's status store (the data
behind the Spark UI and its REST API, kept whether the UI is on or off) says of their
stages. `step_event_log` cuts the step's own event log out of the application's: what
Spark's History Server needs to show the application with this step's jobs only. Only
the driver holds either: for Spark Connect they sit in the server, out of the client's
reach.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Set, Tuple
from urllib.parse import unquote, urlparse

from zenml.logger import get_logger

from zenml_compute_engines.flavors.usage import StepUsage

if TYPE_CHECKING:
    from pyspark import SparkContext

logger = get_logger(__name__)

SOURCE = "spark status store"

# Stages a job lists but did not run: their output was there already (an earlier job's
# shuffle), or the job ended before them.
_NOT_RUN = ("SKIPPED", "PENDING")


def drain_listener_bus(context: "SparkContext", timeout_s: float) -> bool:
    """Wait until the driver has handed every event posted so far to its listeners (the
    status store and the event log are fed asynchronously, so a job that just ended may
    not be in them yet). False when other work kept posting for `timeout_s`."""
    try:
        context._jsc.sc().listenerBus().waitUntilEmpty(int(timeout_s * 1000))
        return True
    except Exception as e:  # py4j: the JVM's TimeoutException
        logger.debug("Spark's listener bus did not drain in %.0f s: %s", timeout_s, e)
        return False


# What a stage attempt says of its tasks (`StageData`'s fields, read one by one).
_STAGE_FIGURES = (
    "attemptId", "numCompleteTasks", "numFailedTasks", "numKilledTasks",
    "executorRunTime", "inputBytes", "shuffleReadBytes", "diskBytesSpilled",
)


class _StatusStore:
    """Spark's `AppStatusStore` (and status tracker) through py4j: the few figures we
    add up, as Python values."""

    def __init__(self, context: "SparkContext") -> None:
        self._gateway = context._gateway
        self._store = context._jsc.sc().statusStore()
        self._tracker = context._jsc.sc().statusTracker()

    def job_ids(self, tag: str) -> List[int]:
        return sorted(int(job) for job in self._tracker.getJobIdsForTag(tag))

    def stage_ids(self, job_id: int) -> List[int]:
        listed = self._store.job(job_id).stageIds().mkString(",")
        return [int(stage) for stage in listed.split(",") if stage]

    def stage_attempts(self, stage_id: int) -> List[Dict[str, Any]]:
        """The stage's attempts that ran (not skipped, nor still pending)."""
        jvm = self._gateway.jvm
        no_quantiles = self._gateway.new_array(jvm.double, 0)
        attempts = self._store.stageData(stage_id, False, jvm.java.util.ArrayList(), False, no_quantiles)
        ran = []
        for index in range(attempts.size()):
            attempt = attempts.apply(index)
            if attempt.status().toString() not in _NOT_RUN:
                ran.append({name: getattr(attempt, name)() for name in _STAGE_FIGURES})
        return ran

    def largest_task_peak_memory(self, stage_id: int, attempt_id: int) -> int:
        """The largest peak execution memory a successful task of the stage attempt had
        (the stage's own figure is the sum over its tasks)."""
        maximum = self._gateway.new_array(self._gateway.jvm.double, 1)
        maximum[0] = 1.0
        summary = self._store.taskSummary(stage_id, attempt_id, maximum)
        return int(summary.get().peakExecutionMemory().apply(0)) if summary.isDefined() else 0


def step_usage(context: "SparkContext", tag: str, drain_s: float = 10.0) -> StepUsage:
    """What the jobs tagged `tag` ran, summed over the stage attempts that ran.

    Jobs and stages beyond Spark's retention (`spark.ui.retainedJobs`, `retainedStages`,
    1000 each by default) are no longer in the store and are not counted.
    """
    drain_listener_bus(context, drain_s)
    store = _StatusStore(context)
    jobs = 0
    stage_ids: List[int] = []
    for job_id in store.job_ids(tag):
        try:
            stage_ids.extend(store.stage_ids(job_id))
        except Exception:  # evicted from the store (retention)
            continue
        jobs += 1
    usage = StepUsage(
        source=SOURCE, tasks=0, jobs=jobs, stages=0, failed_tasks=0, busy_s=0.0,
        bytes_read=0, bytes_shuffled=0, bytes_spilled=0, peak_memory_bytes=0,
    )
    for stage_id in sorted(set(stage_ids)):
        try:
            attempts = store.stage_attempts(stage_id)
        except Exception:  # evicted from the store (retention)
            continue
        usage.stages += 1 if attempts else 0
        for attempt in attempts:
            _add_stage_attempt(usage, attempt)
            if attempt["numCompleteTasks"]:
                peak = store.largest_task_peak_memory(stage_id, attempt["attemptId"])
                usage.peak_memory_bytes = max(usage.peak_memory_bytes, peak)
    return usage


def _add_stage_attempt(usage: StepUsage, attempt: Dict[str, Any]) -> None:
    usage.tasks += attempt["numCompleteTasks"] + attempt["numFailedTasks"] + attempt["numKilledTasks"]
    usage.failed_tasks += attempt["numFailedTasks"]
    usage.busy_s += attempt["executorRunTime"] / 1000.0  # ms of task run time, summed over tasks
    usage.bytes_read += attempt["inputBytes"]
    usage.bytes_shuffled += attempt["shuffleReadBytes"]
    usage.bytes_spilled += attempt["diskBytesSpilled"]



# ---- the step's event log ------------------------------------------------------------

# Spark's own default for spark.eventLog.dir.
_SPARK_DEFAULT_LOG_DIR = "/tmp/spark-events"
# Suffixes of the codecs Spark writes event logs with (spark.io.compression.codec).
_CODECS = ("lz4", "lzf", "snappy", "zstd")
_IN_PROGRESS = ".inprogress"


def _own_files() -> Path:
    """This process's folder for event logs: the driver's log (when the user names no
    `spark.eventLog.dir`) and the steps' cuts until the core has saved them."""
    return Path(tempfile.gettempdir()) / f"zenml-spark-{os.getpid()}"


def event_log_conf(user_conf: Dict[str, str]) -> Dict[str, str]:
    """Start-up options that make our driver write the event log each step's log is cut
    from; the user's own options (`user_conf`) are applied after these and win."""
    conf = {"spark.eventLog.enabled": "true"}
    if "spark.eventLog.dir" not in user_conf:
        directory = _own_files() / "events"
        directory.mkdir(parents=True, exist_ok=True)  # Spark refuses to start without it
        conf["spark.eventLog.dir"] = directory.as_uri()
    # One plain file, which a step's log is cut from as it is, while the application
    # writes to it (Spark 4 compresses and rolls by default; its cut is plain anyway).
    for key in ("spark.eventLog.compress", "spark.eventLog.rolling.enabled"):
        if key not in user_conf:
            conf[key] = "false"
    return conf


def forget_event_logs() -> None:
    """Remove this process's event logs and cuts (its driver has stopped)."""
    shutil.rmtree(_own_files(), ignore_errors=True)


def step_event_log(context: "SparkContext", tag: str, name: str, drain_s: float = 10.0) -> Tuple[str, int]:
    """The event log of the step whose jobs carry `tag`, as a file of its own (under
    this process's folder, `name`: the step's); its path and the step's job count.

    The file holds the application's events with the job, stage, task and SQL events
    limited to the step's, and an end of the application, so that the History Server
    lists it as complete. Raises when the application writes no event log here.
    """
    conf = context.getConf()
    if conf.get("spark.eventLog.enabled", "false").lower() != "true":
        raise RuntimeError(
            "the Spark application writes no event log (a session started outside the "
            "component, or spark.eventLog.enabled=false in its conf)"
        )
    log_dir = conf.get("spark.eventLog.dir", _SPARK_DEFAULT_LOG_DIR)
    where = urlparse(log_dir)
    if where.scheme not in ("", "file"):
        raise RuntimeError(f"the event log is written to {log_dir}: only a local spark.eventLog.dir is read")
    drain_listener_bus(context, drain_s)
    application = context.applicationId
    attempt = context._jsc.sc().applicationAttemptId()
    log_name = application + (f"_{attempt.get()}" if attempt.isDefined() else "")
    steps = _own_files() / "steps"
    # The core saves each cut before the next step's end: earlier cuts are kept already.
    shutil.rmtree(steps, ignore_errors=True)
    cut_dir = steps / name
    cut_dir.mkdir(parents=True)
    lines = _read_lines(context, _log_files(Path(unquote(where.path)), log_name), cut_dir)
    events, jobs = cut_step_events(lines, tag)
    target = cut_dir / log_name  # no dot in the name: Spark reads a suffix as a codec
    with open(target, "w", encoding="utf-8") as handle:
        handle.writelines(events)
        # Spelled as Spark does: the History Server finds it by its first characters.
        handle.write(f'{{"Event":"SparkListenerApplicationEnd","Timestamp":{int(time.time() * 1000)}}}\n')
    return str(target), jobs


def _log_files(log_dir: Path, log_name: str) -> List[Path]:
    """The files of the application's event log, in order: one file, or the parts of a
    rolling log (`eventlog_v2_<app>/events_<n>_<app>`)."""
    rolling = log_dir / f"eventlog_v2_{log_name}"
    if rolling.is_dir():
        parts = [p for p in rolling.iterdir() if p.name.startswith("events_")]
        return sorted(parts, key=lambda p: int(p.name.split("_")[1]))
    single = [p for p in log_dir.glob(f"{log_name}*") if p.name.split(".")[0] == log_name]
    if not single:
        raise RuntimeError(f"no event log of application {log_name} in {log_dir}")
    return single[:1]


def _read_lines(context: "SparkContext", files: List[Path], scratch: Path) -> Iterable[str]:
    for path in files:
        suffixes = path.name[: -len(_IN_PROGRESS)] if path.name.endswith(_IN_PROGRESS) else path.name
        if suffixes.rsplit(".", 1)[-1] in _CODECS:
            path = _decompressed(context, path, scratch / "decompressed")
        with open(path, encoding="utf-8") as handle:
            yield from handle


def _decompressed(context: "SparkContext", path: Path, into: Path) -> Path:
    """A plain copy of a compressed event log file, decompressed by Spark's own reader
    (which also reads the unfinished end of a file the driver still writes)."""
    jvm = context._gateway.jvm
    source = jvm.org.apache.hadoop.fs.Path(path.as_uri())
    stream = jvm.org.apache.spark.deploy.history.EventLogFileReader.openEventLog(
        source, source.getFileSystem(context._jsc.hadoopConfiguration())
    )
    into.unlink(missing_ok=True)
    try:
        no_options = context._gateway.new_array(jvm.java.nio.file.CopyOption, 0)
        jvm.java.nio.file.Files.copy(stream, jvm.java.io.File(str(into)).toPath(), no_options)
    finally:
        stream.close()
    return into


@dataclass
class _StepScope:
    """The ids of what a step ran, as its event log names them."""

    jobs: Set[int] = field(default_factory=set)
    stages: Set[int] = field(default_factory=set)
    tasks: Set[int] = field(default_factory=set)
    executions: Set[int] = field(default_factory=set)

    def keeps(self, event: Dict[str, Any]) -> bool:
        """Whether `event` belongs in the step's log, by the fields Spark's JSON protocol
        gives it: about a job, a stage, a task or an SQL execution of the step, or about
        the application as a whole (its start, environment, executors). Asked in the
        log's order: it notes the step's tasks as they start."""
        if "Job ID" in event:
            return event["Job ID"] in self.jobs
        if "Stage Info" in event:
            return event["Stage Info"]["Stage ID"] in self.stages
        if "Stage ID" in event:
            if event["Stage ID"] not in self.stages:
                return False
            if "Task Info" in event:  # a task start or end: the task is the step's
                self.tasks.add(event["Task Info"]["Task ID"])
            return True
        if "Task Info" in event:  # TaskGettingResult names its task only
            return event["Task Info"]["Task ID"] in self.tasks
        if "executionId" in event:
            return event["executionId"] in self.executions
        return True


def cut_step_events(lines: Iterable[str], tag: str) -> Tuple[List[str], int]:
    """The lines of an application's event log that belong in a step's own log (see
    `_StepScope.keeps`), and the step's job count: the step's jobs are those tagged
    `tag`, its stages and SQL executions those its jobs name."""
    # A line without its newline is an event the driver is still writing.
    events = [(line, json.loads(line)) for line in lines if line.endswith("\n") and line.strip()]
    scope = _StepScope()
    for _, event in events:
        kind = event["Event"]
        if kind == "SparkListenerJobStart":
            properties = event.get("Properties") or {}
            if tag in (properties.get("spark.job.tags") or "").split(","):
                scope.jobs.add(event["Job ID"])
                scope.stages.update(event["Stage IDs"])
                for key in ("spark.sql.execution.id", "spark.sql.execution.root.id"):
                    if properties.get(key):
                        scope.executions.add(int(properties[key]))
        elif kind.endswith("SparkListenerSQLExecutionStart") and tag in (event.get("jobTags") or ()):
            scope.executions.add(event["executionId"])  # Spark 4 tags executions, with or without jobs
    return [line for line, event in events if scope.keeps(event)], len(scope.jobs)
