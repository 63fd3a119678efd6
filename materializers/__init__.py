"""Artifact formats: one parquet + manifest layout (dataset.py) and a materializer per engine type.

Import a materializer module (e.g. `zenml_compute_engines.materializers.spark_dataframe`) to register it with ZenML;
the engine components do this for you when the engine library is already imported.
`BigQueryDataset` (a table passed by reference) is importable from here; importing it
registers its materializer and imports no google-cloud module.
"""

if __name__ != "zenml_compute_engines.materializers":  # imported from this repository's root as `materializers`
    raise ImportError(
        "This is the materializers/ folder of the zenml-compute-engines repository, installed as "
        "`zenml_compute_engines.materializers`: import it under that name (pip install -e . maps it). "
        "Imported as `materializers` too, its modules would exist twice in one process, with two "
        "registries of live engines."
    )

from zenml_compute_engines.materializers.bigquery_dataset import BigQueryDataset

__all__ = ["BigQueryDataset"]
