"""The BigQuery engine against a real BigQuery emulator on 127.0.0.1 (bqemulator, own venv).

Requests go through a recording proxy (tests/support/bigquery_proxy.py) so the tests can
check what our client *sends* where the emulator ignores it (labels, byte caps, session
properties), and so the few things the emulator cannot do at all (a job that keeps
running, dry-run byte counts, aborting a session, Google's token endpoint) can be played.
Everything else (datasets, tables, queries, CTAS, snapshots, sessions with temporary
tables, REST and Storage Read API row reads) runs on the emulator itself.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
import uuid

import pytest

from zenml_compute_engines import EngineError, compute_engine
from zenml_compute_engines.flavors.engine import live_engines
from tests.support import zenml_env
from tests.support.bigquery_proxy import TOKEN
from tests.support.ports import free_port

SOURCE_ROWS = [("a", 1.0), ("b", 2.0), ("a", 3.0)]


@pytest.fixture
def bq(bq_emulator, zen):
    """Per test: a fresh dataset with a source table, a clean proxy log, and a factory that
    activates a stack whose feature_store is a BigQuery engine on the proxy."""
    from examples._bqemulator import anonymous_client

    emulator, proxy = bq_emulator
    dataset = f"ds_{uuid.uuid4().hex[:8]}"
    admin = anonymous_client(emulator.rest_url)
    admin.create_dataset(dataset)
    values = " UNION ALL ".join(f"SELECT '{k}' AS column1, {v} AS column2" for k, v in SOURCE_ROWS)
    admin.query(f"CREATE TABLE `test.{dataset}.src` AS {values}").result()
    proxy.clear()

    class Env:
        def __init__(self) -> None:
            self.emulator, self.proxy, self.admin, self.dataset = emulator, proxy, admin, dataset
            self.source = f"test.{dataset}.src"

        def stack(self, connector_id=None, **config):
            return zenml_env.activate_engine_stack(
                "bigquery", {"project": "test", "api_endpoint": proxy.url, **config}, connector_id=connector_id
            )

    yield Env()
    zenml_env.teardown_engines()


def _latest_run(zen):
    return zen.list_pipeline_runs(sort_by="desc:created", size=1).items[0]


def _step_jobs(proxy, step):
    return [j for j in proxy.job_inserts() if j["configuration"].get("labels", {}).get("zenml_step") == step]


def test_seed_step_runs_unchanged_with_a_client_from_the_stack(bq):
    from zenml.client import Client

    from tests.integration.bigquery_pipelines import seed_pipeline

    stack = bq.stack(maximum_bytes_billed="1GB", prestart="auto")
    run = Client().get_pipeline_run(seed_pipeline(table_id=bq.source).id)

    # The seed's query wrote its destination table (the emulator ignores `destination`;
    # our client wrote it with CTAS instead) and the next step read it as pandas.
    assert run.steps["rows_as_pandas"].outputs["averages"][0].load() == {"a": 2.0, "b": 2.0}
    processed = bq.admin.get_table(f"test.{bq.dataset}.processed_data")
    assert processed.num_rows == 2

    # One client for the whole run, closed when it ended.
    facts = zenml_env.step_metadata(run, "process_big_query_data")
    assert facts["engine"] == "bigquery" and facts["mode"] == "attached"
    assert facts["engine_starts_in_process"] == 1
    # The client was made while ZenML prepared the run (the steps pass BigQuery tables).
    assert facts["prestarted"] is True and "BigQueryDataset" in facts["prestart_reason"]
    assert facts["credentials"] == "anonymous (loopback api_endpoint)"
    assert facts["storage_read_api"] == "off (rows over REST)"
    assert stack.feature_store.id not in live_engines()

    # Every job of the run carried the pipeline, run and step labels and the byte cap.
    inserts = bq.proxy.job_inserts()
    assert inserts
    for job in inserts:
        labels = job["configuration"]["labels"]
        assert labels["zenml_pipeline"] == "seed_pipeline"
        assert labels["zenml_run_id"] == str(run.id)
        assert labels["zenml_run"] == run.name.lower()[:63]
        assert job["configuration"]["query"]["maximumBytesBilled"] == "1000000000"
    steps = {job["configuration"]["labels"]["zenml_step"] for job in inserts}
    assert steps == {"process_big_query_data"}

    # The step's metadata lists its jobs: the query as the user wrote it, then the CTAS.
    jobs = facts["jobs"]
    assert [j["type"] for j in jobs] == ["query", "query"]
    assert jobs[0]["destination"] == f"test.{bq.dataset}.processed_data"
    assert all(j["state"] == "DONE" and j["job_id"] for j in jobs)
    assert facts["jobs_total"]["jobs"] == 2
    # The same jobs in the usage shape every engine reports (docs/usage.md).
    usage = facts["usage"]
    assert usage["source"] == "bigquery job statistics" and usage["jobs"] == 2
    assert usage["bytes_read"] == facts["jobs_total"]["bytes_processed"]
    assert usage["busy_s"] == round(facts["jobs_total"]["slot_ms"] / 1000, 3)
    assert "tasks" not in usage  # BigQuery has no tasks: absent, not invented
    assert "console_url" not in jobs[0]  # an emulator's jobs have no Google console page

    # The table passed as a reference: a small JSON in the artifact store, no row data.
    artifact = run.steps["process_big_query_data"].outputs["processed"][0]
    store = Client().active_stack.artifact_store
    files = sorted(str(f) for f in store.listdir(artifact.uri))
    assert files == ["bigquery_table.json", "preview.html"]
    reference = json.loads(store.open(os.path.join(artifact.uri, "bigquery_table.json")).read())
    assert reference["table_id"] == f"test.{bq.dataset}.processed_data"
    assert reference["num_rows"] == 2 and reference["pinned"] == "time_travel"
    meta = artifact.run_metadata
    assert meta["num_rows"] == 2 and meta["schema"] == {"column1": "STRING", "avg_column2": "FLOAT"}
    assert meta["pinned"].startswith("as of ")
    assert artifact.visualizations
    loaded = artifact.load()
    assert loaded.table_id == reference["table_id"] and loaded.as_of is not None


def test_client_started_while_outputs_are_saved_is_closed_too(bq):
    """The only step never asks for the client; its output's materializer does (after
    ZenML called cleanup_step_run). The end-of-step teardown still closes it."""
    from tests.integration.bigquery_pipelines import reference_only_pipeline

    stack = bq.stack()
    run = reference_only_pipeline(table_id=bq.source)
    assert run.steps["name_table"].outputs["source"][0].run_metadata["num_rows"] == 3
    assert stack.feature_store.id not in live_engines()


def test_steps_of_a_run_share_one_client(bq):
    from tests.integration.bigquery_pipelines import two_client_steps

    stack = bq.stack()
    run = two_client_steps()
    first = run.steps["first"].outputs["identity"][0].load()
    second = run.steps["second"].outputs["identity"][0].load()
    assert first["id"] == second["id"] and first["same_twice"] and first["project"] == "test"
    assert zenml_env.step_metadata(run, "second")["engine_starts_in_process"] == 1
    assert stack.feature_store.id not in live_engines()


def test_step_settings_override_the_cap_and_add_labels(bq):
    from tests.integration.bigquery_pipelines import labelled_pipeline

    bq.stack(maximum_bytes_billed=10**9, default_dataset=bq.dataset)
    run = labelled_pipeline(table_id=bq.source)
    assert run.steps["labelled_query"].outputs["count"][0].load() == 3

    jobs = _step_jobs(bq.proxy, "labelled_query")
    queries = [j for j in jobs if "query" in j["configuration"]]
    loads = [j for j in jobs if "load" in j["configuration"]]
    assert len(queries) == 1 and len(loads) == 1
    query = queries[0]["configuration"]
    assert query["query"]["maximumBytesBilled"] == "5000"  # the step's setting beats the component's
    assert query["query"]["defaultDataset"] == {"projectId": "test", "datasetId": bq.dataset}
    assert query["labels"]["team"] == "ml" and query["labels"]["zenml_step"] == "labelled_query"
    assert loads[0]["configuration"]["labels"]["zenml_step"] == "labelled_query"
    # query_and_wait goes through jobs.query: same defaults there.
    (fast,) = bq.proxy.query_requests()
    assert fast["maximumBytesBilled"] == "5000" and fast["labels"]["team"] == "ml"
    assert fast["defaultDataset"]["datasetId"] == bq.dataset
    # Labels on the load job's table: it exists with the loaded row.
    assert bq.admin.get_table(f"test.{bq.dataset}.loaded").num_rows == 1

    facts = zenml_env.step_metadata(run, "labelled_query")
    assert [j["type"] for j in facts["jobs"]] == ["query", "query", "load"]
    assert facts["jobs"][2]["output_rows"] == 1


def test_dry_run_guard_refuses_a_query_over_the_limit_before_it_runs(zen, bq):
    from tests.integration.bigquery_pipelines import guarded_pipeline

    bq.stack(dry_run_limit_bytes="1GB")
    bq.proxy.dry_run_bytes["expensive"] = 5 * 10**12  # a realistic estimate for a wide scan
    with pytest.raises(RuntimeError):
        guarded_pipeline(marker="expensive")
    failure = zenml_env.step_error(_latest_run(zen).steps["guarded_query"]).message
    assert "5.00 TB (5000000000000 bytes)" in failure
    assert "dry_run_limit_bytes=1.00 GB (1000000000 bytes)" in failure
    assert "Query: SELECT 1 AS x -- expensive" in failure and "2 AS y" not in failure
    inserts = bq.proxy.job_inserts()
    assert [j["configuration"].get("dryRun") for j in inserts] == [True]  # never run for real

    bq.proxy.clear()
    bq.proxy.dry_run_bytes["cheap"] = 100
    run = guarded_pipeline(marker="cheap")
    assert [bool(j["configuration"].get("dryRun")) for j in bq.proxy.job_inserts()] == [True, False]
    (job,) = zenml_env.step_metadata(run, "guarded_query")["jobs"]
    assert job["estimated_bytes"] == 100


def test_a_failed_step_cancels_the_jobs_it_left_running(zen, bq, tmp_path):
    from tests.integration.bigquery_pipelines import failing_job_pipeline

    stack = bq.stack()
    marker = tmp_path / "job.json"
    with pytest.raises(RuntimeError):
        failing_job_pipeline(marker_file=str(marker))
    job_id = json.loads(marker.read_text())["job_id"]
    assert bq.proxy.cancels() == [job_id]
    job = bq.admin.__class__(
        project="test", credentials=bq.admin._credentials, client_options={"api_endpoint": bq.proxy.url}
    ).get_job(job_id)
    assert job.state == "DONE" and job.error_result["reason"] == "stopped"
    assert stack.feature_store.id not in live_engines()


@pytest.mark.slow
def test_sigterm_cancels_the_running_job_and_exits(bq, tmp_path):
    bq.stack()  # active in the session's ZenML config, which the subprocess inherits
    marker = tmp_path / "job.json"
    log = tmp_path / "pipeline.log"
    with zenml_env.pipeline_until_marker(
        "tests.integration.bigquery_pipelines:sleeping_job_pipeline", marker, log, marker_argument="marker_file"
    ) as proc:
        job_id = json.loads(marker.read_text())["job_id"]
        assert bq.proxy.cancels() == []
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        assert proc.returncode != 0
        assert bq.proxy.cancels() == [job_id]
        output = log.read_text()
        assert f"Cancelled BigQuery job {job_id}" in output and "was interrupted" in output, output[-3000:]


def test_run_shares_one_session_and_aborts_it(bq):
    from tests.integration.bigquery_pipelines import session_pipeline

    bq.stack(session=True)
    run = session_pipeline(dataset_id=bq.dataset)
    # A temporary table created in one step is read by the next: one session for the run.
    assert run.steps["session_read"].outputs["from_temp_table"][0].load() == 42
    session_id = run.steps["session_write"].outputs["session_id"][0].load()
    assert zenml_env.step_metadata(run, "session_read")["session_id"] == session_id

    inserts = bq.proxy.job_inserts()
    assert inserts[0]["configuration"]["query"]["createSession"] is True
    for job in _step_jobs(bq.proxy, "session_write") + _step_jobs(bq.proxy, "session_read"):
        assert job["configuration"]["query"]["connectionProperties"] == [{"key": "session_id", "value": session_id}]
    abort = inserts[-1]["configuration"]["query"]
    assert abort["query"] == "CALL BQ.ABORT_SESSION()"
    assert abort["connectionProperties"] == [{"key": "session_id", "value": session_id}]


def test_rows_load_as_arrow_and_as_dask_partitions_read_by_workers(bq, dask_cluster, monkeypatch):
    from zenml_compute_engines.flavors.bigquery import rows
    from tests.integration.bigquery_pipelines import rows_pipeline

    bq.admin.query(
        f"CREATE TABLE `test.{bq.dataset}.numbers` AS SELECT x AS id, MOD(x, 3) AS column2 "
        "FROM UNNEST(GENERATE_ARRAY(1, 1000)) AS x"
    ).result()
    monkeypatch.setattr(rows, "ROWS_PER_PARTITION", 300)
    bq.stack()
    run = rows_pipeline(table_id=f"test.{bq.dataset}.numbers", scheduler=dask_cluster.address)
    assert run.steps["rows_as_arrow"].outputs["arrow_rows"][0].load() == 1000
    summary = run.steps["rows_as_dask"].outputs["dask_summary"][0].load()
    assert summary["npartitions"] == 4 and summary["rows"] == 1000
    assert summary["sum_column2"] == sum(x % 3 for x in range(1, 1001))
    # The partitions were read by the Dask worker process, not by the step's process.
    assert summary["reader_pids"] and summary["driver_pid"] not in summary["reader_pids"]
    assert dask_cluster.alive()


def test_storage_read_api_reads_rows_over_the_emulators_grpc(bq, dask_cluster):
    from tests.integration.bigquery_pipelines import rows_pipeline

    bq.stack(storage_api_endpoint=bq.emulator.grpc_endpoint)
    run = rows_pipeline(table_id=bq.source, scheduler=dask_cluster.address)
    assert run.steps["rows_as_arrow"].outputs["arrow_rows"][0].load() == 3
    summary = run.steps["rows_as_dask"].outputs["dask_summary"][0].load()
    assert summary["rows"] == 3 and summary["sum_column2"] == 6.0
    assert zenml_env.step_metadata(run, "rows_as_arrow")["storage_read_api"] == f"grpc {bq.emulator.grpc_endpoint}"
    # Over REST only the 10-row preview and the 1-row schema probe: the rows came over gRPC.
    assert {tuple(read.get("maxResults", ["all"])) for read in bq.proxy.row_reads()} <= {("1",), ("10",)}


def test_loopback_stack_never_contacts_google(bq, monkeypatch):
    """google-cloud-bigquery-storage is installed here; to_dataframe() would try Google's
    Storage Read API with a plain client. Ours reads over the emulator's REST API."""
    import google.cloud.bigquery_storage  # noqa: F401  (installed: the risky case)

    from tests.integration.bigquery_pipelines import dataframe_pipeline

    looked_up = []
    real = socket.getaddrinfo

    def recording(host, *args, **kwargs):
        looked_up.append(host)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", recording)
    bq.stack()
    run = dataframe_pipeline(table_id=bq.source)
    assert run.steps["query_to_dataframe"].outputs["rows"][0].load() == 3
    assert set(looked_up) <= {"127.0.0.1", "localhost"}, looked_up
    assert bq.proxy.row_bytes() > 0


