"""Compute-engine flavors for ZenML: Spark, Dask, Ray and BigQuery as stack components.

The step API, the flavors and their settings, from one place::

    from zenml_compute_engines import spark_session, SparkEngineSettings

Installed, the repository's `flavors/` and `materializers/` folders are the subpackages
`zenml_compute_engines.flavors` and `zenml_compute_engines.materializers` (pyproject.toml
maps them), so that they never collide with the `flavors/` and `materializers/` packages
ZenML's docs tell every project to create. Importing this package never imports pyspark,
ray, dask or google-cloud: the engine libraries load only when a step first asks for its
engine.
"""

from zenml_compute_engines.flavors import *  # noqa: F401,F403
from zenml_compute_engines.flavors import __all__ as _flavors_api
from zenml_compute_engines.materializers import BigQueryDataset

__all__ = [*_flavors_api, "BigQueryDataset"]
