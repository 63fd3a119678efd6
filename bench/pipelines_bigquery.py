"""The two ways to pass a BigQuery table between two steps that bench/bigquery_artifacts.py
compares (under the source root, so ZenML can load their steps).

  reference  ours: step 1 returns `BigQueryDataset(table_id=...)`, step 2 queries it.
  dataframe  the naive round trip: step 1 returns `to_dataframe()` of the table (ZenML
             stores it as parquet), step 2 loads it back with
             `load_table_from_dataframe()` and queries the copy.

Both second steps run the same `COUNT(*)`; both use the stack's client, which reads rows
over the Storage Read API (the fastest way the naive pattern has).
"""

from typing import Annotated

import pandas as pd
from google.cloud import bigquery
from zenml import pipeline, step

from zenml_compute_engines import bigquery_client
from zenml_compute_engines import BigQueryDataset


def _count(table_id: str) -> int:
    return int(next(iter(bigquery_client().query(f"SELECT COUNT(*) AS n FROM `{table_id}`").result())).n)


@step
def hand_over_reference(table_id: str) -> Annotated[BigQueryDataset, "table"]:
    return BigQueryDataset(table_id=table_id)


@step
def count_reference(table: BigQueryDataset) -> Annotated[int, "rows"]:
    return _count(table.table_id)


@step
def hand_over_dataframe(table_id: str) -> Annotated[pd.DataFrame, "table"]:
    return bigquery_client().list_rows(table_id).to_dataframe()


@step
def count_reloaded(frame: pd.DataFrame, table_id: str) -> Annotated[int, "rows"]:
    copy = f"{table_id}_reloaded"
    config = bigquery.LoadJobConfig(write_disposition="WRITE_TRUNCATE")
    bigquery_client().load_table_from_dataframe(frame, copy, job_config=config).result()
    return _count(copy)


@pipeline(enable_cache=False)
def reference_pipeline(table_id: str) -> None:
    count_reference(hand_over_reference(table_id))


@pipeline(enable_cache=False)
def dataframe_pipeline(table_id: str) -> None:
    count_reloaded(hand_over_dataframe(table_id), table_id)
