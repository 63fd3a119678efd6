"""Pipelines whose output takes seconds to save, for killing them midway (test_datasets.py,
tests/faults/test_interrupted_save.py): the engine computes each partition slowly while the
artifact is written. SLOW_PARTITION_S (default 2) sets each partition's delay: a re-run that
only needs a complete artifact sets 0."""

import os
import time
from typing import Annotated

import dask.dataframe as dd
import pandas as pd
import ray.data
from pyspark.sql import DataFrame
from zenml import pipeline, step

from zenml_compute_engines import dask_client, ray_runtime, spark_session


def _partition_seconds() -> float:
    """Read in the step's process; the engines' workers get the value in the closure."""
    return float(os.environ.get("SLOW_PARTITION_S", "2"))


def _slowly(part: pd.DataFrame, seconds: float) -> pd.DataFrame:
    time.sleep(seconds)  # each partition is computed while the artifact is written
    return part


@step
def slow_frame() -> Annotated[dd.DataFrame, "frame"]:
    dask_client()
    frame = dd.from_pandas(pd.DataFrame({"v": range(12)}), npartitions=6)
    return frame.map_partitions(_slowly, _partition_seconds(), meta=frame._meta)


@pipeline(enable_cache=False)
def slow_save_pipeline() -> None:
    slow_frame()


@step
def slow_spark_frame() -> Annotated[DataFrame, "frame"]:
    seconds = _partition_seconds()

    def slowly(parts):  # runs on the executors' Python workers
        for part in parts:
            time.sleep(seconds)
            yield part

    frame = spark_session().range(0, 12, numPartitions=6).withColumnRenamed("id", "v")
    return frame.mapInPandas(slowly, schema=frame.schema)


@pipeline(enable_cache=False)
def slow_spark_save_pipeline() -> None:
    slow_spark_frame()


@step
def slow_ray_frame() -> Annotated[ray.data.Dataset, "frame"]:
    ray_runtime()
    seconds = _partition_seconds()

    def slowly(batch):
        time.sleep(seconds)
        return batch

    return ray.data.from_items([{"v": i} for i in range(12)], override_num_blocks=6).map_batches(slowly)


@pipeline(enable_cache=False)
def slow_ray_save_pipeline() -> None:
    slow_ray_frame()
