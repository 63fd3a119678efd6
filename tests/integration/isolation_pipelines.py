"""Two-step pipelines per engine for steps run in processes of their own
(tests/integration/test_step_isolation.py): the first step writes engine-native data, the
second, in a fresh process with a fresh engine, reads it with its own engine.
Each step returns its process id so the test can tell the processes apart."""

import os
from typing import Annotated, Any, Dict, Tuple

import dask.dataframe as dd
import pandas as pd
import ray.data
from pyspark.sql import DataFrame
from zenml import pipeline, step

from zenml_compute_engines import dask_client, ray_runtime, spark_session


@step
def spark_make(n: int) -> Tuple[Annotated[DataFrame, "numbers"], Annotated[int, "pid"]]:
    return spark_session().range(n).selectExpr("id", "id % 3 AS k"), os.getpid()


@step
def spark_count(numbers: DataFrame, pid: int) -> Annotated[Dict[str, Any], "result"]:
    rows = numbers.groupBy("k").count().collect()
    return {"counts": {r["k"]: r["count"] for r in rows}, "pids": [pid, os.getpid()]}


@step
def dask_make(n: int) -> Tuple[Annotated[dd.DataFrame, "numbers"], Annotated[int, "pid"]]:
    dask_client()
    frame = pd.DataFrame({"id": range(n), "k": [i % 3 for i in range(n)]})
    return dd.from_pandas(frame, npartitions=2), os.getpid()


@step
def dask_count(numbers: dd.DataFrame, pid: int) -> Annotated[Dict[str, Any], "result"]:
    counts = dask_client().compute(numbers.groupby("k").id.count()).result()
    return {"counts": {int(k): int(v) for k, v in counts.items()}, "pids": [pid, os.getpid()]}


@step
def ray_make(n: int) -> Tuple[Annotated[ray.data.Dataset, "numbers"], Annotated[int, "pid"]]:
    ray_runtime()

    def with_key(batch: Dict[str, Any]) -> Dict[str, Any]:
        return {"id": batch["id"], "k": batch["id"] % 3}

    return ray.data.range(n, override_num_blocks=2).map_batches(with_key), os.getpid()


@step
def ray_count(numbers: ray.data.Dataset, pid: int) -> Annotated[Dict[str, Any], "result"]:
    rows = numbers.groupby("k").count().take_all()
    return {"counts": {int(r["k"]): int(r["count()"]) for r in rows}, "pids": [pid, os.getpid()]}


@pipeline(enable_cache=False)
def isolated_spark(n: int = 30) -> None:
    numbers, pid = spark_make(n=n)
    spark_count(numbers, pid)


@pipeline(enable_cache=False)
def isolated_dask(n: int = 30) -> None:
    numbers, pid = dask_make(n=n)
    dask_count(numbers, pid)


@pipeline(enable_cache=False)
def isolated_ray(n: int = 30) -> None:
    numbers, pid = ray_make(n=n)
    ray_count(numbers, pid)


PIPELINES = {"spark": isolated_spark, "dask": isolated_dask, "ray": isolated_ray}
