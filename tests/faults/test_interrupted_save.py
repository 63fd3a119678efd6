"""An artifact save interrupted by SIGKILL (the OOM killer), for every engine.

What must hold: part files may be on the store, but without the manifest (written last)
nothing loads as if complete: the load fails saying the artifact is incomplete. No
process of the killed run's engine is left, and a re-run writes a complete artifact.
(The same on an S3 store: tests/integration/test_datasets.py.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid

import pyarrow as pa
import pytest
from zenml.client import Client

from zenml_compute_engines.materializers import dataset
from zenml_compute_engines.materializers.arrow_table import ArrowTableMaterializer
from tests.faults.conftest import MARK, OWNED
from tests.support import zenml_env

PIPELINES = {  # engine -> (pipeline in tests/integration/slow_pipelines.py, its step)
    "spark": ("slow_spark_save_pipeline", "slow_spark_frame"),
    "dask": ("slow_save_pipeline", "slow_frame"),
    "ray": ("slow_ray_save_pipeline", "slow_ray_frame"),
}


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["spark", "dask", "ray"])
def test_a_save_killed_midway_never_loads_as_complete(zen, report, tmp_path, engine):
    pipeline_name, step_name = PIPELINES[engine]
    stack = zenml_env.activate_engine_stack(engine, OWNED[engine])
    store = Client().active_stack.artifact_store
    root = f"{store.path}/{step_name}"
    marker = uuid.uuid4().hex
    env = {**os.environ, MARK: marker, "ZENML_ACTIVE_STACK_ID": str(stack.id)}
    code = f"from tests.integration.slow_pipelines import {pipeline_name}\n{pipeline_name}()\n"
    log = tmp_path / "killed.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "-c", code], cwd=zenml_env.ROOT_DIR, env=env,
                                   stdout=out, stderr=subprocess.STDOUT)
    try:
        parts = zenml_env.part_files_written(store, root, process)
        assert parts, log.read_text(errors="replace")[-3000:]
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    left = zenml_env.processes_marked(MARK, marker, settle_s=30)
    report("save-killed", engine, leaked=len(left))
    assert left == []

    uri = parts[0].split("/data")[0]
    with pytest.raises(dataset.IncompleteDatasetError, match="incomplete dataset artifact"):
        ArrowTableMaterializer(uri, artifact_store=store).load(pa.Table)

    rerun = subprocess.run([sys.executable, "-c", code], cwd=zenml_env.ROOT_DIR, env={**env, "SLOW_PARTITION_S": "0"},
                           capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, (rerun.stdout + rerun.stderr)[-3000:]
    latest = Client().get_pipeline(pipeline_name).last_run
    assert latest.status.value == "completed"
    complete = latest.steps[step_name].outputs["frame"][0]
    assert dataset.read_manifest(store, complete.uri).num_rows == 12
