"""examples/switch_stacks.py: the same pipeline on embedded engines and on attached
clusters (a Spark standalone master + worker and a Dask scheduler + worker on 127.0.0.1)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.support import zenml_env


@pytest.mark.slow
def test_one_pipeline_runs_unchanged_on_dev_and_prod_stacks(zen, tmp_path):
    result = subprocess.run(
        [sys.executable, "examples/switch_stacks.py"],
        cwd=zenml_env.ROOT_DIR,
        # The demo creates a ZenML repository (with its own active stack) where
        # ZENML_REPOSITORY_PATH points: its own, not the session's, which every later child
        # process of this test worker would otherwise find.
        env={**os.environ, "ZENML_REPOSITORY_PATH": str(tmp_path)},
        capture_output=True, text=True, timeout=900,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    dev, prod = output.split("Stack 'dev':")[1].split("Stack 'prod':")
    assert "prepare_orders  ran on spark owned at local[2]" in dev
    assert "summarize       ran on dask owned at tcp://127.0.0.1:" in dev
    assert "prepare_orders  ran on spark attached at spark://127.0.0.1:" in prod
    assert "summarize       ran on dask attached at tcp://127.0.0.1:" in prod
    assert "the clusters kept running after the run: True" in prod
    assert "Identical on both stacks." in output
    # The script stopped its stand-in clusters; nothing of either run is left.
    assert zenml_env.java_children(settle_s=10) == []
