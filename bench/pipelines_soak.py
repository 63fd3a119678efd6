"""Steps, pipelines and bare engine cycles for `bench/soak.py`.

A module under the ZenML source root so the local orchestrator can load its steps by
source. The engine libraries are imported inside the functions: a child process imports
only the one it soaks (and Dask's worker processes, which import the child's main module
again, import nothing heavy).

Per engine, the same small job runs in each of `STEPS` steps of a pipeline (`ours`, on a
stack with our engine component) and `STEPS` times per bare cycle (`bare`: the engine
started and stopped by hand, without ZenML):
  spark - `range(1000)` grouped by `id % 7` and collected; bare: `getOrCreate()` with the
          conf our engine uses for `local[1]` without UI, `stop()`, and the driver JVM's
          shutdown that PySpark leaves out
  dask  - one task summing a range; bare: `LocalCluster` + `Client` (1 worker process, 1
          thread, loopback), `client.close(); cluster.close()`
  ray   - one remote task; bare: `ray.init(address="local", ...)` with the arguments our
          engine passes (1 CPU, 100 MiB object store, no dashboard, loopback), `ray.shutdown()`
`zenml` runs the pipeline of engine-free steps on the default stack: ZenML's own growth.
"""

from __future__ import annotations

from typing import Any, Callable, Dict

from zenml import pipeline, step

STEPS = 3
RAY_OBJECT_STORE_BYTES = 100 * 1024 * 1024  # Ray's minimum is 75 MiB

# Our engine components, sized like the bare cycles.
COMPONENT_CONFIG: Dict[str, Dict[str, Any]] = {
    "spark": {"master": "local[1]", "ui_enabled": False},
    "dask": {"n_workers": 1, "threads_per_worker": 1, "processes": True, "memory_limit": "1GiB"},
    "ray": {"num_cpus": 1, "object_store_memory": RAY_OBJECT_STORE_BYTES, "include_dashboard": False},
}


# ---- the job, per engine -------------------------------------------------------------


def spark_job(session: Any) -> int:
    return len(session.range(1000).selectExpr("id % 7 AS k").groupBy("k").count().collect())


def dask_job(client: Any) -> int:
    return int(client.submit(sum, range(1000), pure=False).result() > 0)


def ray_job(_: Any) -> int:
    import ray

    def one() -> int:
        return 1

    return int(ray.get(ray.remote(one).remote()))


# ---- the pipelines -------------------------------------------------------------------


@step(enable_cache=False)
def spark_step(previous: int) -> int:
    from zenml_compute_engines import spark_session

    return previous + spark_job(spark_session())


@step(enable_cache=False)
def dask_step(previous: int) -> int:
    from zenml_compute_engines import dask_client

    return previous + dask_job(dask_client())


@step(enable_cache=False)
def ray_step(previous: int) -> int:
    from zenml_compute_engines import ray_runtime

    return previous + ray_job(ray_runtime())


@step(enable_cache=False)
def plain_step(previous: int) -> int:
    return previous + 1


STEP_OF = {"spark": spark_step, "dask": dask_step, "ray": ray_step, "zenml": plain_step}


@pipeline(enable_cache=False)
def soak_pipeline(engine: str) -> None:
    total = 0
    for index in range(STEPS):
        total = STEP_OF[engine](total, id=f"step_{index}")


# ---- bare cycles: start, STEPS jobs, stop --------------------------------------------


def spark_cycle() -> None:
    from pyspark.sql import SparkSession

    from bench._common import spark_base_conf, stop_spark_completely

    builder = SparkSession.builder.master(COMPONENT_CONFIG["spark"]["master"]).appName("soak-bare")
    for key, value in spark_base_conf().items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    try:
        for _ in range(STEPS):
            spark_job(session)
    finally:
        stop_spark_completely(session)


def dask_cycle() -> None:
    from distributed import Client, LocalCluster

    from bench._common import dask_cluster_kwargs

    cluster = LocalCluster(**dask_cluster_kwargs(n_workers=1), memory_limit="1GiB")
    try:
        with Client(cluster) as client:
            for _ in range(STEPS):
                dask_job(client)
    finally:
        cluster.close()


def ray_cycle() -> None:
    import ray

    from bench._common import ray_init_kwargs
    from zenml_compute_engines.flavors.ray.engine import _loopback_node_ip

    with _loopback_node_ip(True):
        ray.init(**ray_init_kwargs(COMPONENT_CONFIG["ray"]["num_cpus"], RAY_OBJECT_STORE_BYTES))
    try:
        for _ in range(STEPS):
            ray_job(None)
    finally:
        ray.shutdown()


BARE_CYCLE: Dict[str, Callable[[], None]] = {"spark": spark_cycle, "dask": dask_cycle, "ray": ray_cycle}
