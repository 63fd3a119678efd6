"""A step's work on Ray, from the task events Ray's GCS keeps: its usage and its timeline.

Every Ray process reports the tasks it owns or runs to the GCS as task events: each task
attempt's state changes with their times (submitted, running, finished, failed) and its
profile spans (what `ray.timeline()` draws). The GCS keeps them per job, without the
dashboard. A step's tasks are the task attempts of this driver's job that were submitted
between the step taking the engine and the end of the step (after its outputs are saved,
so a materializer's Ray Data writes count); another driver's tasks belong to another job.

Ray sends task events in batches, every `task_events_report_interval_ms` (1 s by default),
so the step's last tasks reach the GCS after the step ended. `collect` waits for them,
within a bound: the driver stamps the end of the step into its own events, and once that
stamp and the end of every task of the step arrived, nothing the step did is missing
(without the stamp, once every process has reported since the end). To keep that wait
short, an owned Ray reports every 0.05 s (`OWNED_REPORT_INTERVAL_MS`), and so do, on an
attached cluster, this driver and the workers of its job (`reporting_often`): Ray reads
the interval from a process's environment when it starts.
"""

from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional

from zenml_compute_engines.flavors.usage import StepUsage

SOURCE = "ray gcs task events"
REPORT_INTERVAL_KEY = "task_events_report_interval_ms"
# What an owned Ray is started with when a step's usage or timeline is recorded: the wait
# at the end of a step is half of it on average, and Ray's own processes, idle, used 1.9%
# of a core more than at Ray's default (docs/usage.md#ray).
OWNED_REPORT_INTERVAL_MS = 50
_RAY_DEFAULT_REPORT_INTERVAL_MS = 1000
# The profile span the driver records at the end of a step (`stamp_end`): its arrival at
# the GCS shows that the driver has reported every task it submitted before it.
_END_MARK = "zenml:step_end"
# How long a report may take to reach the GCS after its interval is up.
_REPORT_LATENCY_S = 0.25


@dataclass
class StepTasks:
    """The task events of one step.

    Attributes:
        attempts: The `TaskEvents` of each task attempt the step submitted (driver excluded).
        driver: The driver's `TaskEvents` (its profile spans: task submissions), or None.
        start_ns: When the step took the engine (wall clock, ns).
        end_ns: When the step ended.
        complete: Whether every attempt reported its end (False when the bound passed first,
            or a task was still running when the step ended).
    """

    attempts: List[Any]
    driver: Any
    start_ns: int
    end_ns: int
    complete: bool


# The interval `reporting_often` gave this process's driver and its job's workers, if any.
_reporting_every_s: Optional[float] = None


@contextmanager
def reporting_often(runtime_env: Optional[Dict[str, Any]]) -> Iterator[Optional[Dict[str, Any]]]:
    """Connect within this: this driver, and the workers of its job through the returned
    runtime_env, report task events every `OWNED_REPORT_INTERVAL_MS` (not the cluster's
    1 s), unless the user set the interval. The environment variable is set only while
    Ray initializes this driver."""
    global _reporting_every_s
    key = f"RAY_{REPORT_INTERVAL_KEY}"
    env_vars = dict((runtime_env or {}).get("env_vars") or {})
    _reporting_every_s = None
    if key in os.environ or key in env_vars:
        yield runtime_env
        return
    _reporting_every_s = OWNED_REPORT_INTERVAL_MS / 1000
    env_vars[key] = str(OWNED_REPORT_INTERVAL_MS)
    os.environ[key] = env_vars[key]
    try:
        yield {**(runtime_env or {}), "env_vars": env_vars}
    finally:
        os.environ.pop(key, None)


def report_interval_s() -> float:
    """How often the processes of this driver's job send their task events to the GCS."""
    from ray._private.state import state

    if _reporting_every_s is not None:  # attached, `reporting_often`
        return _reporting_every_s

    configured = state.get_system_config().get(REPORT_INTERVAL_KEY)
    if configured is None:
        configured = os.environ.get(f"RAY_{REPORT_INTERVAL_KEY}", _RAY_DEFAULT_REPORT_INTERVAL_MS)
    return int(configured) / 1000


def collect(job_id: str, start_ns: int, end_ns: int, step_key: str, interval_s: float) -> StepTasks:
    """The task events of the step of driver job `job_id` that took the engine at `start_ns`
    and ended at `end_ns`, once they reached the GCS.

    Waits until every task of the step reported its end and, either the driver's end stamp
    (`stamp_end`) arrived, or every process has reported once since the end; while a task
    still runs, until every process has reported twice."""
    ended = time.monotonic() - max(0.0, (time.time_ns() - end_ns) / 1e9)
    settled_at = ended + interval_s + _REPORT_LATENCY_S
    give_up_at = settled_at + interval_s
    poll_s = min(max(interval_s / 10, 0.01), 0.1)
    while True:
        began = time.monotonic()
        tasks, stamped = _select(_task_events(), job_id, start_ns, end_ns, step_key)
        now = time.monotonic()
        if (tasks.complete and (stamped or now >= settled_at)) or now >= give_up_at:
            return tasks
        time.sleep(max(poll_s, now - began))  # a large GCS answers slowly: ask it less often


