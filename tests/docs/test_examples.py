"""Every Python and shell block of the README and of docs/getting-started.md runs, in order,
as a reader would type it, in a scratch ZenML repository of its own.

How a page runs (`run_page`):
- a fresh ZenML config (`ZENML_CONFIG_PATH`) and an empty directory as the reader's repo, none
  of the test session's ZenML settings; this venv's `zenml`, `zenml-compute-engines` and
  `python` first on PATH;
- a `bash` block runs with `bash -e` in the repo; a `python` block runs as a script of its own
  (`python block.py`), so that Ray, Dask's worker processes and Spark's JVM live in that
  process, never in pytest's; a `python` block whose first line names a file (`# pipeline.py`)
  is saved under that name for a later shell block to run, which the page must do;
- a `text` block marked `<!-- doc-test: output -->` lists lines the block before it must print;
- `http://127.0.0.1:9050` / `127.0.0.1:9060` (bqemulator's default REST and gRPC addresses)
  are replaced by the addresses of the emulator the test session starts on free ports, so
  that two test workers never share a port;
- Ray runs without token authentication (`RAY_AUTH_MODE=disabled`), as in the rest of the
  suite (tests/support/ray_cluster.py);
- afterwards no process the page started may be left (they carry a marker in their environment).

A block marked `<!-- doc-test: skip: <reason> -->` (an install that would create venvs, a
production cluster's address) is not run: `test_marked_blocks_are_skipped_visibly` reports
it as skipped with its reason, so that `pytest -ra` lists every block left out and why.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

from tests.docs import pages
from tests.docs.pages import Block
from tests.support import zenml_env

RUN_PAGES = [pages.ROOT / "README.md", pages.DOCS / "getting-started.md"]
MARK = "ZENML_ENGINES_DOC_TEST_MARK"
EMULATOR_REST, EMULATOR_GRPC = "http://127.0.0.1:9050", "127.0.0.1:9060"
BLOCK_TIMEOUT_S = 600


def _page_id(page: Path) -> str:
    return str(page.relative_to(pages.ROOT))


def _scratch_env(home: Path, marker: str) -> Dict[str, str]:
    """The reader's shell: this venv first on PATH, a ZenML config of its own."""
    kept = {"ZENML_ENGINES_CACHE_DIR"}  # where the Spark class archive was recorded, if set
    env = {k: v for k, v in os.environ.items() if k in kept or not k.startswith(("ZENML_", "PYTHON"))}
    return {
        **env,
        "PATH": f"{Path(sys.executable).parent}:{env['PATH']}",
        "ZENML_CONFIG_PATH": str(home / "zenml-config"),
        "ZENML_ANALYTICS_OPT_IN": "false",
        "ZENML_ENABLE_RICH_TRACEBACK": "false",
        "ZENML_LOGGING_COLORS_DISABLED": "true",
        "AUTO_OPEN_DASHBOARD": "false",
        "RAY_AUTH_MODE": "disabled",
        "RAY_USAGE_STATS_ENABLED": "0",
        MARK: marker,
    }


def _command(block: Block, repo: Path) -> List[str]:
    if block.lang == "python":
        script = repo / f"doc_block_{block.line}.py"
        script.write_text(block.code)
        return [sys.executable, script.name]
    return ["bash", "-e", "-c", block.code]


def _check_page(page_blocks: List[Block]) -> None:
    """A saved file must be run by a later shell block; an output block must follow a run."""
    for i, block in enumerate(page_blocks):
        if block.saved_as and not any(block.saved_as in later.code for later in page_blocks[i + 1:]
                                      if later.lang in pages.SHELL and not later.skip_reason):
            raise AssertionError(f"{block.where} is saved as {block.saved_as}, which no later block runs")
        if block.is_expected_output and (i == 0 or not page_blocks[i - 1].runnable or page_blocks[i - 1].skip_reason):
            raise AssertionError(f"{block.where}: an output block must follow a block that runs")


