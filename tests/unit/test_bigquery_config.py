"""BigQuery config, names, the cost guard's decision and job configuration (no server).

What needs a server runs against the emulator in tests/integration/test_bigquery_engine.py;
here are the decisions that are pure functions of their input, fed with realistic values
(recorded job resources with real byte counts, which the emulator cannot produce).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
from pydantic import ValidationError

from zenml_compute_engines import BigQueryEngineConfig, BigQueryEngineSettings
from zenml_compute_engines.flavors.bigquery import names
from zenml_compute_engines.flavors.sizes import format_bytes, parse_bytes
from zenml_compute_engines import BigQueryDataset
from tests.support.zenml_env import ROOT_DIR

# A finished query job as BigQuery returns it (jobs.get), trimmed to what we read.
RECORDED_QUERY_JOB = {
    "kind": "bigquery#job",
    "id": "acme-analytics:EU.job_7fQ2",
    "jobReference": {"projectId": "acme-analytics", "jobId": "job_7fQ2", "location": "EU"},
    "configuration": {
        "query": {
            "query": "SELECT user_id, SUM(amount) FROM `acme-analytics.sales.orders` GROUP BY 1",
            "destinationTable": {"projectId": "acme-analytics", "datasetId": "sales", "tableId": "totals"},
            "maximumBytesBilled": "50000000000",
        },
        "labels": {"zenml_step": "aggregate"},
    },
    "status": {"state": "DONE"},
    "statistics": {
        "creationTime": "1764670000000",
        "totalBytesProcessed": "48318382080",
        "totalSlotMs": "912345",
        "query": {
            "totalBytesProcessed": "48318382080",
            "totalBytesBilled": "48319430656",
            "cacheHit": False,
            "totalSlotMs": "912345",
        },
    },
}
# A dry run of a full scan of a 4.8 TB table (jobs.insert with dryRun=true).
RECORDED_DRY_RUN = {
    "kind": "bigquery#job",
    "jobReference": {"projectId": "acme-analytics", "location": "EU"},
    "configuration": {"query": {"query": "SELECT *\nFROM `acme-analytics.events.raw`"}, "dryRun": True},
    "status": {"state": "DONE"},
    "statistics": {"totalBytesProcessed": "4831838208000", "query": {"totalBytesProcessed": "4831838208000"}},
}


def _client(**policy):
    from google.auth.credentials import AnonymousCredentials

    from zenml_compute_engines.flavors.bigquery.client import EngineClient, JobPolicy, StorageAccess

    return EngineClient(
        project="acme-analytics",
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": "http://127.0.0.1:9"},  # never contacted here
        policy=JobPolicy(component="bq", **{"labels": {}, **policy}),
        storage=StorageAccess(enabled=False),
        verify_destination=True,
    )


def test_config_normalises_what_users_type():
    config = BigQueryEngineConfig(
        project="acme-analytics", location="eu", default_dataset="sales", maximum_bytes_billed="50GB",
        dry_run_limit_bytes="1TiB", api_endpoint="http://127.0.0.1:9050/", labels={"team": "ml"},
    )
    assert config.location == "EU" and config.default_dataset == "acme-analytics.sales"
    assert config.maximum_bytes_billed == 50 * 10**9 and config.dry_run_limit_bytes == 2**40
    assert config.api_endpoint == "http://127.0.0.1:9050" and config.endpoint_is_loopback
    assert not config.owns_engine  # a service: always attached
    assert config.address == "http://127.0.0.1:9050 (project acme-analytics)"
    assert BigQueryEngineConfig(project="p", location="europe-west4").location == "europe-west4"
    assert not BigQueryEngineConfig(project="p", api_endpoint="https://bigquery.googleapis.com").endpoint_is_loopback


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("project", "Acme", "not a Google Cloud project id"),
        ("project", "acme`; DROP TABLE x", "not a Google Cloud project id"),
        ("project", "", "not a Google Cloud project id"),
        ("location", "mars-north", "not a BigQuery location"),
        ("location", "EU'; --", "not a BigQuery location"),
        ("default_dataset", "sales-2024", "not a BigQuery dataset id"),
        ("default_dataset", "other.proj.sales", "not a Google Cloud project id"),
        ("snapshot_dataset", "a b", "not a BigQuery dataset id"),
        ("api_endpoint", "127.0.0.1:9050", "not an http(s) URL"),
        ("api_endpoint", "ftp://host", "not an http(s) URL"),
        ("api_endpoint", "http://host:99999", "not an http(s) URL"),
        ("storage_api_endpoint", "http://127.0.0.1:9060", "not a gRPC 'host:port'"),
        ("storage_api_endpoint", "host:0", "not a gRPC 'host:port'"),
        ("maximum_bytes_billed", 0, "greater than 0"),
        ("maximum_bytes_billed", "lots", "is not a size"),
        ("maximum_bytes_billed", 1.5, "whole number of bytes"),
        ("dry_run_limit_bytes", -5, "greater than 0"),
        ("labels", {"Team": "ml"}, "not a BigQuery label key"),
        ("labels", {"team": "ML Ops"}, "not a BigQuery label value"),
        ("labels", {"zenml_step": "x"}, "set by the component"),
        ("reproducibility", "forever", "'time_travel', 'snapshot' or 'none'"),
        ("snapshot_expiration_days", 0, "greater than 0"),
        ("startup_timeout_s", -1, "greater than 0"),
    ],
)
def test_bad_values_fail_naming_the_field(field, value, message):
    config = {"project": "acme-analytics", field: value}
    with pytest.raises(ValidationError) as error:
        BigQueryEngineConfig(**config)
    text = str(error.value)
    assert field in text and message in text


def test_project_is_required():
    with pytest.raises(ValidationError, match="project"):
        BigQueryEngineConfig()


def test_step_settings_validate_too():
    assert BigQueryEngineSettings(maximum_bytes_billed="2GiB").maximum_bytes_billed == 2 * 2**30
    with pytest.raises(ValidationError, match="labels"):
        BigQueryEngineSettings(labels={"1st": "x"})


def test_cli_registration_rejects_a_bad_project(zen):
    zenml = os.path.join(os.path.dirname(sys.executable), "zenml")
    result = subprocess.run(
        [zenml, "feature-store", "register", "bad_bq", "--flavor=bigquery", "--project=Acme;DROP", "--location=EU"],
        cwd=ROOT_DIR, capture_output=True, text=True, timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "project" in output and "not a Google Cloud project id" in output
    assert "bad_bq" not in {c.name for c in zen.list_stack_components(size=100).items}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"table_id": "acme.sales.orders`; DELETE FROM x"}, "table part"),
        ({"table_id": "acme.sales.orders' OR '1'='1"}, "table part"),
        ({"table_id": "acme.sales"}, "project.dataset.table"),
        ({"table_id": 'acme.sa"les.orders'}, "dataset part"),
        ({"table_id": "acme.sales.orders -- comment"}, "table part"),
        ({"project": "acme", "dataset": "sales", "table": "a;b"}, "table="),
        ({"table_id": "acme.sales.orders", "dataset": "other"}, "disagrees"),
    ],
)
def test_bigquery_dataset_refuses_unsafe_names(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BigQueryDataset(**kwargs)


def test_bigquery_dataset_forms_and_pinned_reference():
    from datetime import datetime, timezone

    by_id = BigQueryDataset(table_id="acme-analytics.sales.orders_2024")
    by_parts = BigQueryDataset(project="acme-analytics", dataset="sales", table="orders_2024")
    assert by_id == by_parts and str(by_id) == "acme-analytics.sales.orders_2024"
    assert (by_id.project, by_id.dataset, by_id.table) == ("acme-analytics", "sales", "orders_2024")
    assert by_id.pinned_ref == "`acme-analytics.sales.orders_2024`"
    pinned = BigQueryDataset(table_id=by_id.table_id, as_of=datetime(2026, 12, 1, 8, 30, tzinfo=timezone.utc))
    assert pinned.pinned_ref == (
        "`acme-analytics.sales.orders_2024` FOR SYSTEM_TIME AS OF TIMESTAMP '2026-12-01 08:30:00.000000+00:00'"
    )
    snap = BigQueryDataset(table_id=by_id.table_id, snapshot_id="acme-analytics.sales.orders__zenml_1")
    assert snap.pinned_ref == "`acme-analytics.sales.orders__zenml_1`"
    with pytest.raises(ValueError, match="timezone"):
        BigQueryDataset(table_id=by_id.table_id, as_of=datetime(2026, 12, 1))


def test_label_values_are_sanitised_to_bigquery_rules():
    value = names.label_value("Train Model/Ünï-v2 " + "x" * 80)
    assert len(value) == 63 and value.startswith("train_model__n_-v2_")
    assert names.check_labels({"zenml-ish": "ok"}) == {"zenml-ish": "ok"}


def test_sizes():
    assert parse_bytes("200MB") == 200 * 10**6 and parse_bytes("1.5GiB") == int(1.5 * 2**30)
    assert parse_bytes("2TB") == 2 * 10**12 and parse_bytes(7) == 7
    assert format_bytes(4831838208000) == "4.83 TB (4831838208000 bytes)"


def test_guard_refuses_a_recorded_full_scan_estimate():
    from google.cloud import bigquery

    from zenml_compute_engines.flavors.bigquery.client import JobPolicy, QueryCostError, check_estimate

    client = _client()
    dry = bigquery.QueryJob.from_api_repr(RECORDED_DRY_RUN, client)
    query = RECORDED_DRY_RUN["configuration"]["query"]["query"]
    policy = JobPolicy(component="bq", labels={}, step="features")
    with pytest.raises(QueryCostError) as error:
        check_estimate(query, dry.total_bytes_processed, parse_bytes("1TB"), policy)
    message = str(error.value)
    assert "step 'features'" in message
    assert "estimates 4.83 TB (4831838208000 bytes) processed" in message
    assert "over dry_run_limit_bytes=1.00 TB (1000000000000 bytes)" in message
    assert "Query: SELECT *\n" in message and "events.raw" not in message  # the first line only
    check_estimate(query, dry.total_bytes_processed, parse_bytes("5TB"), policy)  # under: runs


def test_job_facts_from_a_recorded_job():
    from google.cloud import bigquery

    from zenml_compute_engines.flavors.bigquery.client import JobRecord, job_facts, scope_facts, JobScope, JobPolicy

    client = _client()
    job = bigquery.QueryJob.from_api_repr(RECORDED_QUERY_JOB, client)
    facts = job_facts(client, JobRecord("query", job=job, estimated_bytes=48318382080), console=True)
    assert facts == {
        "job_id": "job_7fQ2",
        "type": "query",
        "state": "DONE",
        "location": "EU",
        "bytes_processed": 48318382080,
        "bytes_billed": 48319430656,
        "slot_ms": 912345,
        "cache_hit": False,
        "estimated_bytes": 48318382080,
        "destination": "acme-analytics.sales.totals",
        "console_url": "https://console.cloud.google.com/bigquery?project=acme-analytics&j=bq:EU:job_7fQ2&page=queryresults",
    }
    scope = JobScope(JobPolicy(component="bq", labels={}), is_step=True)
    scope.add(JobRecord("query", job=job))
    scope.add(JobRecord("query", job=job))
    totals = scope_facts(client, scope, console=False)["jobs_total"]
    assert totals == {"jobs": 2, "bytes_processed": 2 * 48318382080, "bytes_billed": 2 * 48319430656, "slot_ms": 2 * 912345}
    json.dumps(facts)  # step metadata must serialise


def test_query_config_merges_the_steps_defaults_into_the_users_config():
    from google.cloud import bigquery

    client = _client(
        labels={"team": "ml", "zenml_step": "aggregate", "zenml_run_id": "r1"},
        maximum_bytes_billed=10**9,
        default_dataset="acme-analytics.sales",
    )
    client.session_id = "sess-1"
    mine = bigquery.QueryJobConfig(
        destination="acme-analytics.sales.totals", labels={"owner": "ana", "zenml_step": "spoofed"}
    )
    merged = client._query_config(mine)
    assert merged.labels == {"team": "ml", "owner": "ana", "zenml_step": "aggregate", "zenml_run_id": "r1"}
    assert merged.maximum_bytes_billed == 10**9
    assert merged.default_dataset.dataset_id == "sales"
    assert merged.destination.table_id == "totals"
    assert [(p.key, p.value) for p in merged.connection_properties] == [("session_id", "sess-1")]
    assert mine.labels == {"owner": "ana", "zenml_step": "spoofed"}  # the user's object is untouched
    capped = client._query_config(bigquery.QueryJobConfig(maximum_bytes_billed=5))
    assert capped.maximum_bytes_billed == 5  # an explicit job value wins


@pytest.mark.parametrize(
    "disposition, exists, statement",
    [
        ("WRITE_TRUNCATE", False, "CREATE OR REPLACE TABLE `acme-analytics.sales.totals` AS\nSELECT 1"),
        (None, False, "CREATE TABLE `acme-analytics.sales.totals` AS\nSELECT 1"),
        ("WRITE_APPEND", True, "INSERT INTO `acme-analytics.sales.totals`\nSELECT 1"),
        ("WRITE_APPEND", False, "CREATE TABLE `acme-analytics.sales.totals` AS\nSELECT 1"),
    ],
)
def test_destination_rewrite_for_endpoints_that_ignore_it(disposition, exists, statement, monkeypatch):
    from google.cloud import bigquery

    client = _client()
    monkeypatch.setattr(client, "_exists", lambda table: exists)
    config = bigquery.QueryJobConfig(destination="acme-analytics.sales.totals", write_disposition=disposition)
    ddl, ddl_config = client._destination_as_ddl("SELECT 1", config)
    assert ddl == statement
    assert "destinationTable" not in ddl_config._properties["query"]
    assert "writeDisposition" not in ddl_config._properties["query"]


def test_application_default_credentials_from_a_key_file(tmp_path, monkeypatch):
    """The last fallback, through GOOGLE_APPLICATION_CREDENTIALS (a file: no metadata server)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from zenml_compute_engines.flavors.bigquery import credentials

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    path = tmp_path / "key.json"
    path.write_text(json.dumps({
        "type": "service_account", "project_id": "acme-analytics", "private_key_id": "k",
        "private_key": pem.decode(), "client_email": "adc@acme-analytics.iam.gserviceaccount.com",
        "token_uri": "http://127.0.0.1:9/token",
    }))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(path))
    component = SimpleNamespace(
        name="bq",
        get_connector=lambda: None,
        config=BigQueryEngineConfig(project="acme-analytics"),
    )
    resolved = credentials.resolve(component)
    assert resolved.source == "application default credentials"
    assert resolved.principal == "adc@acme-analytics.iam.gserviceaccount.com"
    assert "PRIVATE" not in repr(resolved)


def test_a_malformed_key_is_refused_without_echoing_it():
    from zenml_compute_engines.flavors.bigquery import credentials
    from zenml_compute_engines.flavors.engine import EngineError

    component = SimpleNamespace(
        name="bq",
        get_connector=lambda: None,
        config=BigQueryEngineConfig(project="acme-analytics", service_account_json='{"private_key": "s3cr3t"'),
    )
    with pytest.raises(EngineError) as error:
        credentials.resolve(component)
    assert "service_account_json of 'bq'" in str(error.value) and "s3cr3t" not in str(error.value)
