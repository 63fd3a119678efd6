"""What a step ran on Dask and what it cost, and Dask's performance report of it.

A step's work is told apart by a Dask span (`distributed.span`): the engine adds the span
annotation to the step's other annotations (flavors/dask/engine.py `_step_view`), so every
graph the step's client submits while the step runs, its outputs' writes included, belongs
to that span on the scheduler, whoever else uses the scheduler meanwhile. The figures are
then Dask's own accounting of that span:

- the scheduler's spans extension: the span's task groups (task counts by state, compute
  seconds from the workers' start/stop records of each task) and `Scheduler.erred_tasks`;
- the workers' metrics (`Worker.digests_total`, keyed by span id): bytes spilled and bytes
  sent by P2P shuffles. Read from the workers themselves, because the scheduler's copy
  (`Span.cumulative_worker_metrics`) arrives with the next heartbeat, up to seconds later.

The functions that run on the scheduler and on the workers are nested, so that they are
pickled by value: an attached cluster need not have this package installed.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

from zenml_compute_engines.flavors.usage import StepUsage

if TYPE_CHECKING:
    from distributed import Client

SOURCE = "dask scheduler spans + worker metrics"
REPORT_NAME = "dask_performance_report"


@dataclass(frozen=True)
class StepMark:
    """What the end of a step needs to find its work: its span, its name for the report,
    and where the scheduler's performance report of it begins (scheduler time and
    system-monitor count)."""

    span_id: str
    title: str
    report_start: Optional[float] = None
    report_count: Optional[int] = None


def span_annotation(*tags: str) -> Tuple[str, Dict[str, Any]]:
    """A new span's id and the `span` annotation that puts tasks into it: what
    `distributed.span(*tags)` enters, as a value, so that the engine enters it together
    with the step's other annotations and leaves both at once. Nested in a span the
    caller entered, as `distributed.span` would be."""
    import dask

    outer = dask.get_annotations().get("span")
    ids = tuple(str(uuid.uuid4()) for _ in tags)
    names = (tuple(outer["name"]) if outer else ()) + tags
    return ids[-1], {"name": names, "ids": (tuple(outer["ids"]) if outer else ()) + ids}


def mark_step_start(client: "Client", span_id: str, title: str, report: bool) -> StepMark:
    """The step's mark; with `report`, also where its performance report begins, taken on
    the scheduler (its clock and its task stream, which this makes sure is recording)."""
    if not report:
        return StepMark(span_id, title)

    def report_origin(dask_scheduler: Any) -> Tuple[float, int]:
        from distributed.metrics import time as scheduler_time

        dask_scheduler.get_task_stream(start=0, stop=0)  # installs the task stream plugin
        return scheduler_time(), dask_scheduler.monitor.count

    start, count = client.run_on_scheduler(report_origin)
    return StepMark(span_id, title, report_start=start, report_count=count)


def step_usage(client: "Client", mark: StepMark) -> StepUsage:
    """The step's usage from its span (see the module's docstring; docs/usage.md#dask)."""

    def span_on_scheduler(dask_scheduler: Any, span_id: str) -> Optional[Dict[str, Any]]:
        from distributed.utils import key_split_group

        extension = dask_scheduler.extensions.get("spans")
        span = extension.spans.get(span_id) if extension is not None else None
        if span is None:  # the step submitted nothing: the span never reached the scheduler
            return None
        groups = list(span.traverse_groups())
        names = {group.name for group in groups}
        # Tasks that raised on a worker (not those erred because a dependency did), from
        # the scheduler's recent history: the span's groups forget them once released.
        failed = {
            erred.key
            for erred in dask_scheduler.erred_tasks
            if erred.erred_on and erred.timestamp >= span.enqueued and key_split_group(erred.key) in names
        }
        return {
            "tasks": sum(sum(group.states.values()) for group in groups),
            "failed_tasks": len(failed),
            "compute_s": sum(group.all_durations.get("compute", 0.0) for group in groups),
            "span_ids": [child.id for child in span.traverse_spans()],
        }

    found = client.run_on_scheduler(span_on_scheduler, span_id=mark.span_id)
    if found is None:
        return StepUsage(source=SOURCE, tasks=0, failed_tasks=0, busy_s=0.0, bytes_spilled=0)
    usage = StepUsage(
        source=SOURCE, tasks=found["tasks"], failed_tasks=found["failed_tasks"], busy_s=found["compute_s"]
    )
    spilled, p2p_sent = _worker_bytes(client, found["span_ids"])
    usage.bytes_spilled = spilled
    usage.bytes_shuffled = p2p_sent  # None: no P2P shuffle ran, and Dask counts no other transfer per span
    return usage


