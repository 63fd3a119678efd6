"""Each Dask step's usage, counted by Dask for that step only, and its performance report
kept as an artifact of the run (docs/usage.md#dask), against real Dask clusters."""

from __future__ import annotations

import html.parser
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.test_dask_engine import IN_PROCESS, TINY, dask_stack  # noqa: F401 (fixture)
from tests.support import zenml_env
from tests.support.dask_cluster import ROOT

SOURCE = "dask scheduler spans + worker metrics"


def _usage(run, step: str) -> dict:
    return zenml_env.step_metadata(run, step)["usage"]


def test_steps_on_one_owned_cluster_count_their_own_tasks(dask_stack):
    from tests.integration.dask_usage_pipelines import two_counted_steps

    dask_stack(**TINY)  # worker processes: their metrics are read across processes
    run = two_counted_steps()

    three, five, shuffled = (_usage(run, step) for step in ("three", "five", "shuffle_frame"))
    assert (three["tasks"], five["tasks"]) == (3, 5)  # client.map over 3, then 5 items
    for usage in (three, five):
        assert usage["source"] == SOURCE
        assert usage["failed_tasks"] == 0 and usage["bytes_spilled"] == 0
        assert usage["busy_s"] >= 0
        assert "bytes_shuffled" not in usage  # no P2P shuffle ran
        assert "bytes_read" not in usage and "peak_memory_bytes" not in usage  # Dask reports neither per step
    # A P2P shuffle of 4 partitions: its tasks, and the shards it sent.
    assert shuffled["tasks"] > 4 and shuffled["bytes_shuffled"] > 0
    assert "record" not in zenml_env.step_metadata(run, "three")  # keep_step_record is off by default


@pytest.mark.slow
def test_a_step_on_a_shared_cluster_counts_only_its_own_tasks(dask_stack, dask_cluster, tmp_path, caplog):
    """Another client keeps the attached cluster's one worker busy while our step runs."""
    from tests.integration.dask_usage_pipelines import slow_counted_step

    count_file = tmp_path / "other.count"
    code = (
        "import os, time\n"
        "from distributed import Client\n"
        "def other_client_work(i):\n"
        "    time.sleep(0.05)\n"
        "    return i\n"
        f"client = Client({dask_cluster.address!r}, timeout='20s')\n"
        "done = 0\n"
        "while True:\n"
        "    client.submit(other_client_work, done, pure=False).result()\n"
        "    done += 1\n"
        f"    open({str(count_file)!r} + '.tmp', 'w').write(str(done))\n"
        f"    os.replace({str(count_file)!r} + '.tmp', {str(count_file)!r})\n"
    )
    other = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=dict(os.environ))
    try:
        deadline = time.time() + 60
        while not count_file.exists() and other.poll() is None and time.time() < deadline:
            time.sleep(0.1)
        assert count_file.exists(), "the other client ran no task"
        dask_stack(scheduler_address=dask_cluster.address, startup_timeout_s=30, keep_step_record=True)
        before = int(count_file.read_text())
        run = slow_counted_step(count=6, pause_s=0.3)
        during = int(count_file.read_text()) - before
    finally:
        other.kill()
        other.wait()
    assert during > 0  # the other client's tasks ran while ours did
    usage = _usage(run, "ours")
    assert usage["tasks"] == 6 and usage["failed_tasks"] == 0
    assert usage["busy_s"] >= 6 * 0.3 * 0.9  # our tasks' compute time; theirs is not in it
    if _scheduler_renders_reports():
        # The report covers the scheduler's time window of the step: the other client's tasks too.
        report = _report_text(run, "ours")
        assert "usage_square" in report and "other_client_work" in report
    else:  # this venv's `dask scheduler` (distributed 2025.1 with bokeh >= 3.9): told, not patched
        assert "record" not in zenml_env.step_metadata(run, "ours")
        assert "dask/distributed#9205" in caplog.text


def _scheduler_renders_reports() -> bool:
    """Whether this venv's distributed renders its performance report with its bokeh (the
    attached cluster's scheduler runs from this venv): it does where distributed ships
    its bokeh >= 3.9 template shim, or bokeh is older."""
    import distributed
    from bokeh.core import templates

    return (Path(distributed.__file__).parent / "dashboard" / "templates" / "file.html").exists() or not (
        Path(templates.__file__).parent / "_templates" / "file.html.jinja"
    ).exists()


def test_usage_is_recorded_after_a_failed_step(dask_stack):
    from zenml.client import Client

    from tests.integration.dask_usage_pipelines import failing_counted_step

    dask_stack(**IN_PROCESS)
    with pytest.raises(Exception, match="map_then_fail"):
        failing_counted_step()
    run = Client().get_pipeline("failing_counted_step").last_run
    assert run.steps["map_then_fail"].status.value == "failed"
    usage = _usage(run, "map_then_fail")
    assert (usage["tasks"], usage["failed_tasks"]) == (5, 1)  # 4 that succeeded, 1 that raised


class _Tags(html.parser.HTMLParser):
    """The tags of a document, and whether they close in order."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list = []
        self.open: list = []

    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}

    def handle_starttag(self, tag, attrs) -> None:
        self.tags.append(tag)
        if tag not in self.VOID:
            self.open.append(tag)

    def handle_startendtag(self, tag, attrs) -> None:  # <tag ... />
        self.tags.append(tag)

    def handle_endtag(self, tag) -> None:
        assert self.open and self.open[-1] == tag, f"</{tag}> closes {self.open[-1:]}"
        self.open.pop()


def _report_artifact(run, step: str):
    record = zenml_env.step_metadata(run, step)["record"]
    outputs = run.steps[step].outputs
    assert record["artifact"] in outputs, list(outputs)  # linked to the step run
    return record, outputs[record["artifact"]][0]


def _report_text(run, step: str) -> str:
    return _report_artifact(run, step)[1].load().pages["dask-performance-report.html"]


def test_the_performance_report_is_the_steps_html_visualization(dask_stack):
    from zenml.enums import VisualizationType

    from tests.integration.dask_usage_pipelines import reported_step

    dask_stack(**IN_PROCESS, keep_step_record=True)
    run = reported_step()

    record, artifact = _report_artifact(run, "report_marker")
    assert record["artifact"] == "reported_step::report_marker::dask_performance_report"
    assert record["uri"] == artifact.uri
    assert record["open"].endswith(f"{artifact.uri}/dask-performance-report.html in a browser")
    pages = artifact.load().pages
    assert list(pages) == ["task-stream.html", "dask-performance-report.html"]
    for page in pages.values():
        parser = _Tags()
        parser.feed(page)
        parser.close()
        assert parser.tags[:1] == ["html"] and parser.open == []
        assert "usage_report_marker" in page  # the step's task prefix, in the task stream
    text = pages["dask-performance-report.html"]
    assert "Dask Performance Report" in text
    assert "cdn.bokeh.org" not in text  # BokehJS inline: opens without network
    # The static page needs no script (the dashboard runs none in a visualization).
    assert "<script" not in pages["task-stream.html"] and "<svg" in pages["task-stream.html"]
    assert [v.type for v in artifact.visualizations] == [VisualizationType.HTML, VisualizationType.HTML]
    assert artifact.visualizations[0].uri.endswith("task-stream.html")
    assert _usage(run, "report_marker")["tasks"] == 4
