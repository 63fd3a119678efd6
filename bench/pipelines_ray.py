"""Steps and pipelines for `bench/engine_reuse.py`, Ray edition.

A module under the ZenML source root so the local orchestrator can load its steps by
source. It provides the names `bench/engine_reuse.py` calls (the same as
bench/pipelines_spark.py and bench/pipelines_dask.py): `COMPONENT_CONFIG`,
`reuse_pipeline(mode, steps, rows)`, `build_floor()`,
`release_floor()`, `release_leftovers()`, `component_class()`, `expected_total(steps,
rows)`, `STEP_TIMES`, `EXTRA_TIMERS()`, `PROCESS_LABEL`/`engine_processes()`,
`BREAKDOWN_LABELS`, plus `DETAIL_TIMERS` (extra timers the bench prints for ours).

Every Ray is a local one sized like the component: `num_cpus=1`, a 100 MiB object
store, no dashboard, every socket on 127.0.0.1. `mode` selects how a step gets it; the
Ray job itself is identical:
  seed  - `ray.init(**ray_init_kwargs(...))` (address="local", what our engine passes,
          inside the engine's loopback context) ... `ray.shutdown()` in every step (the
          per-step pattern users write by hand)
  floor - one `ray.init` made by hand by `build_floor()` before the pipeline call, never
          shut down during the run
  ours  - `zenml_compute_engines.ray_runtime()`: the engine component of the active stack (same sizing)

The job: the step splits `np.arange(rows)` into 4 partitions, `ray.put`s them (about
400 KB each: they go to the shared-memory object store) and counts the rows per key
(`id % 7`) with one `@ray.remote` task per partition, then `ray.get`s the 4 counts. The
task is defined inside the step, so cloudpickle ships it by value and Ray's workers
never import this module (or zenml).
"""

import time
from typing import Any, Dict, List, Optional

import numpy as np
import ray
from zenml import pipeline, step

# Imported before the clock starts in every variant (ours imports it anyway).
from zenml_compute_engines.flavors.ray.engine import _loopback_node_ip
from bench._common import ray_descendants, ray_init_kwargs

NUM_CPUS = 1
OBJECT_STORE_BYTES = 100 * 1024 * 1024  # Ray's minimum is 75 MiB
PARTITIONS = 4
COMPONENT_CONFIG: Dict[str, Any] = {
    "num_cpus": NUM_CPUS,
    "object_store_memory": OBJECT_STORE_BYTES,
    "include_dashboard": False,
}
PROCESS_LABEL = "ray (raylet/gcs_server/worker)"
BREAKDOWN_LABELS: Dict[str, Optional[str]] = {
    "session": "ray.init / get runtime",
    "jobs": "ray jobs",
    "step_stop": "shutdown() in steps",
    "jvm_exit": None,  # no driver JVM: row omitted
}

# Time spent inside step bodies of this process, for the breakdown the bench prints:
# one dict per executed step: acquire (ray.init / the runtime), job, release (seed's shutdown()).
STEP_TIMES: List[Dict[str, float]] = []

_FLOOR: Dict[str, Any] = {}


def _init() -> Any:
    with _loopback_node_ip(True):
        return ray.init(**ray_init_kwargs(NUM_CPUS, OBJECT_STORE_BYTES))


def build_floor() -> Any:
    """The floor's Ray: initialized by hand once, before the pipeline call."""
    _FLOOR["context"] = _init()
    return _FLOOR["context"]


def release_floor() -> None:
    if _FLOOR.pop("context", None) is not None:
        ray.shutdown()


def release_leftovers() -> None:
    """Shut down a Ray a variant left initialized (none expected: seed shuts its own down,
    ours' engine stops at the end of the run)."""
    if ray.is_initialized():
        ray.shutdown()


def engine_processes() -> List[Any]:
    """Live Ray processes below this process: raylet, gcs_server, workers, helpers
    (must be none after a run)."""
    return ray_descendants()


def component_class() -> type:
    from zenml_compute_engines.flavors.ray.engine import RayEngine

    return RayEngine


def _acquire(mode: str) -> None:
    if mode == "seed":
        _init()
    elif mode == "floor":
        if not ray.is_initialized():
            raise RuntimeError("floor: build_floor() did not initialize Ray")
    elif mode == "ours":
        from zenml_compute_engines import ray_runtime

        ray_runtime()
    else:
        raise ValueError(f"unknown mode {mode!r}")


def _release(mode: str) -> None:
    if mode == "seed":
        ray.shutdown()


def expected_total(steps: int, rows: int) -> int:
    return steps * rows


@step
def ray_job(prev: int, mode: str, rows: int) -> int:
    """Per-key row counts of 4 partitions, one remote task each; returns a small int."""
    t0 = time.perf_counter()
    _acquire(mode)
    t1 = time.perf_counter()
    try:

        def count_keys(partition: Any) -> List[int]:
            import numpy

            return numpy.bincount(partition % 7, minlength=7).tolist()

        task = ray.remote(count_keys)
        refs = [ray.put(part) for part in np.array_split(np.arange(rows, dtype=np.int64), PARTITIONS)]
        counts = ray.get([task.remote(ref) for ref in refs])
        total = int(sum(sum(c) for c in counts))
        t2 = time.perf_counter()
    finally:
        _release(mode)
    t3 = time.perf_counter()
    STEP_TIMES.append({"acquire": t1 - t0, "job": t2 - t1, "release": t3 - t2})
    return prev + total


@pipeline(enable_cache=False)
def reuse_pipeline(mode: str, steps: int = 5, rows: int = 200_000) -> None:
    total = 0
    for i in range(steps):
        total = ray_job(total, mode, rows, id=f"job_{i}")



def EXTRA_TIMERS() -> List[Any]:
    """(owner, attribute) pairs the bench times inside ours' start and stop."""
    import zenml_compute_engines.flavors.ray.engine as engine

    return [
        (engine, "_init_on_driver_thread"),  # ray.init on the driver thread, within _start
        (engine.RayEngine, "_runtime"),  # the handle built after ray.init, within _start
        (engine, "_shutdown_ray"),  # ray.shutdown + driver thread release, within _stop
    ]


# Timers of EXTRA_TIMERS the bench prints for ours: (timer name, label).
DETAIL_TIMERS = (
    ("_init_on_driver_thread", "ray.init (driver thread)"),
    ("_runtime", "_runtime"),
    ("_shutdown_ray", "ray.shutdown"),
)
