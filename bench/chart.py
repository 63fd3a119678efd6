"""Draw docs/img/performance.svg from the bench's RESULT lines (bench/results/latest.txt).

    .venv/bin/python bench/chart.py            # writes docs/img/performance.svg
    .venv/bin/python bench/chart.py --check    # exit 1 if the committed SVG differs

Two panels, both from ratios the bench scripts print (no timing is read from anywhere else):

1. Engine lifecycle, per engine (bench/engine_reuse.py): a five-step pipeline's time
   relative to the hand-written floor (one engine built by hand, never stopped during the
   run = 1). Ours is `<engine>_vs_floor`; the seed's pattern (an engine started and stopped
   in every step) is `<engine>_vs_floor / <engine>_reuse`, since `_reuse` is ours / seed.
2. Artifacts: ours relative to the alternative each figure names (= 1), with its target.

Plain SVG text, no plotting library: the output is the same bytes for the same input, so a
test can compare the committed picture with what this script draws from the committed data.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "latest.txt"
SVG = ROOT / "docs" / "img" / "performance.svg"

_RESULT = re.compile(r"^RESULT (?P<name>\S+) (?:ratio|value)=(?P<number>-?[0-9.]+)\s*$")

ENGINES = (("Spark", "spark"), ("Dask", "dask"), ("Ray", "ray"))
SERIES = (  # label, colour
    ("seed's pattern: an engine per step", "#d95f02"),
    ("ours: one engine per run, from the stack", "#1b9e77"),
    ("hand-written floor: one engine, never stopped", "#7570b3"),
)


@dataclass(frozen=True)
class Figure:
    """One artifact figure: its RESULT name, what it compares and its target."""

    name: str
    label: str
    target: Optional[float]


ARTIFACT_FIGURES = (
    Figure("spark_artifacts_vs_zenml", "Spark: ours / ZenML's Spark materializer", 0.60),
    Figure("spark_artifacts_vs_raw", "Spark: ours / df.write.parquet + read", 1.10),
    Figure("dask_artifacts", "Dask: ours / to_parquet + read_parquet", 1.15),
    Figure("s3_vs_raw", "Spark on S3: ours / pyarrow on s3fs", 1.30),
    Figure("handoff", "Spark to Dask: ours / from_pandas(toPandas())", 0.50),
    Figure("bq_vs_pandas", "BigQuery: by reference / via pandas", 0.10),
)

WIDTH = 760
LABEL_W = 300  # left column for labels
PLOT_W = WIDTH - LABEL_W - 70
BAR_H = 14
FONT = "font-family=\"Helvetica, Arial, sans-serif\""


def read_results(path: Path = RESULTS) -> Dict[str, float]:
    """`{name: number}` of the RESULT lines in `path` (other lines are comments)."""
    results: Dict[str, float] = {}
    for line in path.read_text().splitlines():
        match = _RESULT.match(line.strip())
        if match:
            results[match.group("name")] = float(match.group("number"))
    return results


def _n(x: float) -> str:
    """A coordinate, rounded so that the SVG is stable across platforms."""
    text = f"{x:.1f}"
    return text[:-2] if text.endswith(".0") else text


def _text(x: float, y: float, text: str, size: int = 12, anchor: str = "start", weight: str = "normal") -> str:
    safe = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return (f'<text x="{_n(x)}" y="{_n(y)}" font-size="{size}" text-anchor="{anchor}" '
            f'font-weight="{weight}" {FONT}>{safe}</text>')


def _bar(x: float, y: float, w: float, colour: str) -> str:
    return f'<rect x="{_n(x)}" y="{_n(y)}" width="{_n(max(w, 1.0))}" height="{BAR_H}" fill="{colour}"/>'


def _axis(top: float, bottom: float, scale: float, maximum: float) -> List[str]:
    """Vertical grid lines at every 0.5, with the 1.0 line (the baseline) drawn dark."""
    out = []
    step = 0.5
    tick = 0.0
    while tick <= maximum + 1e-9:
        x = LABEL_W + tick * scale
        colour, width = ("#333333", 1.5) if abs(tick - 1.0) < 1e-9 else ("#dddddd", 1)
        out.append(f'<line x1="{_n(x)}" y1="{_n(top)}" x2="{_n(x)}" y2="{_n(bottom)}" stroke="{colour}" stroke-width="{width}"/>')
        out.append(_text(x, bottom + 14, f"{tick:g}", size=10, anchor="middle"))
        tick += step
    return out


def _lifecycle_panel(results: Dict[str, float], top: float) -> Tuple[List[str], float]:
    """The lifecycle panel's elements, and the y below it."""
    rows = []
    for label, key in ENGINES:
        ours = results[f"{key}_vs_floor"]
        rows.append((label, (ours / results[f"{key}_reuse"], ours, 1.0)))
    maximum = max(value for _, values in rows for value in values)
    scale = PLOT_W / (maximum * 1.05)
    out = [_text(16, top, "Engine lifecycle: a five-step pipeline, time relative to the hand-written floor (= 1)",
                 size=14, weight="bold")]
    y = top + 16
    for (series_label, colour) in SERIES:  # legend
        out.append(f'<rect x="{_n(LABEL_W)}" y="{_n(y)}" width="10" height="10" fill="{colour}"/>')
        out.append(_text(LABEL_W + 16, y + 9, series_label, size=11))
        y += 16
    y += 8
    plot_top, bars = y, []
    for label, values in rows:
        bars.append(_text(LABEL_W - 10, y + 3 * BAR_H / 2 + 6, label, size=13, anchor="end", weight="bold"))
        for value, (_, colour) in zip(values, SERIES):
            bars.append(_bar(LABEL_W, y, value * scale, colour))
            bars.append(_text(LABEL_W + value * scale + 4, y + BAR_H - 3, f"{value:.2f}", size=10))
            y += BAR_H + 2
        y += 12
    return out + _axis(plot_top - 4, y - 8, scale, maximum * 1.05) + bars, y + 14


