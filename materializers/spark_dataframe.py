"""Spark DataFrames as artifacts in the shared dataset format, written by the executors."""

from __future__ import annotations

from typing import Any, ClassVar, Tuple, Type

from pyspark.sql import DataFrame, SparkSession

from flavors.storage import spark_path
from materializers import dataset


def _session_for_loading() -> SparkSession:
    """The step's engine; outside a step the active stack's, else a local session."""
    from flavors.context import compute_engine
    from flavors.engine import EngineError

    try:
        return compute_engine("spark").session()
    except EngineError:
        return SparkSession.builder.master("local[*]").getOrCreate()


class SparkDataFrameMaterializer(dataset.DatasetMaterializer):
    """Writes `df.write.parquet` to the artifact store, then a manifest from the footers.

    Unlike ZenML's own Spark materializer it never calls `df.count()`, so the
    DataFrame's lineage is computed once.
    """

    ASSOCIATED_TYPES: ClassVar[Tuple[Type[Any], ...]] = (DataFrame,)

    def load(self, data_type: Type[Any]) -> DataFrame:
        dataset.read_manifest(self.artifact_store, self.uri)
        return _session_for_loading().read.parquet(spark_path(dataset.data_dir(self.uri)))

    def save(self, data: DataFrame) -> None:
        data.write.mode("overwrite").parquet(spark_path(dataset.data_dir(self.uri)))
        self._manifest = dataset.commit(
            self.artifact_store, self.uri, engine="spark", engine_version=data.sparkSession.version
        )
