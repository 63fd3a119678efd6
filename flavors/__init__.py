"""Compute-engine flavors for ZenML: Spark (more to come) as stack components.

Importing this package never imports pyspark, ray, dask or google-cloud: the engine
libraries load only when a step first asks for its engine.
"""

from flavors.context import compute_engine, spark_session
from flavors.engine import (
    BaseEngine,
    BaseEngineConfig,
    BaseEngineFlavor,
    BaseEngineSettings,
    EngineError,
    shutdown_engines,
)
from flavors.spark.flavor import SparkEngineConfig, SparkEngineFlavor, SparkEngineSettings

__all__ = [
    "BaseEngine",
    "BaseEngineConfig",
    "BaseEngineFlavor",
    "BaseEngineSettings",
    "EngineError",
    "SparkEngineConfig",
    "SparkEngineFlavor",
    "SparkEngineSettings",
    "compute_engine",
    "shutdown_engines",
    "spark_session",
]
