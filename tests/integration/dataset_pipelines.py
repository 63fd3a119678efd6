"""Pipelines of the dataset-format tests: every writer, every reader, every store.

Run by tests/integration/test_datasets.py, each pipeline in a process of its own (one
engine per process, as in production), on the stack named by ZENML_ACTIVE_STACK_ID.
"""

import datetime
import decimal
import sys
from typing import Annotated, Any, Dict, List
from uuid import UUID

import dask.dataframe as dd
import pandas as pd
import pyarrow as pa
import ray.data
from pyspark.sql import DataFrame as SparkDataFrame
from zenml import pipeline, step
from zenml.client import Client

from zenml_compute_engines import dask_client, ray_runtime, spark_session
from zenml_compute_engines.materializers.arrow_table import PandasDatasetMaterializer

UTC = datetime.timezone.utc


def types_table() -> pa.Table:
    """One column of each type the format must carry, nulls included."""
    return pa.table(
        {
            "int": pa.array([1, None, -3], pa.int64()),
            "float": pa.array([1.5, 2.25, None], pa.float64()),
            "string": pa.array(["a", None, "ünï"], pa.string()),
            "bool": pa.array([True, False, None], pa.bool_()),
            "date": pa.array([datetime.date(2024, 2, 29), None, datetime.date(1970, 1, 1)], pa.date32()),
            "timestamp_tz": pa.array(
                [datetime.datetime(2024, 1, 1, 12, 30, tzinfo=UTC), None, datetime.datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)],
                pa.timestamp("us", tz="UTC"),
            ),
            "decimal": pa.array([decimal.Decimal("1.25"), None, decimal.Decimal("-12345678.90")], pa.decimal128(12, 2)),
            "null": pa.array([None, None, None], pa.int64()),
            "list": pa.array([[1, 2], None, []], pa.list_(pa.int64())),
            "struct": pa.array(
                [{"x": 1, "y": "a"}, None, {"x": None, "y": "c"}], pa.struct([("x", pa.int64()), ("y", pa.string())])
            ),
        }
    )


def spark_to_arrow(frame: SparkDataFrame) -> pa.Table:
    """The rows of a Spark DataFrame as Arrow (collected: for checking small results)."""
    if hasattr(frame, "toArrow"):
        return frame.toArrow()
    # pyspark 3.5 has no toArrow(): collect the Arrow batches its toPandas() uses.
    from zenml_compute_engines.materializers.spark_io import _arrow_schema

    batches = frame._collect_as_arrow()
    return pa.Table.from_batches(batches) if batches else _arrow_schema(frame).empty_table()


def canonical(table: pa.Table) -> List[Dict[str, str]]:
    """Rows as comparable text: timestamps in UTC, rows in `int` order (engines may reorder)."""

    def text(value: Any) -> str:
        if isinstance(value, datetime.datetime) and value.tzinfo is not None:
            value = value.astimezone(UTC)
        if isinstance(value, dict):
            return "{" + ", ".join(f"{k}: {text(v)}" for k, v in sorted(value.items())) + "}"
        if isinstance(value, list):
            return "[" + ", ".join(text(v) for v in value) + "]"
        return repr(value)

    names = types_table().schema.names
    rows = [{name: text(row[name]) for name in names} for row in table.select(names).to_pylist()]
    return sorted(rows, key=lambda row: row["int"])


def _as_arrow(data: Any) -> pa.Table:
    if isinstance(data, pd.DataFrame):
        return pa.Table.from_pandas(data, preserve_index=False)
    return data


# ---- writers -----------------------------------------------------------------------------


@step
def write_spark() -> Annotated[SparkDataFrame, "spark"]:
    return spark_session().createDataFrame(types_table())


@step
def write_dask() -> Annotated[dd.DataFrame, "dask"]:
    dask_client()
    return dd.from_pandas(types_table().to_pandas(types_mapper=pd.ArrowDtype), npartitions=2)


@step
def write_ray() -> Annotated[ray.data.Dataset, "ray"]:
    ray_runtime()
    return ray.data.from_arrow(types_table())


@step
def write_arrow() -> Annotated[pa.Table, "arrow"]:
    return types_table()


@step(output_materializers=PandasDatasetMaterializer)
def write_pandas() -> Annotated[pd.DataFrame, "pandas"]:
    return types_table().to_pandas(types_mapper=pd.ArrowDtype)


# ---- readers: what each annotation gets, as comparable rows plus where it was read ---------


@step
def read_as_spark(data: SparkDataFrame) -> Annotated[Dict[str, Any], "read"]:
    return {"rows": canonical(spark_to_arrow(data)), "type": type(data).__name__, "lazy": True}


