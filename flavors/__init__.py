"""Compute-engine flavors for ZenML: Spark, Dask, Ray and BigQuery as stack components.

Importing this package never imports pyspark, ray, dask or google-cloud: the engine
libraries load only when a step first asks for its engine.
"""

from flavors.bigquery.flavor import BigQueryEngineConfig, BigQueryEngineFlavor, BigQueryEngineSettings
from flavors.bundle.flavor import EngineBundleConfig, EngineBundleFlavor, EngineBundleSettings
from flavors.context import bigquery_client, compute_engine, dask_client, ray_runtime, spark_session
from flavors.engine import (
    BaseEngine,
    BaseEngineConfig,
    BaseEngineFlavor,
    BaseEngineSettings,
    EngineError,
    shutdown_engines,
)
from flavors.dask.flavor import DaskEngineConfig, DaskEngineFlavor, DaskEngineSettings
from flavors.ray.flavor import RayEngineConfig, RayEngineFlavor, RayEngineSettings
from flavors.spark.flavor import SparkEngineConfig, SparkEngineFlavor, SparkEngineSettings

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
