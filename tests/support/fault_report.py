"""The fault suite's report (the results table of docs/reliability.md), as a pytest plugin.

Each case records what it injected and found on its test item (`user_properties`), which
travels with the test's report; the table is printed by whichever process prints the
session summary, so it is whole when tests run in parallel worker processes too.
"""

from __future__ import annotations

from typing import Any, Dict, List

import pytest

PROPERTY = "fault"
_rows: List[Dict[str, Any]] = []


@pytest.fixture
def report(request: pytest.FixtureRequest):
    """Record one injected fault: `report(case, engine, leaked=0, hung=False, orphan_s=None, secrets=0)`."""

    def add(case: str, engine: str, leaked: int = 0, hung: bool = False,
            orphan_s: float | None = None, secrets: int = 0) -> None:
        row = dict(case=case, engine=engine, leaked=leaked, hung=hung, orphan_s=orphan_s, secrets=secrets)
        request.node.user_properties.append((PROPERTY, row))

    return add


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "teardown":  # carries every property the test recorded
        _rows.extend(row for name, row in report.user_properties if name == PROPERTY)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _rows:
        return
    write = terminalreporter.write_line
    write("")
    write("fault suite (docs/reliability.md results table): engine | faults injected | processes leaked | "
          "runs hung | max s until SIGKILL orphans gone | secrets seen")
    for engine in sorted({row["engine"] for row in _rows}):
        rows = [r for r in _rows if r["engine"] == engine]
        orphans = [r["orphan_s"] for r in rows if r["orphan_s"] is not None]
        orphan = f"{max(orphans):.1f}" if orphans else "-"
        leaked, hung, secrets = (sum(r[key] for r in rows) for key in ("leaked", "hung", "secrets"))
        write(f"  {engine} | {len(rows)} | {leaked} | {hung} | {orphan} | {secrets}")
