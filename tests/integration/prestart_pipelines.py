"""Pipelines of the warm-start tests (tests/integration/test_prestart.py)."""

import dask.dataframe as dd
import pandas as pd
from pyspark.sql import DataFrame
from zenml import pipeline, step

from flavors import dask_client, spark_session


@step
def spark_frame(n: int) -> DataFrame:
    return spark_session().range(n)


@step
def spark_count(frame: DataFrame) -> int:
    return frame.count()


@pipeline(enable_cache=False)
def spark_typed_pipeline(n: int = 100) -> None:
    spark_count(spark_frame(n))


@pipeline(enable_cache=True)
def cached_spark_pipeline(n: int = 100) -> None:
    """Its second run with the same `n` serves every step from the cache."""
    spark_count(spark_frame(n))


@step
def dask_sum(n: int) -> int:
    """Uses Dask, but nothing in its signature says so."""
    return int(dask_client().submit(sum, range(n)).result())


@pipeline(enable_cache=False)
def untyped_dask_pipeline(n: int = 10) -> None:
    dask_sum(n)


@step
def no_engine() -> int:
    return 1


@step
def dask_frame(value: int) -> dd.DataFrame:
    dask_client()
    return dd.from_pandas(pd.DataFrame({"x": [value]}), npartitions=1)


@pipeline(enable_cache=False)
def engine_free_then_dask_pipeline() -> None:
    dask_frame(no_engine())


@pipeline(enable_cache=False)
def engine_free_only_pipeline() -> None:
    no_engine()
