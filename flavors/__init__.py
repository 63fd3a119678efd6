"""Compute-engine flavors for ZenML: Spark, Dask, Ray and BigQuery as stack components.

Importing this package never imports pyspark, ray, dask or google-cloud: the engine
libraries load only when a step first asks for its engine.
"""

if __name__ != "zenml_compute_engines.flavors":  # imported from this repository's root as `flavors`
    raise ImportError(
        "This is the flavors/ folder of the zenml-compute-engines repository, installed as "
        "`zenml_compute_engines.flavors`: import it under that name (pip install -e . maps it). "
        "Imported as `flavors` too, its modules would exist twice in one process, with two "
        "registries of live engines."
    )

from zenml_compute_engines.flavors.bigquery.flavor import BigQueryEngineConfig, BigQueryEngineFlavor, BigQueryEngineSettings
from zenml_compute_engines.flavors.bundle.flavor import EngineBundleConfig, EngineBundleFlavor, EngineBundleSettings
from zenml_compute_engines.flavors.context import bigquery_client, compute_engine, dask_client, ray_runtime, spark_session
from zenml_compute_engines.flavors.engine import (
    BaseEngine,
    BaseEngineConfig,
    BaseEngineFlavor,
    BaseEngineSettings,
    EngineError,
    shutdown_engines,
)
from zenml_compute_engines.flavors.dask.flavor import DaskEngineConfig, DaskEngineFlavor, DaskEngineSettings
from zenml_compute_engines.flavors.ray.flavor import RayEngineConfig, RayEngineFlavor, RayEngineSettings
from zenml_compute_engines.flavors.spark.flavor import SparkEngineConfig, SparkEngineFlavor, SparkEngineSettings

__all__ = [
    "BaseEngine",
    "BaseEngineConfig",
    "BaseEngineFlavor",
    "BaseEngineSettings",
    "BigQueryEngineConfig",
    "BigQueryEngineFlavor",
    "BigQueryEngineSettings",
    "DaskEngineConfig",
    "DaskEngineFlavor",
    "DaskEngineSettings",
    "EngineBundleConfig",
    "EngineBundleFlavor",
    "EngineBundleSettings",
    "EngineError",
    "RayEngineConfig",
    "RayEngineFlavor",
    "RayEngineSettings",
    "SparkEngineConfig",
    "SparkEngineFlavor",
    "SparkEngineSettings",
    "bigquery_client",
    "compute_engine",
    "dask_client",
    "ray_runtime",
    "shutdown_engines",
    "spark_session",
]
