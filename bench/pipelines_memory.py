"""The Spark -> Dask -> Ray pipeline of bench/driver_memory.py, on a bundle of the three.

Each step reduces the data on its own engine's workers; only the dataset artifact passes
between them, so the pipeline process should hold as much memory for 1M rows as for 20M.
"""

from typing import Annotated

import dask.dataframe as dd
import ray.data
from pyspark.sql import DataFrame
from zenml import pipeline, step

from zenml_compute_engines import dask_client, ray_runtime, spark_session


@step
def spark_frame(rows: int) -> Annotated[DataFrame, "frame"]:
    return spark_session().range(0, rows, numPartitions=16).selectExpr("id", "id % 100 AS k", "rand(42) AS x")


@step
def dask_rows(frame: dd.DataFrame) -> Annotated[int, "rows"]:
    client = dask_client()
    rows, _ = client.compute([frame.shape[0], frame.x.sum()], sync=True)
    return int(rows)


@step
def ray_rows(frame: ray.data.Dataset) -> Annotated[int, "rows"]:
    ray_runtime()
    frame.sum("x")  # every row is read by Ray's workers
    return frame.count()


@pipeline(enable_cache=False)
def memory_pipeline(rows: int) -> None:
    frame = spark_frame(rows)
    dask_rows(frame)
    ray_rows(frame)