def _worker_bytes(client: "Client", span_ids: List[str]) -> Tuple[int, Optional[int]]:
    """(bytes spilled, bytes sent by P2P shuffles or None if none ran) by the tasks of
    these spans, summed over the workers' cumulative metrics. A worker that left the
    cluster took its figures along."""

    def span_metrics(span_ids: List[str], dask_worker: Any) -> Tuple[int, Optional[int]]:
        # Keys (distributed/spans.py): ("execute", span id, task prefix, label, unit) and
        # ("p2p", span id, where, label, unit).
        wanted = set(span_ids)
        spilled, sent, shuffled = 0, 0, False
        for key, value in list(dask_worker.digests_total.items()):
            if not (isinstance(key, tuple) and len(key) >= 4 and key[1] in wanted):
                continue
            kind, _, *rest = key
            if kind == "execute" and tuple(rest[-2:]) == ("disk-write", "bytes"):
                spilled += int(value)  # the SpillBuffer wrote to disk while a task ran
            elif kind == "p2p":
                shuffled = True
                if tuple(rest) == ("background-comms", "process", "bytes"):
                    sent += int(value)  # shards the shuffle sent to the workers
        return spilled, sent if shuffled else None

    spilled, sent = 0, None
    for result in client.run(span_metrics, span_ids, on_error="return").values():
        if isinstance(result, OSError):
            continue  # a worker going away meanwhile (CommClosedError)
        if isinstance(result, BaseException):
            raise result
        spilled += result[0]
        if result[1] is not None:
            sent = (sent or 0) + result[1]
    return spilled, sent


def performance_report(client: "Client", mark: StepMark, scheduler_here: bool) -> str:
    """Dask's performance report (`distributed.performance_report`'s HTML, with BokehJS
    inline so that it opens without network) of the scheduler from the step's start
    until now: every task of that window, another client's too on a shared scheduler.
    `scheduler_here`: the scheduler runs in this process (an owned LocalCluster)."""
    if mark.report_start is None or mark.report_count is None:
        raise ValueError("the step's start was not marked for a report")
    if scheduler_here:
        _find_bokeh_file_template()
    try:
        return client.sync(
            client.scheduler.performance_report,
            start=mark.report_start,
            last_count=mark.report_count,
            code=mark.title,  # shown where Dask shows the code that ran
            mode="inline",
        )
    except Exception as e:
        if "'file.html' not found" not in str(e):
            raise
        raise RuntimeError(
            "the scheduler's Dask cannot render its performance report with its bokeh: bokeh 3.9 "
            "renamed the template file.html, which distributed releases before the fix "
            "(dask/distributed#9205) still extend; upgrade distributed on the scheduler, or "
            "install bokeh<3.9 there"
        ) from e


def _find_bokeh_file_template() -> None:
    """Let this process's Dask render its performance report with bokeh >= 3.9, as later
    distributed releases do (dask/distributed#9205): bokeh renamed its `file.html` template
    to `file.html.jinja`, which Dask's report template extends by the old name. Only where
    that combination is installed; once per process."""
    import os

    import distributed
    from bokeh.core import templates

    shipped = os.path.join(os.path.dirname(distributed.__file__), "dashboard", "templates", "file.html")
    renamed = os.path.join(os.path.dirname(templates.__file__), "_templates", "file.html.jinja")
    if os.path.exists(shipped) or not os.path.exists(renamed) or hasattr(templates.get_env, "_old_file_name"):
        return
    from jinja2 import FileSystemLoader

    class Loader(FileSystemLoader):
        def get_source(self, environment: Any, template: str) -> Any:
            return super().get_source(environment, "file.html.jinja" if template == "file.html" else template)

    bokeh_get_env = templates.get_env

    def get_env() -> Any:
        environment = bokeh_get_env()
        # A FileSystemLoader still: Dask appends its own folder to `searchpath`.
        environment.loader = Loader(list(environment.loader.searchpath))
        return environment

    get_env._old_file_name = True  # type: ignore[attr-defined]
    templates.get_env = get_env


REPORT_FILE = "dask-performance-report.html"
TASK_STREAM_FILE = "task-stream.html"


def task_stream(client: "Client", mark: StepMark) -> List[Dict[str, Any]]:
    """The scheduler's task-stream records from the step's start (those of its report)."""

    def records(dask_scheduler: Any, start: float) -> List[Dict[str, Any]]:
        return dask_scheduler.get_task_stream(start=start)

    return client.run_on_scheduler(records, start=mark.report_start)


def report_facts() -> Dict[str, Any]:
    """How to open the report, for the step's metadata (the core adds the artifact's uri)."""
    return {
        "format": "Dask performance report (self-contained HTML) and a static page of its task stream",
        "open": (
            f"the step's outputs in the ZenML dashboard (the task stream; the report after a download: the "
            f"dashboard runs no scripts in a visualization), or {{uri}}/{REPORT_FILE} in a browser"
        ),
    }

