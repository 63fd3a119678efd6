"""Spark DataFrames as artifacts in the shared dataset format, written by the executors."""

from __future__ import annotations

from typing import Any, ClassVar, Tuple, Type

from pyspark.sql import DataFrame

from zenml_compute_engines.materializers import dataset, spark_io
from zenml_compute_engines.flavors.sources import recorded_as_installed


@recorded_as_installed
class SparkDataFrameMaterializer(dataset.DatasetMaterializer):
    """Writes the DataFrame's partitions from the executors to the artifact store, then a
    manifest from the footers (see spark_io.py for local, Hadoop and Python paths).

    Unlike ZenML's own Spark materializer it never calls `df.count()`, so the
    DataFrame's lineage is computed once.
    """

    ASSOCIATED_TYPES: ClassVar[Tuple[Type[Any], ...]] = (DataFrame,)

    def save(self, data: DataFrame) -> None:
        spark_io.write(data, self.artifact_store, self.uri)
