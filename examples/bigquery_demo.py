"""The seed's BigQuery pipeline: a table in, aggregate it in BigQuery, pass the result on as
a `BigQueryDataset` (a reference: no rows copied), load it as pandas at the end.

No `bigquery.Client()` here: each step asks `zenml_compute_engines.bigquery_client()` for the client of
the active stack. It labels every job with the pipeline, run and step, caps the bytes a
query may bill, lists the jobs in the step's metadata, and is closed after the run.

    python examples/bigquery_demo.py

With no endpoint configured it starts a local BigQuery emulator (bqemulator, installed
once into .venv-bqemu) on 127.0.0.1 and stops it at the end: nothing contacts Google.
To run against BigQuery, set BQ_PROJECT (and BQ_LOCATION) with credentials in place
(Application Default Credentials, or register the component with a service connector or
`--service_account_json='{{secret.key}}'`); BQ_API_ENDPOINT points at another emulator.
"""

import os
import sys
from pathlib import Path
from typing import Annotated

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a plain script

import pandas as pd  # noqa: E402
from google.cloud import bigquery  # noqa: E402
from zenml import pipeline, step  # noqa: E402

from zenml_compute_engines import bigquery_client  # noqa: E402
from zenml_compute_engines import BigQueryDataset  # noqa: E402

COMPONENT = "bq_demo"  # also the name of the demo's stack
DATASET = "zenml_demo"


@step
def create_sales(n_rows: int = 10_000) -> Annotated[BigQueryDataset, "sales"]:
    """The table the seed's step reads: sales per region, generated in BigQuery."""
    client = bigquery_client()
    client.create_dataset(f"{client.project}.{DATASET}", exists_ok=True)
    client.delete_table(f"{client.project}.{DATASET}.processed_data", not_found_ok=True)
    table_id = f"{client.project}.{DATASET}.sales"
    client.query(
        f"CREATE OR REPLACE TABLE `{table_id}` AS "
        "SELECT CONCAT('region_', CAST(MOD(x, 5) AS STRING)) AS column1, MOD(x * 37, 1000) / 10.0 AS column2 "
        f"FROM UNNEST(GENERATE_ARRAY(1, {int(n_rows)})) AS x"
    ).result()
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
def report(averages: pd.DataFrame) -> Annotated[pd.DataFrame, "report"]:
    """Annotated pandas: the artifact's rows are read from BigQuery here."""
    return averages.sort_values("column1").reset_index(drop=True)


@pipeline(enable_cache=False)
def bigquery_demo(n_rows: int = 10_000) -> None:
    report(process_big_query_data(create_sales(n_rows=n_rows)))


def main() -> None:
    from zenml.client import Client

    from examples._bqemulator import Emulator
    from examples._setup import use_engine_stack

    emulator = None
    config = {"project": os.environ.get("BQ_PROJECT", "test"), "maximum_bytes_billed": "10GB"}
    if os.environ.get("BQ_LOCATION"):
        config["location"] = os.environ["BQ_LOCATION"]
    if os.environ.get("BQ_API_ENDPOINT"):
        config["api_endpoint"] = os.environ["BQ_API_ENDPOINT"]
    elif "BQ_PROJECT" not in os.environ:
        emulator = Emulator.start()
        print(f"Started a local BigQuery emulator: {emulator.rest_url} (gRPC {emulator.grpc_endpoint})")
        config.update(api_endpoint=emulator.rest_url, storage_api_endpoint=emulator.grpc_endpoint)
    try:
        stack = use_engine_stack("bigquery", COMPONENT, config)
        run = Client().get_pipeline_run(bigquery_demo().id)

        print(f"\nStack '{stack}': average column2 per region, computed in BigQuery:")
        print(run.steps["report"].outputs["report"][0].load().to_string(index=False))
        engine = run.steps["process_big_query_data"].run_metadata.get("compute_engine", {})
        print(f"Client: {engine.get('address')}, credentials: {engine.get('credentials')}, "
              f"created {engine.get('engine_starts_in_process')}x for the whole run and closed after it.")
        for job in engine.get("jobs", []):
            print(f"  job {job['job_id']} ({job['type']}, {job['state']}) -> {job.get('destination', '-')}, "
                  f"{job.get('bytes_processed', 0)} bytes processed")
        print("Artifacts:")
        for step_name, output in (("create_sales", "sales"), ("process_big_query_data", "processed")):
            artifact = run.steps[step_name].outputs[output][0]
            meta = artifact.run_metadata
            print(f"  {output:9s} {meta['table_id']}: {meta.get('num_rows')} rows in BigQuery, "
                  f"{meta['pinned']}; stored by reference at {artifact.uri}")
    finally:
        if emulator is not None:
            emulator.stop()


if __name__ == "__main__":
    main()
