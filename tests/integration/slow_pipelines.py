"""Pipelines whose output takes seconds to save, for killing them midway (test_datasets.py,
tests/faults/test_interrupted_save.py): the engine computes each partition slowly while the
artifact is written."""

import time
from typing import Annotated

import dask.dataframe as dd
import pandas as pd
import ray.data
from pyspark.sql import DataFrame
from zenml import pipeline, step

from flavors import dask_client, ray_runtime, spark_session


def _slowly(part: pd.DataFrame) -> pd.DataFrame:
    time.sleep(2)  # each partition is computed while the artifact is written
    return part


@step
def slow_frame() -> Annotated[dd.DataFrame, "frame"]:
    dask_client()
    frame = dd.from_pandas(pd.DataFrame({"v": range(12)}), npartitions=6)
    return frame.map_partitions(_slowly, meta=frame._meta)


@pipeline(enable_cache=False)
def slow_save_pipeline() -> None:
    slow_frame()


@step
def slow_spark_frame() -> Annotated[DataFrame, "frame"]:
    def slowly(parts):  # runs on the executors' Python workers
        for part in parts:
            time.sleep(2)
            yield part

    frame = spark_session().range(0, 12, numPartitions=6).withColumnRenamed("id", "v")
    return frame.mapInPandas(slowly, schema=frame.schema)


@pipeline(enable_cache=False)
def slow_spark_save_pipeline() -> None:
    slow_spark_frame()


@step
def slow_ray_frame() -> Annotated[ray.data.Dataset, "frame"]:
    ray_runtime()

    def slowly(batch):
        time.sleep(2)
        return batch

    return ray.data.from_items([{"v": i} for i in range(12)], override_num_blocks=6).map_batches(slowly)


@pipeline(enable_cache=False)
def slow_ray_save_pipeline() -> None:
    slow_ray_frame()
