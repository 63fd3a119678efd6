"""BigQuery pipelines the integration tests run (under the source root, so ZenML can load their steps)."""

import json
import os
import time
from typing import Annotated, Any, Dict

import dask.dataframe as dd
import pandas as pd
import pyarrow as pa
from google.cloud import bigquery
from zenml import pipeline, step

from zenml_compute_engines import BigQueryEngineSettings, bigquery_client
from zenml_compute_engines import BigQueryDataset
from tests.support import dask_cluster as probes
from tests.support.bigquery_proxy import RUNNING_MARKER


@step
def name_table(table_id: str) -> Annotated[BigQueryDataset, "source"]:
    """Returns a reference without touching the client: the materializer starts the engine."""
    return BigQueryDataset(table_id=table_id)


@step
def process_big_query_data(dataset: BigQueryDataset) -> Annotated[BigQueryDataset, "processed"]:
    """The seed's step, unchanged but for where the client comes from."""
    client = bigquery_client()
    query = f"SELECT column1, AVG(column2) AS avg_column2 FROM `{dataset.table_id}` GROUP BY column1"
    result_table_id = f"{dataset.project}.{dataset.dataset}.processed_data"
    client.query(query, job_config=bigquery.QueryJobConfig(destination=result_table_id)).result()
    return BigQueryDataset(table_id=result_table_id)


@step
def rows_as_pandas(frame: pd.DataFrame) -> Annotated[Dict[str, float], "averages"]:
    return {str(k): float(v) for k, v in zip(frame.column1, frame.avg_column2)}


@step
def rows_as_arrow(table: pa.Table) -> Annotated[int, "arrow_rows"]:
    return table.num_rows


@step
def rows_as_dask(frame: dd.DataFrame, scheduler: str) -> Annotated[Dict[str, Any], "dask_summary"]:
    """Computes on the fixture's Dask cluster; each partition records the pid that read it."""
    from distributed import Client

    with Client(scheduler, set_as_default=False, timeout="20s") as client:
        tagged = client.compute(frame.map_partitions(probes.tag_pid)).result()
    return {
        "npartitions": frame.npartitions,
        "rows": len(tagged),
        "sum_column2": float(tagged.column2.sum()),
        "reader_pids": sorted(set(int(p) for p in tagged.pid)),
        "driver_pid": os.getpid(),
    }


@step
def query_to_dataframe(table_id: str) -> Annotated[int, "rows"]:
    """What users write: rows of a query as pandas (to_dataframe would use the Storage
    Read API when google-cloud-bigquery-storage is installed)."""
    frame = bigquery_client().query(f"SELECT * FROM `{table_id}`").to_dataframe()
    return len(frame)


@step
def client_identity() -> Annotated[Dict[str, Any], "identity"]:
    client = bigquery_client()
    return {"id": id(client), "same_twice": client is bigquery_client(), "project": client.project}


@step(settings={"feature_store": BigQueryEngineSettings(maximum_bytes_billed=5_000, labels={"team": "ml"})})
def labelled_query(dataset: BigQueryDataset) -> Annotated[int, "count"]:
    client = bigquery_client()
    rows = list(client.query(f"SELECT COUNT(*) AS n FROM `{dataset.table_id}`").result())
    client.query_and_wait("SELECT 1 AS one")
    schema = [bigquery.SchemaField("v", "INT64")]
    destination = f"{dataset.project}.{dataset.dataset}.loaded"
    client.load_table_from_json([{"v": 1}], destination, job_config=bigquery.LoadJobConfig(schema=schema)).result()
    return int(rows[0].n)


@step
def guarded_query(marker: str) -> Annotated[int, "never"]:
    bigquery_client().query(f"SELECT 1 AS x -- {marker}\n, 2 AS y").result()
    return 1


@step
def start_long_job_then_fail(marker_file: str) -> int:
    job = bigquery_client().query(f"SELECT 1 /* {RUNNING_MARKER} */")
    with open(marker_file, "w") as handle:
        json.dump({"job_id": job.job_id, "pid": os.getpid()}, handle)
    raise RuntimeError("this step fails on purpose while its job runs")


@step
def start_long_job_and_wait(marker_file: str) -> int:
    job = bigquery_client().query(f"SELECT 1 /* {RUNNING_MARKER} */")
    with open(marker_file + ".tmp", "w") as handle:
        json.dump({"job_id": job.job_id, "pid": os.getpid()}, handle)
    os.replace(marker_file + ".tmp", marker_file)
    time.sleep(120)
    return 0


@step
def session_write(dataset_id: str) -> Annotated[str, "session_id"]:
    client = bigquery_client()
    client.query("CREATE TEMP TABLE shared AS SELECT 41 AS v").result()
    return client.session_id


@step
def session_read(session_id: str) -> Annotated[int, "from_temp_table"]:
    client = bigquery_client()
    assert client.session_id == session_id
    return int(list(client.query("SELECT v + 1 AS v FROM shared").result())[0].v)


@pipeline(enable_cache=False)
def seed_pipeline(table_id: str) -> None:
    processed = process_big_query_data(name_table(table_id))
    rows_as_pandas(processed)


@pipeline(enable_cache=False)
def reference_only_pipeline(table_id: str) -> None:
    name_table(table_id)


@pipeline(enable_cache=False)
def rows_pipeline(table_id: str, scheduler: str) -> None:
    source = name_table(table_id)
    rows_as_arrow(source)
    rows_as_dask(source, scheduler)


@pipeline(enable_cache=False)
def dataframe_pipeline(table_id: str) -> None:
    query_to_dataframe(table_id)


@pipeline(enable_cache=False)
def two_client_steps() -> None:
    client_identity(id="first")
    client_identity(id="second", after="first")


@pipeline(enable_cache=False)
def labelled_pipeline(table_id: str) -> None:
    labelled_query(name_table(table_id))


@pipeline(enable_cache=False)
def guarded_pipeline(marker: str) -> None:
    guarded_query(marker)


@pipeline(enable_cache=False)
def failing_job_pipeline(marker_file: str) -> None:
    start_long_job_then_fail(marker_file)


@pipeline(enable_cache=False)
def sleeping_job_pipeline(marker_file: str) -> None:
    start_long_job_and_wait(marker_file)


@pipeline(enable_cache=False)
def session_pipeline(dataset_id: str) -> None:
    session_read(session_write(dataset_id))