def _artifacts_panel(results: Dict[str, float], top: float) -> Tuple[List[str], float]:
    """The artifacts panel's elements, and the y below it."""
    figures = [f for f in ARTIFACT_FIGURES if f.name in results]
    maximum = max([results[f.name] for f in figures] + [f.target or 0 for f in figures] + [1.0])
    scale = PLOT_W / (maximum * 1.05)
    out = [_text(16, top, "Artifacts: ours relative to the alternative (= 1); the tick is the target",
                 size=14, weight="bold")]
    y = top + 18
    plot_top, bars = y, []
    for figure in figures:
        value = results[figure.name]
        bars.append(_text(LABEL_W - 10, y + BAR_H - 3, figure.label, size=11, anchor="end"))
        bars.append(_bar(LABEL_W, y, value * scale, SERIES[1][1]))
        bars.append(_text(LABEL_W + value * scale + 4, y + BAR_H - 3, f"{value:.3f}", size=10))
        if figure.target is not None:
            x = LABEL_W + figure.target * scale
            bars.append(f'<line x1="{_n(x)}" y1="{_n(y - 2)}" x2="{_n(x)}" y2="{_n(y + BAR_H + 2)}" '
                        f'stroke="#e7298a" stroke-width="2.5"/>')
        y += BAR_H + 8
    return out + _axis(plot_top - 4, y - 4, scale, maximum * 1.05) + bars, y + 18


def render(results: Dict[str, float], source: str = "bench/results/latest.txt") -> str:
    """The whole SVG for `results` (RESULT name -> number)."""
    body, bottom = _lifecycle_panel(results, top=28)
    artifacts, bottom = _artifacts_panel(results, top=bottom + 24)
    body += artifacts
    height = bottom + 22
    body.append(_text(16, height - 10, f"Lower is better. Drawn by bench/chart.py from the RESULT lines in {source}.",
                      size=10))
    return "\n".join([
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{_n(height)}" '
        f'viewBox="0 0 {WIDTH} {_n(height)}">',
        f'<rect width="{WIDTH}" height="{_n(height)}" fill="white"/>',
        *body,
        "</svg>",
        "",
    ])


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=RESULTS, help="a file of RESULT lines")
    parser.add_argument("--out", type=Path, default=SVG, help="the SVG to write")
    parser.add_argument("--check", action="store_true", help="compare with --out instead of writing it")
    arguments = parser.parse_args(argv)
    svg = render(read_results(arguments.results))
    if arguments.check:
        if not arguments.out.exists() or arguments.out.read_text() != svg:
            print(f"{arguments.out} is not what bench/chart.py draws from {arguments.results}; run bench/chart.py",
                  file=sys.stderr)
            return 1
        return 0
    arguments.out.parent.mkdir(parents=True, exist_ok=True)
    arguments.out.write_text(svg)
    print(f"wrote {arguments.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
