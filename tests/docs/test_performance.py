"""docs/img/performance.svg and docs/performance.md's figures come from bench/results/latest.txt."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ElementTree

from bench import chart
from tests.docs import pages

PERFORMANCE = pages.DOCS / "performance.md"


def test_the_committed_chart_is_what_the_script_draws_from_the_committed_results():
    drawn = chart.render(chart.read_results())
    assert chart.SVG.read_text() == drawn, "docs/img/performance.svg is stale: run .venv/bin/python bench/chart.py"
    assert chart.main(["--check"]) == 0


def test_the_chart_is_valid_svg_with_a_bar_per_figure():
    root = ElementTree.fromstring(chart.SVG.read_text())
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    texts = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
    for label, _ in chart.ENGINES:
        assert label in texts
    for figure in chart.ARTIFACT_FIGURES:
        assert figure.label in texts
    width = float(root.get("width"))
    for rect in root.iter("{http://www.w3.org/2000/svg}rect"):
        assert float(rect.get("x", 0)) + float(rect.get("width")) <= width


def test_the_seed_bar_is_derived_from_the_two_ratios(tmp_path):
    """Ours / floor and ours / seed give seed / floor: with ours = 0.5 of the floor and 0.25
    of the seed, the seed's pattern takes twice the floor."""
    results = tmp_path / "results.txt"
    lines = ["# a comment", "not a result"]
    for _, key in chart.ENGINES:
        lines += [f"RESULT {key}_vs_floor ratio=0.500", f"RESULT {key}_reuse ratio=0.250"]
    results.write_text("\n".join(lines) + "\n")
    parsed = chart.read_results(results)
    assert parsed == {f"{key}_{kind}": value for _, key in chart.ENGINES
                      for kind, value in (("vs_floor", 0.5), ("reuse", 0.25))}
    svg = chart.render(parsed)
    assert svg.count(">2.00</text>") == 3 and svg.count(">0.50</text>") == 3 and svg.count(">1.00</text>") == 3


def test_the_figures_table_holds_the_numbers_of_the_results_file():
    results = chart.read_results()
    table = next(t for t in pages.tables(PERFORMANCE) if t[0][:2] == ["figure", "value"])
    documented = {}
    for row in table[1:]:
        name = re.fullmatch(r"`([a-z0-9_]+)`", row[0])
        assert name, f"performance.md: the figure cell {row[0]!r} must be one `name`"
        documented[name.group(1)] = float(row[1])
    assert documented == results, (
        f"performance.md's table and bench/results/latest.txt differ: "
        f"{ {k: (documented.get(k), results.get(k)) for k in set(documented) | set(results) if documented.get(k) != results.get(k)} }"
    )
