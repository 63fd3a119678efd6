"""Pipelines of the warm-start tests (tests/integration/test_prestart.py)."""

import sys
import time

import dask.dataframe as dd
import pandas as pd
from pyspark.sql import DataFrame
from zenml import pipeline, step

from zenml_compute_engines import dask_client, spark_session


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
def dask_worker_imported_dataframes() -> bool:
    """Whether the worker imports `dask.dataframe` within 30 s, while this step submits
    no DataFrame work (nothing else there imports it)."""
    client = dask_client()
    deadline = time.monotonic() + 30
    while True:
        # A lambda is pickled by value: the worker does not import this module.
        loaded = client.run(lambda: "dask.dataframe" in sys.modules)
        if all(loaded.values()) or time.monotonic() > deadline:
            return all(loaded.values())
        time.sleep(0.1)


@pipeline(enable_cache=False)
def dask_warm_up_pipeline() -> None:
    dask_worker_imported_dataframes()


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


if __name__ == "__main__":
    # python -m tests.integration.prestart_pipelines <pipeline>: a fresh process whose
    # pipeline call is the first thing to load the stack (ZENML_ACTIVE_STACK_ID names it).
    run = globals()[sys.argv[1]]()
    print("RUN_ID", run.id, flush=True)
