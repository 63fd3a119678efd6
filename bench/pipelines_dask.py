"""Steps and pipelines for `bench/engine_reuse.py`, Dask edition.

A module under the ZenML source root so the local orchestrator can load its steps by
source. It provides the names `bench/engine_reuse.py` calls (the same as
bench/pipelines_spark.py): `COMPONENT_CONFIG`, `reuse_pipeline(mode, steps, rows)`,
`build_floor()`, `release_floor()`, `release_leftovers()`,
`component_class()`, `expected_total(steps, rows)`, `STEP_TIMES`, plus the optional
`PROCESS_LABEL`/`engine_processes()` (which processes must be gone after a run) and
`BREAKDOWN_LABELS` (row names of the bench's time table).

`mode` selects how a step gets its client; the Dask job itself is identical:
  seed  - `LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
          dashboard_address="127.0.0.1:0")` + `Client(cluster)` ... `client.close();
          cluster.close()` in every step (the per-step pattern users write by hand)
  floor - the cluster + client `build_floor()` made by hand before the pipeline call, never
          closed during the run
  ours  - `zenml_compute_engines.dask_client()`: the engine component of the active stack (same sizing)
"""

import time
from typing import Any, Dict, List, Optional

import dask.dataframe as dd
import numpy as np
import pandas as pd
from distributed import Client, LocalCluster
from zenml import pipeline, step

from bench._common import dask_cluster_kwargs, dask_worker_descendants

COMPONENT_CONFIG: Dict[str, Any] = {"n_workers": 1, "threads_per_worker": 1, "processes": True}
PROCESS_LABEL = "dask worker"
BREAKDOWN_LABELS: Dict[str, Optional[str]] = {
    "session": "build/get client",
    "jobs": "dask jobs",
    "step_stop": "close() in steps",
    "jvm_exit": None,  # no driver JVM: row omitted
}

# Time spent inside step bodies of this process, for the breakdown the bench prints:
# one dict per executed step: acquire (getting the client), job, release (seed's close()).
STEP_TIMES: List[Dict[str, float]] = []

_FLOOR: Dict[str, Any] = {}


def _build() -> Dict[str, Any]:
    cluster = LocalCluster(**dask_cluster_kwargs(n_workers=COMPONENT_CONFIG["n_workers"]))
    try:
        client = Client(cluster)
    except BaseException:
        cluster.close()
        raise
    return {"cluster": cluster, "client": client}


def _close(built: Dict[str, Any]) -> None:
    try:
        built["client"].close()
    finally:
        built["cluster"].close()


def build_floor() -> Client:
    """The floor's cluster and client: built by hand once, before the pipeline call."""
    _FLOOR.update(_build())
    return _FLOOR["client"]


def release_floor() -> None:
    if _FLOOR:
        _close(dict(_FLOOR))
        _FLOOR.clear()


def release_leftovers() -> None:
    """Close a default client a variant may have left (none expected: seed closes its own)."""
    try:
        client = Client.current(allow_global=True)
    except ValueError:
        return
    cluster = getattr(client, "cluster", None)
    client.close()
    if cluster is not None:
        cluster.close()


def engine_processes() -> List[Any]:
    """Live Dask worker processes below this process (must be none after a run)."""
    return dask_worker_descendants()


def component_class() -> type:
    from zenml_compute_engines.flavors.dask.engine import DaskEngine

    return DaskEngine


def _acquire(mode: str) -> Any:
    """(client, what to close in the step or None)."""
    if mode == "seed":
        built = _build()
        return built["client"], built
    if mode == "floor":
        return _FLOOR["client"], None
    if mode == "ours":
        from zenml_compute_engines import dask_client

        return dask_client(), None
    raise ValueError(f"unknown mode {mode!r}")


def expected_total(steps: int, rows: int) -> int:
    return steps * rows


@step
def dask_job(prev: int, mode: str, rows: int) -> int:
    """from_pandas + a column transform + groupBy count through the client; returns a small int."""
    t0 = time.perf_counter()
    client, owned = _acquire(mode)
    t1 = time.perf_counter()
    try:
        frame = pd.DataFrame({"id": np.arange(rows, dtype="int64")})
        ddf = dd.from_pandas(frame, npartitions=4)
        ddf = ddf.assign(k=ddf.id % 7)
        counts = client.compute(ddf.groupby("k").id.count()).result()
        total = int(counts.sum())
        t2 = time.perf_counter()
    finally:
        if owned is not None:
            _close(owned)
    t3 = time.perf_counter()
    STEP_TIMES.append({"acquire": t1 - t0, "job": t2 - t1, "release": t3 - t2})
    return prev + total


@pipeline(enable_cache=False)
def reuse_pipeline(mode: str, steps: int = 5, rows: int = 200_000) -> None:
    total = 0
    for i in range(steps):
        total = dask_job(total, mode, rows, id=f"job_{i}")

