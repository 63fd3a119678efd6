"""The demo pipelines against a local ZenML server, and what its dashboard reads from the API.

Each demo runs in a process whose ZenML client talks to the server over REST, so every
lifecycle decision that asks the store (is the run over? which steps are left?) goes
through the server. The test then reads the run back the way the dashboard does: the
step's run metadata from `GET /api/v1/steps/{id}` and each output's preview from
`GET /api/v1/artifact_versions/{id}/visualize?index=0`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
import uuid
from typing import Any, Dict, List

import pytest

from tests.support.zenml_env import ROOT_DIR, processes_marked

MARK = "ZENML_ENGINES_TEST_MARK"
PIPELINES = {"dask": "dask_demo", "spark": "sales_pipeline", "ray": "ray_demo"}
DATASET_MATERIALIZERS = {"SparkDataFrameMaterializer", "DaskDataFrameMaterializer", "RayDatasetMaterializer"}


def _api(server: Any, path: str) -> Any:
    with urllib.request.urlopen(f"{server.url}/api/v1{path}", timeout=30) as response:
        return json.load(response)


def _steps(server: Any, run_id: str) -> List[Dict[str, Any]]:
    listed = _api(server, f"/steps?pipeline_run_id={run_id}&size=100")["items"]
    return [_api(server, f"/steps/{step['id']}") for step in listed]


@pytest.mark.parametrize(
    "demo", ["dask", pytest.param("spark", marks=pytest.mark.slow), pytest.param("ray", marks=pytest.mark.slow)]
)
def test_demo_runs_on_a_zenml_server_and_its_api_serves_engine_metadata_and_previews(zenml_server, demo, tmp_path):
    marker = uuid.uuid4().hex
    # The demo's ZenML repository (its active stack) in a directory of its own, not the checkout.
    env = {**zenml_server.env, MARK: marker, "ZENML_REPOSITORY_PATH": str(tmp_path)}
    completed = subprocess.run(
        [sys.executable, f"examples/{demo}_demo.py"],
        cwd=ROOT_DIR, env=env, capture_output=True, text=True, timeout=600,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output[-4000:]
    # The run's end was recognised over REST: one engine for the whole run, stopped once.
    assert output.count(f"Stopped the {demo} engine") == 1, output[-4000:]
    assert "(its run is over)" in output
    assert processes_marked(MARK, marker, settle_s=20) == []

    run = _api(zenml_server, f"/runs?sort_by=desc:created&size=1&pipeline_name={PIPELINES[demo]}")["items"][0]
    assert run["body"]["status"] == "completed"
    steps = _steps(zenml_server, run["id"])
    engine_facts = [s["metadata"]["run_metadata"]["compute_engine"] for s in steps
                    if "compute_engine" in s["metadata"]["run_metadata"]]
    assert engine_facts, "no step recorded compute_engine metadata"
    assert {f["engine"] for f in engine_facts} == {demo}
    assert {f["mode"] for f in engine_facts} == {"owned"}
    assert {f["engine_starts_in_process"] for f in engine_facts} == {1}
    assert len({f["address"] for f in engine_facts}) == 1  # one engine served every step

    previews = 0
    for step in steps:
        for versions in step["resources"]["outputs"].values():
            for version in versions:
                if version["body"]["materializer"]["attribute"] not in DATASET_MATERIALIZERS:
                    continue
                detail = _api(zenml_server, f"/artifact_versions/{version['id']}")
                metadata = detail["metadata"]["run_metadata"]
                visualization = _api(zenml_server, f"/artifact_versions/{version['id']}/visualize?index=0")
                assert visualization["type"] == "html"
                assert "Schema" in visualization["value"] and "First rows" in visualization["value"]
                assert f"{metadata['num_rows']:,} rows" in visualization["value"]
                previews += 1
    assert previews >= 1
