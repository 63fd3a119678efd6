"""Pipelines whose steps use two engines of one bundle (tests/integration/test_bundle.py)."""

import os
from typing import Annotated, Any, Dict

import dask.dataframe as dd
from pyspark.sql import DataFrame
from zenml import pipeline, step

from zenml_compute_engines import SparkEngineSettings, dask_client, spark_session


@step
def spark_numbers(n: int) -> Annotated[DataFrame, "numbers"]:
    return spark_session().range(n).selectExpr("id", "id % 3 AS k")


@step
def dask_total(numbers: dd.DataFrame) -> Annotated[Dict[str, Any], "total"]:
    client = dask_client()
    return {"sum": int(client.compute(numbers.id.sum()).result()), "driver": os.getpid()}


@step(settings={"feature_store": SparkEngineSettings(conf={"spark.sql.shuffle.partitions": 3})})
def spark_with_settings() -> Annotated[int, "partitions"]:
    return int(spark_session().conf.get("spark.sql.shuffle.partitions"))


@step
def both_engines() -> Annotated[int, "both"]:
    """One step on both members: Spark counts 3 partitions, Dask runs 2 tasks."""
    rows = spark_session().sparkContext.parallelize(range(30), 3).count()
    return int(rows + sum(dask_client().gather(dask_client().map(abs, [-1, -2]))))


@pipeline(enable_cache=False)
def two_engines(n: int = 100) -> None:
    dask_total(spark_numbers(n))
    spark_with_settings(after="dask_total")
    both_engines(after="spark_with_settings")
