"""Steps and pipelines for `bench/engine_reuse.py`, Spark edition.

A module under the ZenML source root so the local orchestrator can load its steps by
source. A module for another engine (bench/pipelines_dask.py, ...) provides the same
names, which `bench/engine_reuse.py` calls: `COMPONENT_CONFIG`, `reuse_pipeline(mode,
steps, rows)`, `idle_pipeline(steps)`, `build_floor()`, `release_floor()`,
`release_leftovers()`, `component_class()`, `expected_total(steps, rows)`, `STEP_TIMES`
and optionally `EXTRA_TIMERS()`.

`mode` selects how a step gets its session; the Spark job itself is identical:
  seed  - `SparkSession.builder.master("local[2]").getOrCreate()` ... `spark.stop()` in every step
  floor - the session `build_floor()` made by hand before the pipeline call, never stopped in the run
  ours  - `zenml_compute_engines.spark_session()`: the engine component of the active stack
"""

import time
from typing import Any, Dict, List

from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from zenml import pipeline, step

from bench._common import spark_base_conf, stop_spark_completely

MASTER = "local[2]"
COMPONENT_CONFIG: Dict[str, Any] = {"master": MASTER, "ui_enabled": False}

# Time spent inside step bodies of this process, for the breakdown the bench prints:
# one dict per executed step: acquire (getting the session), job, release (seed's stop()).
STEP_TIMES: List[Dict[str, float]] = []

_FLOOR: Dict[str, SparkSession] = {}


def _builder() -> Any:
    builder = SparkSession.builder.master(MASTER).appName("bench")
    for key, value in spark_base_conf().items():
        builder = builder.config(key, value)
    return builder


def build_floor() -> SparkSession:
    """The floor's session: built by hand once, before the pipeline call."""
    _FLOOR["session"] = _builder().getOrCreate()
    return _FLOOR["session"]


def release_floor() -> None:
    stop_spark_completely(_FLOOR.pop("session", None))


def release_leftovers() -> None:
    """Stop whatever Spark the variant left running (seed: the driver JVM PySpark keeps)."""
    from pyspark import SparkContext

    session = SparkSession.getActiveSession()
    stop_spark_completely(session)
    SparkContext._active_spark_context = None


def component_class() -> type:
    from zenml_compute_engines.flavors.spark.engine import SparkEngine

    return SparkEngine


def _acquire(mode: str) -> SparkSession:
    if mode == "seed":
        return _builder().getOrCreate()
    if mode == "floor":
        return _FLOOR["session"]
    if mode == "ours":
        from zenml_compute_engines import spark_session

        return spark_session()
    raise ValueError(f"unknown mode {mode!r}")


def _release(mode: str, spark: SparkSession) -> None:
    if mode == "seed":
        spark.stop()


def expected_total(steps: int, rows: int) -> int:
    return steps * rows


@step
def spark_job(prev: int, mode: str, rows: int) -> int:
    """range + groupBy + count on a DataFrame the step builds; returns a small int."""
    t0 = time.perf_counter()
    spark = _acquire(mode)
    t1 = time.perf_counter()
    try:
        counts = (
            spark.range(rows, numPartitions=4)
            .withColumn("k", F.col("id") % 7)
            .groupBy("k")
            .agg(F.count("*").alias("n"))
            .collect()
        )
        total = sum(row["n"] for row in counts)
        t2 = time.perf_counter()
    finally:
        _release(mode, spark)
    t3 = time.perf_counter()
    STEP_TIMES.append({"acquire": t1 - t0, "job": t2 - t1, "release": t3 - t2})
    return prev + total


@pipeline(enable_cache=False)
def reuse_pipeline(mode: str, steps: int = 5, rows: int = 200_000) -> None:
    total = 0
    for i in range(steps):
        total = spark_job(total, mode, rows, id=f"job_{i}")


@step
def idle(prev: int) -> int:
    """A step that never asks for an engine."""
    return prev + 1


@pipeline(enable_cache=False)
def idle_pipeline(steps: int = 10) -> None:
    value = 0
    for i in range(steps):
        value = idle(value, id=f"idle_{i}")


def EXTRA_TIMERS() -> List[Any]:
    """(owner, attribute) pairs the bench times inside the engine's teardown."""
    import zenml_compute_engines.flavors.spark.engine

    return [(zenml_compute_engines.flavors.spark.engine, "shutdown_driver_jvm")]
