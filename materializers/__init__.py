"""Artifact formats: one parquet + manifest layout (dataset.py) and a materializer per engine type.

Import a materializer module (e.g. `materializers.spark_dataframe`) to register it with ZenML;
the engine components do this for you when the engine library is already imported.
`BigQueryDataset` (a table passed by reference) is importable from here; importing it
registers its materializer and imports no google-cloud module.
"""

from materializers.bigquery_dataset import BigQueryDataset

__all__ = ["BigQueryDataset"]