def test_snapshot_pins_the_data_the_artifact_saw(bq):
    import pandas as pd
    from zenml.client import Client

    from zenml_compute_engines.materializers.bigquery_dataset import BigQueryDatasetMaterializer
    from tests.integration.bigquery_pipelines import seed_pipeline

    bq.stack(reproducibility="snapshot", snapshot_expiration_days=2)
    run = Client().get_pipeline_run(seed_pipeline(table_id=bq.source).id)
    artifact = run.steps["name_table"].outputs["source"][0]
    loaded = artifact.load()
    assert loaded.snapshot_id.startswith(f"test.{bq.dataset}.src__zenml_")
    assert bq.admin.get_table(loaded.snapshot_id).table_type == "SNAPSHOT"
    copy = [j for j in bq.proxy.job_inserts() if "copy" in j["configuration"]][0]["configuration"]["copy"]
    assert copy["operationType"] == "SNAPSHOT" and copy["destinationExpirationTime"]
    assert artifact.run_metadata["pinned"] == f"snapshot {loaded.snapshot_id}"

    # The source table changes; the artifact still reads the rows it recorded.
    bq.admin.query(f"CREATE OR REPLACE TABLE `{bq.source}` AS SELECT 'z' AS column1, 9.0 AS column2").result()
    store = Client().active_stack.artifact_store
    rows = BigQueryDatasetMaterializer(artifact.uri, artifact_store=store).load(pd.DataFrame)
    assert sorted(zip(rows.column1, rows.column2)) == sorted(SOURCE_ROWS)


