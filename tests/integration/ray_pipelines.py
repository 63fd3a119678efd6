"""Ray pipelines the integration tests run (a module under the source root, so ZenML can load its steps).

Functions shipped to Ray workers are defined inside the steps: cloudpickle sends them by
value, so workers of an attached cluster need not import this module (and zenml).
"""

import os
import time
import urllib.error
import urllib.request
from typing import Any, Dict

import ray
import ray.data
from ray.data import Dataset
from zenml import pipeline, step

from zenml_compute_engines import RayEngineSettings, ray_runtime


@step
def make_dataset(n: int) -> Dataset:
    ray_runtime()

    def with_key(batch: Dict[str, Any]) -> Dict[str, Any]:
        return {"id": batch["id"], "k": batch["id"] % 3}

    # Returned lazily: Ray's workers compute it while ZenML saves the output.
    return ray.data.range(n, override_num_blocks=4).map_batches(with_key)


@step
def double(ds: Dataset) -> Dataset:
    def doubled(batch: Dict[str, Any]) -> Dict[str, Any]:
        return {"id": batch["id"], "k": batch["k"], "v": batch["id"] * 2}

    return ds.map_batches(doubled)


@step
def summarize(ds: Dataset) -> Dict[str, Any]:
    first = ray_runtime()
    second = ray_runtime()  # the same driver: no second ray.init

    @ray.remote
    def partial_sum(values: Any) -> int:
        return int(sum(values))

    batches = list(ds.iter_batches(batch_size=250, batch_format="numpy"))
    total_v = sum(ray.get([partial_sum.remote(batch["v"]) for batch in batches]))
    return {
        "rows": ds.count(),
        "total_v": total_v,
        "keys": sorted({int(k) for batch in batches for k in batch["k"]}),
        "same_runtime": first == second,
        "job_id": first.job_id,
        "address": first.address,
    }


@step
def summarize_in_task(ds: Dataset) -> Dict[str, Any]:
    """Ray Data cannot execute on a Ray Client driver: run it inside a (zero-CPU) task."""
    runtime = ray_runtime()

    @ray.remote(num_cpus=0)
    def summary(dataset: Any) -> Dict[str, Any]:
        return {"rows": dataset.count(), "total_v": int(dataset.sum("v"))}

    return {**ray.get(summary.remote(ds)), "job_id": runtime.job_id, "address": runtime.address}


@step(settings={"feature_store": RayEngineSettings(remote_args={"num_cpus": 0.5})})
def assigned_cpus() -> float:
    @ray.remote
    def cpus() -> float:
        return float(ray.get_runtime_context().get_assigned_resources().get("CPU", 0))

    return ray.get(ray_runtime().options(cpus).remote())


@step
def env_in_task(name: str) -> str:
    ray_runtime()

    @ray.remote
    def read_env(key: str) -> str:
        return os.environ.get(key, "<unset>")

    return ray.get(read_env.remote(name))


@step(settings={"feature_store": RayEngineSettings(runtime_env={"env_vars": {"ZEN_RAY_STEP_ENV": "from-settings"}})})
def env_in_task_with_setting(name: str) -> str:
    ray_runtime()

    @ray.remote
    def read_env(key: str) -> str:
        return os.environ.get(key, "<unset>")

    return ray.get(read_env.remote(name))


@step
def fail_with_ray(ds: Dataset) -> int:
    ds.count()
    raise ValueError("this step fails on purpose")


@step
def sleep_with_ray(marker: str) -> int:
    ray_runtime()
    ray.get(ray.remote(lambda: 1).remote())
    with open(marker, "w") as handle:
        handle.write(str(os.getpid()))
    time.sleep(120)
    return 0


@step
def dashboard_status() -> Dict[str, Any]:
    runtime = ray_runtime()
    try:
        with urllib.request.urlopen(f"{runtime.dashboard_url}/api/version", timeout=10) as response:
            status = response.status
    except urllib.error.HTTPError as e:  # token-authenticated dashboards answer 401
        status = e.code
    return {"url": runtime.dashboard_url, "status": status}


@step
def session_folder() -> str:
    """The session folder of the step's Ray node (its logs, sockets and runtime resources)."""
    ray_runtime()
    ray.get(ray.remote(lambda: 1).remote())  # a worker, and its log files, in the folder
    return ray._private.worker.global_worker.node.get_session_dir_path()


@step
def engine_free(x: int = 1) -> int:
    return x + 1


@pipeline(enable_cache=False)
def dataset_pipeline(n: int = 1000) -> None:
    summarize(double(make_dataset(n)))
    assigned_cpus(after="summarize")


@pipeline(enable_cache=False)
def small_dataset_pipeline(n: int = 100) -> None:
    summarize(double(make_dataset(n)))


@pipeline(enable_cache=False)
def client_dataset_pipeline(n: int = 50) -> None:
    summarize_in_task(double(make_dataset(n)))


@pipeline(enable_cache=False)
def runtime_env_pipeline() -> None:
    env_in_task(name="ZEN_RAY_STEP_ENV", id="before")
    env_in_task_with_setting(name="ZEN_RAY_STEP_ENV", after="before")


@pipeline(enable_cache=False)
def component_env_pipeline() -> None:
    env_in_task(name="ZEN_RAY_COMPONENT_ENV", id="first")
    env_in_task(name="ZEN_RAY_COMPONENT_ENV", id="second", after="first")


@pipeline(enable_cache=False)
def failing_pipeline() -> None:
    fail_with_ray(make_dataset(10))


@pipeline(enable_cache=False)
def sleeping_pipeline(marker: str) -> None:
    sleep_with_ray(marker)


@pipeline(enable_cache=False)
def dashboard_pipeline() -> None:
    dashboard_status()


@pipeline(enable_cache=False)
def session_folder_pipeline() -> None:
    session_folder()


@pipeline(enable_cache=False)
def engine_free_pipeline() -> None:
    engine_free()