@step
def read_as_dask(data: dd.DataFrame) -> Annotated[Dict[str, Any], "read"]:
    client = dask_client()
    frame = client.compute(data).result()
    return {"rows": canonical(_as_arrow(frame)), "type": type(data).__name__, "npartitions": data.npartitions}


@step
def read_as_ray(data: ray.data.Dataset) -> Annotated[Dict[str, Any], "read"]:
    ray_runtime()
    return {"rows": canonical(pa.concat_tables(ray.get(data.to_arrow_refs()))), "type": type(data).__name__}


@step
def read_as_arrow(data: pa.Table) -> Annotated[Dict[str, Any], "read"]:
    return {"rows": canonical(data), "type": type(data).__name__}


@step
def read_as_pandas(data: pd.DataFrame) -> Annotated[Dict[str, Any], "read"]:
    return {"rows": canonical(_as_arrow(data)), "type": type(data).__name__}


WRITERS = {"spark": write_spark, "dask": write_dask, "ray": write_ray, "arrow": write_arrow, "pandas": write_pandas}
READERS = {"spark": read_as_spark, "dask": read_as_dask, "ray": read_as_ray, "arrow": read_as_arrow, "pandas": read_as_pandas}


@pipeline(enable_cache=False)
def write_with(writers: List[str]) -> None:
    for name in writers:
        WRITERS[name]()


@pipeline(enable_cache=False)
def read_as(kinds: List[str], artifact_ids: Dict[str, str]) -> None:
    for kind in kinds:
        for writer, artifact_id in artifact_ids.items():
            READERS[kind](Client().get_artifact_version(UUID(artifact_id)), id=f"{writer}_as_{kind}")


# ---- one engine's round trip on the active stack's artifact store -----------------------------


@step
def make_spark(n: int) -> Annotated[SparkDataFrame, "frame"]:
    return spark_session().range(n).selectExpr("id", "id % 3 AS k", "CAST(id AS DOUBLE) * 0.5 AS x")


@step
def make_dask(n: int) -> Annotated[dd.DataFrame, "frame"]:
    dask_client()
    frame = pd.DataFrame({"id": range(n), "k": [i % 3 for i in range(n)], "x": [i * 0.5 for i in range(n)]})
    return dd.from_pandas(frame, npartitions=4)


@step
def make_ray(n: int) -> Annotated[ray.data.Dataset, "frame"]:
    ray_runtime()
    return ray.data.range(n, override_num_blocks=4).map_batches(
        lambda b: {"id": b["id"], "k": b["id"] % 3, "x": b["id"] * 0.5}
    )


@step
def sum_spark(frame: SparkDataFrame) -> Annotated[Dict[str, float], "summary"]:
    row = frame.selectExpr("COUNT(*) AS rows", "SUM(x) AS x").first()
    return {"rows": int(row.rows), "x": float(row.x)}


@step
def sum_dask(frame: dd.DataFrame) -> Annotated[Dict[str, float], "summary"]:
    client = dask_client()
    return {"rows": int(client.compute(frame.shape[0]).result()), "x": float(client.compute(frame.x.sum()).result())}


@step
def sum_ray(frame: ray.data.Dataset) -> Annotated[Dict[str, float], "summary"]:
    ray_runtime()
    return {"rows": frame.count(), "x": float(frame.sum("x"))}


@step
def count_spark(frame: SparkDataFrame) -> Annotated[int, "rows"]:
    return frame.count()


@pipeline(enable_cache=False)
def count_in_spark(artifact_id: str) -> None:
    count_spark(Client().get_artifact_version(UUID(artifact_id)))


ROUND_TRIPS = {"spark": (make_spark, sum_spark), "dask": (make_dask, sum_dask), "ray": (make_ray, sum_ray)}


@pipeline(enable_cache=False)
def round_trip(engine: str, n: int) -> None:
    make, summarize = ROUND_TRIPS[engine]
    summarize(make(n))


if __name__ == "__main__":
    # python -m tests.integration.dataset_pipelines <pipeline> <json kwargs>: what the
    # tests run in a fresh process, on the stack ZENML_ACTIVE_STACK_ID names.
    import json

    run = globals()[sys.argv[1]](**json.loads(sys.argv[2]))
    print("RUN_ID", run.id, flush=True)
    # Our folders, imported under their bare names too (ZenML puts this checkout, the source
    # root, on sys.path), would be second copies of the package.
    bare = sorted(name for name in sys.modules if name.split(".")[0] in ("flavors", "materializers"))
    print("BARE_MODULES", bare, flush=True)