def test_time_travel_pin_reads_directly_until_the_table_changes(bq):
    import pandas as pd
    from zenml.client import Client

    from zenml_compute_engines.materializers.bigquery_dataset import BigQueryDatasetMaterializer
    from tests.integration.bigquery_pipelines import seed_pipeline

    bq.stack()  # reproducibility="time_travel" is the default
    run = Client().get_pipeline_run(seed_pipeline(table_id=bq.source).id)
    artifact = run.steps["name_table"].outputs["source"][0]
    store = Client().active_stack.artifact_store
    materializer = BigQueryDatasetMaterializer(artifact.uri, artifact_store=store)

    bq.proxy.clear()
    rows = materializer.load(pd.DataFrame)
    assert len(rows) == 3
    assert bq.proxy.job_inserts() == []  # unchanged table: read directly, no query billed

    time.sleep(1.1)
    bq.admin.query(f"CREATE OR REPLACE TABLE `{bq.source}` AS SELECT 'z' AS column1, 9.0 AS column2").result()
    as_of = artifact.load().as_of
    with pytest.raises(Exception):  # the emulator has no time travel; BigQuery answers this
        materializer.load(pd.DataFrame)
    (query,) = [j["configuration"]["query"]["query"] for j in bq.proxy.job_inserts()]
    stamp = as_of.strftime("%Y-%m-%d %H:%M:%S.%f+00:00")
    assert query == f"SELECT * FROM `{bq.source}` FOR SYSTEM_TIME AS OF TIMESTAMP '{stamp}'"