def run_page(page: Path, home: Path, substitutions: Dict[str, str]) -> List[Tuple[str, float]]:
    """Run `page`'s blocks in a scratch repo under `home`; (block, seconds) of each run."""
    page_blocks = pages.blocks(page)
    _check_page(page_blocks)
    repo = home / "repo"
    repo.mkdir(parents=True)
    marker = uuid.uuid4().hex
    env = _scratch_env(home, marker)
    timings: List[Tuple[str, float]] = []
    output = ""
    try:
        for block in page_blocks:
            if block.is_expected_output:
                missing = [line for line in block.code.splitlines() if line.strip() and line.strip() not in output]
                assert not missing, f"{block.where}: the block before did not print {missing}\n{output[-3000:]}"
                continue
            if not block.runnable or block.skip_reason:
                continue
            for documented, actual in substitutions.items():
                block = Block(block.page, block.line, block.lang, block.code.replace(documented, actual), block.marker)
            if block.saved_as:
                (repo / block.saved_as).write_text(block.code)
                continue
            began = time.monotonic()
            done = subprocess.run(_command(block, repo), cwd=repo, env=env, capture_output=True, text=True,
                                  timeout=BLOCK_TIMEOUT_S)
            timings.append((block.where, round(time.monotonic() - began, 1)))
            output = done.stdout + done.stderr
            assert done.returncode == 0, f"{block.where} failed (exit {done.returncode}):\n{block.code}\n{output[-6000:]}"
    finally:
        left = zenml_env.processes_marked(MARK, marker, settle_s=20)
        zenml_env.kill_quietly(left)
    assert left == [], f"processes left after {_page_id(page)}'s examples: {zenml_env.describe(left)}"
    return timings


@pytest.mark.slow  # a scratch ZenML repo, a dozen CLI calls and a pipeline per engine: minutes
@pytest.mark.parametrize("page", RUN_PAGES, ids=_page_id)
def test_every_example_of_the_page_runs(page, tmp_path, request):
    runnable = [b for b in pages.blocks(page) if b.runnable and not b.skip_reason]
    assert runnable, f"{_page_id(page)} has no runnable example"
    substitutions: Dict[str, str] = {}
    if any(EMULATOR_REST in b.code for b in runnable):
        emulator, _ = request.getfixturevalue("bq_emulator")
        substitutions = {EMULATOR_REST: emulator.rest_url, EMULATOR_GRPC: emulator.grpc_endpoint}
    began = time.monotonic()
    timings = run_page(page, tmp_path, substitutions)
    print(f"RESULT doc_examples_{page.stem.replace('-', '_')}_s value={time.monotonic() - began:.1f}")
    for where, seconds in timings:
        print(f"  {where}: {seconds} s")


SKIPPED = [b for page in RUN_PAGES for b in pages.blocks(page) if b.runnable and b.skip_reason]


@pytest.mark.parametrize("block", SKIPPED, ids=[b.where for b in SKIPPED])
def test_marked_blocks_are_skipped_visibly(block):
    pytest.skip(f"{block.where} not run: {block.skip_reason}")


@pytest.mark.parametrize("page", pages.pages(), ids=_page_id)
def test_every_code_block_names_its_language_and_markers_are_known(page):
    """An untagged block would escape the runner unnoticed; a misspelled marker too."""
    for block in pages.blocks(page):
        assert block.lang, f"{block.where}: a code block without a language"
    for line, body in pages.markers(page):
        assert body == "output" or (body.startswith("skip:") and body[len("skip:"):].strip()), (
            f"{_page_id(page)}:{line}: unknown doc-test marker {body!r} (known: 'skip: <reason>', 'output')"
        )
    blocks = pages.blocks(page)
    lines_before = {b.line - 1 for b in blocks}
    for line, _ in pages.markers(page):
        assert line in lines_before, f"{_page_id(page)}:{line}: a doc-test marker must stand right before a fence"


@pytest.mark.parametrize("page", pages.pages(), ids=_page_id)
def test_python_blocks_of_every_page_are_valid_python(page):
    """Blocks of the pages the runner does not execute still compile."""
    import ast

    for block in pages.blocks(page):
        if block.lang == "python":
            try:
                ast.parse(block.code)
            except SyntaxError as e:
                raise AssertionError(f"{block.where}: {e}") from None
