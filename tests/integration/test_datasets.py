"""The dataset format across engines and stores: any writer to any reader, S3 and GCS,
atomic commits, and ZenML's materializer contract.

Pipelines run in processes of their own (tests/integration/dataset_pipelines.py), one
engine each, on stacks this module registers in the session's ZenML store: a Spark
`local[2]`, a Dask cluster of threads and a one-CPU Ray, all owned and on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any, Dict, List

import pyarrow as pa
import pytest

from tests.support import zenml_env
from tests.support.contract import check_materializer_contract
from tests.support.object_stores import S3_SECRET, activate_store_stack
from tests.support.ray_cluster import AUTH_ENV

ROOT = Path(zenml_env.ROOT_DIR)
ENGINES = {
    "spark": {"master": "local[2]", "ui_enabled": False},
    "dask": {"processes": False, "n_workers": 1, "threads_per_worker": 2},
    "ray": {"num_cpus": 1, "object_store_memory": "100MB", "startup_timeout_s": 60},
}
KINDS = ("spark", "dask", "ray", "arrow", "pandas")
# Which engine's stack each writer and reader runs on (Arrow and pandas need none).
HOME = {"spark": "spark", "dask": "dask", "ray": "ray", "arrow": "dask", "pandas": "dask"}


def run_pipeline(name: str, stack_id: Any, log: Path, timeout: float = 300, **kwargs: Any) -> Any:
    """Run a pipeline of dataset_pipelines.py in a fresh process on the stack `stack_id`."""
    from zenml.client import Client

    env = {**os.environ, **AUTH_ENV, "ZENML_ACTIVE_STACK_ID": str(stack_id)}
    command = [sys.executable, "-m", "tests.integration.dataset_pipelines", name, json.dumps(kwargs)]
    with open(log, "wb") as handle:
        result = subprocess.run(command, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT, timeout=timeout)
    output = log.read_text(errors="replace")
    assert result.returncode == 0, output[-4000:]
    assert "BARE_MODULES []" in output, output[-4000:]
    run_id = next(line.split()[1] for line in output.splitlines() if line.startswith("RUN_ID "))
    return Client().get_pipeline_run(run_id)


@pytest.fixture(scope="module")
def engine_stacks(zen) -> Dict[str, Any]:
    return {engine: zenml_env.register_engine_stack(engine, config).id for engine, config in ENGINES.items()}


def test_a_run_from_this_checkout_records_and_imports_our_modules_by_their_installed_names(engine_stacks, zen, tmp_path):
    """This checkout is the source root, where ZenML names a class by its file's path
    (`materializers.dask_dataframe`); ours must be recorded as installed, and the run must
    import nothing under the bare names (`run_pipeline` checks that for every run)."""
    from zenml.enums import StackComponentType

    run = run_pipeline("round_trip", engine_stacks["dask"], tmp_path / "round-trip.log", engine="dask", n=100)
    artifact = run.steps["make_dask"].outputs["frame"][0]
    assert artifact.materializer.import_path == (
        "zenml_compute_engines.materializers.dask_dataframe.DaskDataFrameMaterializer"
    )
    assert artifact.materializer.package_name == "zenml-compute-engines"
    assert artifact.load()["id"].sum().compute() == sum(range(100))
    flavor = zen.get_flavor_by_name_and_type("dask", StackComponentType.FEATURE_STORE)
    assert flavor.source == "zenml_compute_engines.flavors.dask.flavor.DaskEngineFlavor"


@pytest.mark.slow
def test_every_writer_loads_as_every_type(engine_stacks, tmp_path):
    from tests.integration.dataset_pipelines import canonical, types_table

    # One run of writers, then one of readers, per engine's stack (Arrow and pandas on Dask's).
    homed = {engine: [kind for kind in KINDS if HOME[kind] == engine] for engine in ("spark", "dask", "ray")}
    artifact_ids: Dict[str, str] = {}
    for engine, writers in homed.items():
        run = run_pipeline("write_with", engine_stacks[engine], tmp_path / f"write-{engine}.log", writers=writers)
        for writer in writers:
            artifact = run.steps[f"write_{writer}"].outputs[writer][0]
            artifact_ids[writer] = str(artifact.id)
            assert artifact.run_metadata["num_rows"] == 3 and artifact.run_metadata["num_columns"] == 10

    expected = canonical(types_table())
    for engine, readers in homed.items():
        run = run_pipeline("read_as", engine_stacks[engine], tmp_path / f"read-{engine}.log", kinds=readers,
                           artifact_ids=artifact_ids)
        for reader in readers:
            for writer in KINDS:
                got = run.steps[f"{writer}_as_{reader}"].outputs["read"][0].load()
                assert got["rows"] == expected, f"{writer} -> {reader}"
    # The engines of every run were stopped with it.
    assert zenml_env.java_children(settle_s=10) == []


def test_manifest_schema_is_engine_neutral():
    from zenml_compute_engines.materializers.dataset import neutral_schema

    written_by_dask = pa.schema(
        [("s", pa.large_string()), ("l", pa.large_list(pa.large_string())), ("m", pa.struct([("b", pa.large_binary())]))]
    )
    assert str(neutral_schema(written_by_dask)) == str(
        pa.schema([("s", pa.string()), ("l", pa.list_(pa.field("item", pa.string()))), ("m", pa.struct([("b", pa.binary())]))])
    )


# ---- object stores ------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ["spark", "dask", "ray"])
@pytest.mark.parametrize("store", ["s3", "gcs"])
def test_engines_save_and_load_on_object_stores(store, engine, request, tmp_path, zen):
    from zenml.client import Client

    from zenml_compute_engines.materializers import dataset

    server = request.getfixturevalue(f"{store}_server")
    stack = activate_store_stack(store, server, engine, ENGINES[engine])
    # Spark's two partitions then span several of the 10,000-row Arrow batches it hands to Python.
    n = 50_000 if engine == "spark" else 1000
    run = run_pipeline("round_trip", stack.id, tmp_path / "run.log", engine=engine, n=n)
    assert run.steps[f"sum_{engine}"].outputs["summary"][0].load() == {"rows": n, "x": sum(i * 0.5 for i in range(n))}

    artifact = run.steps[f"make_{engine}"].outputs["frame"][0]
    prefix = "s3://" if store == "s3" else "gs://"
    assert artifact.uri.startswith(prefix)
    manifest = dataset.read_manifest(Client().active_stack.artifact_store, artifact.uri)
    assert manifest.num_rows == n and manifest.files
    assert [c["name"] for c in manifest.schema] == ["id", "k", "x"]
    meta = artifact.run_metadata
    assert meta["num_rows"] == n and meta["num_files"] == len(manifest.files)
    if engine == "spark":
        # No Hadoop connector jar here: the embedded engine's writer staged the part files
        # on its own disk and its executors uploaded them; they read with pyarrow + fsspec.
        assert meta["written_via"] == "spark (local staging) + executors (fsspec upload)"
        assert run.steps["make_spark"].run_metadata["dataset_written_via"] == meta["written_via"]
        assert run.steps["sum_spark"].run_metadata["dataset_read_via"] == "spark executors (pyarrow + fsspec)"
        assert _row_groups(artifact.uri, manifest) == [1] * len(manifest.files)
        # A fresh process that never wrote finds out the same way when it reads.
        reader = run_pipeline("count_in_spark", stack.id, tmp_path / "read.log", artifact_id=str(artifact.id))
        assert reader.steps["count_spark"].outputs["rows"][0].load() == n
        assert reader.steps["count_spark"].run_metadata["dataset_read_via"] == "spark executors (pyarrow + fsspec)"
    assert artifact.visualizations
    if store == "s3":
        bucket, _, key = artifact.uri[len(prefix):].partition("/")
        keys = server.keys(bucket, key)
        assert f"{key}/_manifest.json" in keys and f"{key}/preview.html" in keys
        assert sum(k.startswith(f"{key}/data/") and k.endswith(".parquet") for k in keys) == len(manifest.files)
    # The store's key came from a ZenML secret; it shows up nowhere the run wrote.
    assert S3_SECRET not in (tmp_path / "run.log").read_text(errors="replace")
    assert S3_SECRET not in json.dumps(run.steps[f"make_{engine}"].run_metadata, default=str)
    assert zenml_env.java_children(settle_s=10) == []


def _row_groups(uri: str, manifest: Any) -> List[int]:
    from zenml.client import Client

    import pyarrow.parquet as pq

    from zenml_compute_engines.materializers.readers import paths

    artifact_store = Client().active_stack.artifact_store
    counts = []
    for path in paths(uri, manifest):
        with artifact_store.open(path, "rb") as handle:
            counts.append(pq.ParquetFile(handle).metadata.num_row_groups)
    return counts


@pytest.mark.slow
def test_a_spark_cluster_writes_s3_from_its_executors_in_python(s3_server, spark_cluster, tmp_path, zen):
    """A standalone cluster's executors share no disk with the driver, so nothing is staged:
    `mapInArrow` tasks write the part files with pyarrow + fsspec, straight to the store."""
    from zenml.client import Client

    from zenml_compute_engines.materializers import dataset

    stack = activate_store_stack("s3", s3_server, "spark", {"master": spark_cluster.master_url, "ui_enabled": False})
    # Two partitions span several of the 10,000-row Arrow batches Spark hands to Python.
    n = 50_000
    run = run_pipeline("round_trip", stack.id, tmp_path / "run.log", engine="spark", n=n)
    assert run.steps["sum_spark"].outputs["summary"][0].load() == {"rows": n, "x": sum(i * 0.5 for i in range(n))}
    artifact = run.steps["make_spark"].outputs["frame"][0]
    assert artifact.run_metadata["written_via"] == "spark executors (pyarrow + fsspec)"
    manifest = dataset.read_manifest(Client().active_stack.artifact_store, artifact.uri)
    assert manifest.num_rows == n
    # Each part file is one row group, not one per batch Spark handed over.
    assert _row_groups(artifact.uri, manifest) == [1] * len(manifest.files)
    assert spark_cluster.alive()  # never stopped a cluster we did not start
    assert zenml_env.java_children(settle_s=15) == []  # but our driver and its executors are gone


# ---- atomicity ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_save_killed_midway_on_s3_never_loads_as_complete(s3_server, tmp_path, zen):
    """(On a local store, for every engine: tests/faults/test_interrupted_save.py.)"""
    import pandas as pd
    from zenml.client import Client

    from zenml_compute_engines.materializers import dataset
    from zenml_compute_engines.materializers.dask_dataframe import DaskDataFrameMaterializer

    stack = activate_store_stack("s3", s3_server, "dask", ENGINES["dask"])
    artifact_store = Client().active_stack.artifact_store
    root = f"{artifact_store.path}/slow_frame"
    env = {**os.environ, "ZENML_ACTIVE_STACK_ID": str(stack.id)}
    code = "from tests.integration.slow_pipelines import slow_save_pipeline\nslow_save_pipeline()\n"
    with open(tmp_path / "killed.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        parts = zenml_env.part_files_written(artifact_store, root, proc)
        assert parts, (tmp_path / "killed.log").read_text()[-3000:]
        proc.send_signal(signal.SIGKILL)  # what the OOM killer does: no handler runs
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    uri = parts[0].split("/data/")[0]
    with pytest.raises(dataset.IncompleteDatasetError, match="incomplete dataset artifact"):
        DaskDataFrameMaterializer(uri, artifact_store=artifact_store).load(pd.DataFrame)

    rerun = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**env, "SLOW_PARTITION_S": "0"},
                           capture_output=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout[-3000:]
    latest = Client().get_pipeline("slow_save_pipeline").last_run
    complete = latest.steps["slow_frame"].outputs["frame"][0]
    assert latest.status.value == "completed"
    assert dataset.read_manifest(artifact_store, complete.uri).num_rows == 12


# ---- ZenML's materializer contract --------------------------------------------------------------


def test_materializer_contract_spark_dask_arrow_pandas(zen, spark_stack):
    import dask.dataframe as dd
    import pandas as pd
    from pyspark.sql import DataFrame
    from zenml.client import Client

    from zenml_compute_engines import spark_session
    from zenml_compute_engines.materializers.arrow_table import ArrowTableMaterializer, PandasDatasetMaterializer
    from zenml_compute_engines.materializers.dask_dataframe import DaskDataFrameMaterializer
    from zenml_compute_engines.materializers.spark_dataframe import SparkDataFrameMaterializer
    from tests.integration.dataset_pipelines import spark_to_arrow

    spark_stack(master="local[2]", ui_enabled=False)
    store = Client().active_stack.artifact_store
    frame = pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", None]})
    cases = [
        (SparkDataFrameMaterializer, spark_session().createDataFrame(frame), DataFrame, True),
        (DaskDataFrameMaterializer, dd.from_pandas(frame, npartitions=2), dd.DataFrame, True),
        (ArrowTableMaterializer, pa.Table.from_pandas(frame), pa.Table, False),
        (PandasDatasetMaterializer, frame, pd.DataFrame, False),
    ]
    for materializer_class, data, data_type, on_workers in cases:
        loaded, opened = check_materializer_contract(materializer_class, data, data_type, store)
        if on_workers:  # this process read the manifest only; the engine reads the parts
            assert all(path.endswith("_manifest.json") for path in opened), (materializer_class, opened)
        rows = spark_to_arrow(loaded) if isinstance(loaded, DataFrame) else loaded
        rows = rows.compute() if isinstance(rows, dd.DataFrame) else rows
        assert len(rows) == 3


def test_spark_names_the_column_it_cannot_represent(zen, spark_stack):
    import decimal

    from pyspark.sql import DataFrame
    from zenml.client import Client

    from zenml_compute_engines.materializers.arrow_table import ArrowTableMaterializer

    spark_stack(master="local[2]", ui_enabled=False)
    store = Client().active_stack.artifact_store
    uri = f"{store.path}/wide-decimal-{uuid.uuid4().hex[:8]}"
    table = pa.table({"ok": [1], "huge": pa.array([decimal.Decimal("1.5")], pa.decimal256(40, 1))})
    ArrowTableMaterializer(uri, artifact_store=store).save(table)
    with pytest.raises(TypeError, match=r"Column 'huge' has type decimal256\(40, 1\), which Spark cannot represent"):
        ArrowTableMaterializer(uri, artifact_store=store).load(DataFrame)
    # Other engines read it as it is.
    assert ArrowTableMaterializer(uri, artifact_store=store).load(pa.Table).equals(table)


def test_a_type_outside_the_matrix_is_refused_clearly(zen):
    from zenml.client import Client

    from zenml_compute_engines.materializers.arrow_table import ArrowTableMaterializer

    store = Client().active_stack.artifact_store
    materializer = ArrowTableMaterializer(f"{store.path}/x", artifact_store=store)
    with pytest.raises(TypeError, match="loads as pyspark.sql.DataFrame, dask.dataframe.DataFrame, ray.data.Dataset"):
        materializer.validate_load_type_compatibility(dict)