def test_service_connector_credentials_are_used(zen, bq):
    from datetime import datetime, timedelta, timezone

    from tests.integration.bigquery_pipelines import dataframe_pipeline

    name = f"gcp-{uuid.uuid4().hex[:6]}"
    connector, _ = zen.create_service_connector(
        name=name,
        connector_type="gcp",
        auth_method="oauth2-token",
        resource_type="gcp-generic",
        configuration={"token": "connector-issued-token", "project_id": "test"},
        expires_at=datetime.now(timezone.utc) + timedelta(hours=1),
        verify=False,
        list_resources=False,
    )
    bq.stack(connector_id=connector.id)
    run = dataframe_pipeline(table_id=bq.source)
    facts = zenml_env.step_metadata(run, "query_to_dataframe")
    assert facts["credentials"] == f"service connector '{name}'"
    assert bq.proxy.authorizations() and set(bq.proxy.authorizations()) == {"Bearer connector-issued-token"}
    assert "connector-issued-token" not in json.dumps(facts)


def test_service_account_key_from_a_zenml_secret(zen, bq, capsys):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from tests.integration.bigquery_pipelines import dataframe_pipeline

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    email = "pipelines@test.iam.gserviceaccount.com"
    key_json = json.dumps(
        {
            "type": "service_account",
            "project_id": "test",
            "private_key_id": "k1",
            "private_key": pem,
            "client_email": email,
            "token_uri": f"{bq.proxy.url}/token",  # Google's token endpoint, played on loopback
        }
    )
    secret = f"bq_sa_{uuid.uuid4().hex[:6]}"
    zen.create_secret(secret, values={"key": key_json})
    bq.stack(service_account_json=f"{{{{{secret}.key}}}}")
    run = dataframe_pipeline(table_id=bq.source)
    facts = zenml_env.step_metadata(run, "query_to_dataframe")
    assert facts["credentials"] == "service_account_json" and facts["principal"] == email
    assert bq.proxy.tokens_issued >= 1
    assert set(bq.proxy.authorizations()) == {f"Bearer {TOKEN}"}
    # The key is nowhere in what the run recorded or printed.
    secret_part = pem.splitlines()[5]
    assert secret_part not in json.dumps(facts)
    assert secret_part not in capsys.readouterr().out


