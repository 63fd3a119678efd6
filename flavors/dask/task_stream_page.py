"""A static HTML page of a step's Dask task stream: what the ZenML dashboard can show.

The dashboard shows an HTML visualization in a frame that runs no scripts, and Dask's
performance report draws everything with BokehJS, so there it stays blank until it is
downloaded. This page needs no script: a table per task prefix and the task stream drawn
as SVG (a row per worker thread, a bar per task; hover a bar for its key), from the same
records the report shows (the scheduler's task stream of the step's window).
"""

from __future__ import annotations

import hashlib
import html
from typing import Any, Dict, List, Tuple

_WIDTH = 960
_ROW = 18
_LEFT = 270
_TRANSFER = "#d62728"


def _prefix(key: Any) -> str:
    from dask.utils import key_split

    return key_split(key)


def _colour(prefix: str) -> str:
    """A stable colour per task prefix (as Dask's own charts keep one per prefix)."""
    hue = int(hashlib.md5(prefix.encode()).hexdigest()[:4], 16) % 360
    return f"hsl({hue}, 60%, 55%)"


def render(title: str, records: List[Dict[str, Any]], window_start: float) -> str:
    """The page for `records` (the scheduler's task-stream messages) of step `title`."""
    bars: List[Tuple[str, float, float, str, str]] = []  # row, start, stop, colour, label
    by_prefix: Dict[str, Dict[str, float]] = {}
    for record in records:
        prefix = _prefix(record["key"])
        row = f"{record.get('worker', '?')} thread {record.get('thread', '?')}"
        totals = by_prefix.setdefault(prefix, {"tasks": 0, "compute_s": 0.0, "transfer_s": 0.0})
        totals["tasks"] += 1
        for part in record.get("startstops", ()):
            seconds = part["stop"] - part["start"]
            if part["action"] == "compute":
                totals["compute_s"] += seconds
                bars.append((row, part["start"], part["stop"], _colour(prefix), f"{record['key']}: {seconds * 1000:.1f} ms"))
            elif part["action"] == "transfer":
                totals["transfer_s"] += seconds
                bars.append((row, part["start"], part["stop"], _TRANSFER, f"transfer for {record['key']}"))
    rows = sorted({bar[0] for bar in bars})
    end = max((bar[2] for bar in bars), default=window_start)
    span = max(end - window_start, 1e-3)
    scale = (_WIDTH - _LEFT - 10) / span
    height = _ROW * len(rows) + 30
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{_WIDTH}" height="{height}" font-size="11">']
    for index, row in enumerate(rows):
        svg.append(f'<text x="4" y="{index * _ROW + 13}">{html.escape(row)}</text>')
    for row, start, stop, colour, label in bars:
        x = _LEFT + (start - window_start) * scale
        svg.append(
            f'<rect x="{x:.1f}" y="{rows.index(row) * _ROW + 2}" width="{max((stop - start) * scale, 1):.1f}" '
            f'height="{_ROW - 4}" fill="{colour}"><title>{html.escape(label)}</title></rect>'
        )
    axis_y = _ROW * len(rows) + 20
    svg.append(f'<text x="{_LEFT}" y="{axis_y}">0 s</text>')
    svg.append(f'<text x="{_WIDTH - 10}" y="{axis_y}" text-anchor="end">{span:.2f} s</text></svg>')
    table = "".join(
        f"<tr><td>{html.escape(prefix)}</td><td>{int(t['tasks'])}</td><td>{t['compute_s']:.3f}</td>"
        f"<td>{t['transfer_s']:.3f}</td></tr>"
        for prefix, t in sorted(by_prefix.items(), key=lambda item: -item[1]["compute_s"])
    )
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}: Dask task stream</title>"
        "<style>body{font-family:sans-serif;margin:16px}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}td:first-child{text-align:left}</style>"
        f"</head><body><h3>{html.escape(title)}: Dask task stream</h3>"
        f"<p>{len(records)} tasks the scheduler ran in the step's window ({span:.2f} s; on a shared "
        "scheduler, other clients' tasks of that window too). Dask's own interactive performance report "
        "is this artifact's second visualization: download it to open it in a browser.</p>"
        "<table><tr><th>task prefix</th><th>tasks</th><th>compute s</th><th>transfer s</th></tr>"
        f"{table}</table><p>{''.join(svg)}</p></body></html>"
    )