def step_usage(tasks: StepTasks) -> StepUsage:
    """The step's usage: its task attempts, the failed ones and the time they ran (from
    RUNNING to FINISHED/FAILED, as Ray's state API reports a task's start and end; a task
    still running when the step ended counts until then)."""
    from ray.core.generated.common_pb2 import TaskStatus

    running, finished, failed = (TaskStatus.Value(name) for name in ("RUNNING", "FINISHED", "FAILED"))
    busy_ns = 0
    failures = 0
    for attempt in tasks.attempts:
        times = attempt.state_updates.state_ts_ns
        failures += failed in times
        if running in times:
            end = times.get(finished) or times.get(failed) or tasks.end_ns
            busy_ns += max(0, end - times[running])
    return StepUsage(source=SOURCE, tasks=len(tasks.attempts), failed_tasks=failures, busy_s=busy_ns / 1e9)


def write_timeline(tasks: StepTasks, path: str) -> int:
    """Write the step's timeline to `path` as `ray.timeline()` writes a cluster's (Chrome
    trace events): the profile spans of the step's task attempts (`task::<function>`,
    deserializing, executing, storing outputs) and the driver's task submissions within
    the step. Returns how many events it holds."""
    from ray._private.state import GlobalState

    colors = GlobalState._default_color_mapping
    events: List[Dict[str, Any]] = []
    for entry in [*tasks.attempts, tasks.driver]:
        if entry is None or not entry.HasField("profile_events"):
            continue
        profile = entry.profile_events
        if profile.component_type not in ("worker", "driver"):
            continue
        for span in profile.events:
            if span.event_name == _END_MARK:
                continue
            if entry is tasks.driver and not tasks.start_ns <= span.start_time <= tasks.end_ns:
                continue  # the driver's spans of other steps
            try:
                extra = json.loads(span.extra_data)
            except ValueError:
                extra = {}
            events.append({
                "cat": span.event_name,
                "name": extra.get("name", span.event_name),
                "pid": profile.node_ip_address,
                "tid": f"{profile.component_type}:{profile.component_id.hex()}",
                "ts": span.start_time / 1000,
                "dur": (span.end_time - span.start_time) / 1000,
                "ph": "X",
                "cname": extra.get("cname", colors[span.event_name]),
                "args": extra,
            })
    with open(path, "w") as handle:
        json.dump(sorted(events, key=lambda event: event["ts"]), handle)
    return len(events)


def stamp_end(step_key: str) -> None:
    """Record the end of the step (a span with its id) among the driver's task events; Ray
    files it under the driver only when called on the thread that ran `ray.init`."""
    import ray

    with ray._private.worker.global_worker.core_worker.profile_event(_END_MARK.encode(), {"step": step_key}):
        pass


def _task_events() -> List[Any]:
    """Every task event the GCS keeps (`TaskEvents` protos), as `ray.timeline()` reads them."""
    from ray._private.state import state

    if hasattr(state, "_get_all_task_events"):  # newer Ray: the GCS, or the dashboard if so configured
        return state._get_all_task_events()
    from ray.core.generated.gcs_pb2 import TaskEvents

    state._check_connected()
    return [TaskEvents.FromString(raw) for raw in state.global_state_accessor.get_task_events()]


def _select(events: List[Any], job_id: str, start_ns: int, end_ns: int, step_key: str) -> "tuple[StepTasks, bool]":
    """The step's task events among `events`, and whether the driver's end stamp is there."""
    from ray.core.generated.common_pb2 import TaskStatus, TaskType

    driver_type = TaskType.Value("DRIVER_TASK")
    running, finished, failed = (TaskStatus.Value(name) for name in ("RUNNING", "FINISHED", "FAILED"))
    attempts: List[Any] = []
    driver = None
    complete = True
    for entry in events:
        if entry.job_id.hex() != job_id:
            continue
        if entry.task_info.type == driver_type:
            driver = entry
            continue
        times = entry.state_updates.state_ts_ns
        if not times:
            continue
        # Submitted by the owner (our driver, or a task of the step) within the step.
        if not start_ns <= min(times.values()) <= end_ns:
            continue
        attempts.append(entry)
        # A finished attempt also needs its worker's report (when it began running).
        complete = complete and (failed in times or (finished in times and running in times))
    stamped = driver is not None and any(
        span.event_name == _END_MARK and step_key in span.extra_data for span in driver.profile_events.events
    )
    return StepTasks(attempts, driver, start_ns, end_ns, complete), stamped