def test_missing_default_dataset_fails_naming_the_field(zen, bq):
    from tests.integration.bigquery_pipelines import two_client_steps

    bq.stack(default_dataset="no_such_dataset")
    with pytest.raises(RuntimeError):
        two_client_steps()
    message = zenml_env.step_error(_latest_run(zen).steps["first"]).message
    assert "default_dataset='test.no_such_dataset'" in message and "does not exist" in message


def test_unreachable_endpoint_fails_fast_naming_it(zen, bq):
    from tests.integration.bigquery_pipelines import two_client_steps

    endpoint = f"http://127.0.0.1:{free_port()}"
    zenml_env.activate_engine_stack("bigquery", {"project": "test", "api_endpoint": endpoint, "startup_timeout_s": 5})
    started = time.time()
    with pytest.raises(RuntimeError):
        two_client_steps()
    assert time.time() - started < 30
    message = zenml_env.step_error(_latest_run(zen).steps["first"]).message
    assert endpoint in message and "unreachable" in message


def test_accessor_outside_a_bigquery_stack_says_how_to_register(zen, bq):
    zenml_env.activate_engine_stack("dask", {"processes": False})
    with pytest.raises(EngineError, match="zenml-compute-engines register && zenml feature-store register bq --flavor=bigquery"):
        compute_engine("bigquery")
