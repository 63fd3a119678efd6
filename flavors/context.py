"""Find the compute engine of the running step (or, outside a step, of the active stack)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from zenml_compute_engines.flavors.engine import BaseEngine, EngineError

if TYPE_CHECKING:
    from distributed import Client as DaskClient
    from google.cloud.bigquery import Client as BigQueryClient
    from pyspark.sql import SparkSession

    from zenml_compute_engines.flavors.ray.flavor import RayRuntime

_REGISTER_HINT = {
    "spark": (
        "zenml-compute-engines register && "
        "zenml feature-store register spark_local --flavor=spark && "
        "zenml stack update -f spark_local"
    ),
    "dask": (
        "zenml-compute-engines register && "
        "zenml feature-store register dask_local --flavor=dask && "
        "zenml stack update -f dask_local"
    ),
    "ray": (
        "zenml-compute-engines register && "
        "zenml feature-store register ray_local --flavor=ray && "
        "zenml stack update -f ray_local"
    ),
    "bigquery": (
        "zenml-compute-engines register && "
        "zenml feature-store register bq --flavor=bigquery --project=<project> --location=<location> && "
        "zenml stack update -f bq"
    ),
}


def compute_engine(kind: Optional[str] = None) -> BaseEngine:
    """The engine component of the active stack, optionally checked to be of `kind`.

    Inside a step the orchestrator has activated the step's stack, so this is the
    engine of the running step; `.session()` on it applies the step's settings. With an
    engine bundle (`--flavor=engines`) in the slot, it is the bundle's member of `kind`.

    Raises:
        EngineError: if the active stack has no engine (of that kind); the message
            says which commands register one.
    """
    from zenml.client import Client

    from zenml_compute_engines.flavors.bundle.engine import EngineBundle

    stack = Client().active_stack
    component = stack.feature_store
    if isinstance(component, EngineBundle):
        if kind is None:
            raise EngineError(
                f"The active stack '{stack.name}' holds the engine bundle '{component.name}' "
                f"({', '.join(sorted(component.members))}); name the kind: compute_engine('spark')."
            )
        return component.member(kind)
    if isinstance(component, BaseEngine) and kind in (None, component.kind):
        return component
    wanted = f"a {kind} engine" if kind else "a compute engine"
    found = (
        f"its feature_store '{component.name}' is a {getattr(component, 'kind', component.flavor)}"
        if component is not None
        else "it has none"
    )
    hint = _REGISTER_HINT.get(kind or "spark")
    raise EngineError(f"The active stack '{stack.name}' needs {wanted}, but {found}. Register one: {hint}")


def spark_session() -> "SparkSession":
    """The SparkSession of the running step, started or connected on first use.

    Never call `stop()` on it: the engine component stops owned engines after the
    run's outputs are saved and never stops a cluster it did not start.
    """
    return compute_engine("spark").session()


def dask_client() -> "DaskClient":
    """The `distributed.Client` of the running step, started or connected on first use.

    It is also the default client while the step runs, so `df.compute()`,
    `dask.compute(...)` and `client.submit(...)` all run on the engine's cluster, with
    the step's `DaskEngineSettings` resources/annotations applied. The same client serves
    every step of the run in this process. Never call `close()` on it (or on its
    cluster): the engine component stops an owned LocalCluster after the run's outputs
    are saved and only disconnects from a cluster it did not start.
    """
    return compute_engine("dask").session()


def ray_runtime() -> "RayRuntime":
    """The step's Ray, initialized or connected on first use; afterwards `ray.remote`,
    `ray.get` and `ray.data` work in the step.

    Returns a frozen `RayRuntime` with the cluster `address`, `dashboard_url`, Ray
    `job_id` and `namespace` (plus the step's `remote_args` and a `.remote(fn)` helper
    applying them). Calling it again in the same step (or a later step of the same run)
    returns the same driver and never calls `ray.init` twice. Never call `ray.init()` or
    `ray.shutdown()` yourself: the engine component shuts down a Ray it started after the
    run's outputs are saved, only disconnects from a cluster it attached to, and leaves a
    Ray you initialized yourself alone.
    """
    return compute_engine("ray").session()


def bigquery_client() -> "BigQueryClient":
    """The step's `google.cloud.bigquery.Client`, created on first use and shared by the
    steps of the run.

    Every query and load job it starts carries labels for the pipeline, run and step, the
    component's (or step's) `maximum_bytes_billed` and default dataset, and the run's
    BigQuery session if `session` is on; with `dry_run_limit_bytes` each query is dry-run
    first and refused if its estimate is over the limit. The jobs are listed in the step's
    metadata, and those still running when the step fails or is interrupted are
    cancelled. Never call `close()` on it: the component closes it when the run ends.
    """
    return compute_engine("bigquery").session()
