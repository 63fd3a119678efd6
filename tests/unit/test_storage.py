"""Unit tests for zenml_compute_engines.flavors.storage (the artifact-store credentials bridge)."""

import json
import os
import stat
import subprocess
import sys
import uuid
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

import pytest

from zenml_compute_engines.flavors.storage import (
    GCS_FS_IMPL,
    S3A_FS_IMPL,
    S3A_SIMPLE_PROVIDER,
    S3A_TEMPORARY_PROVIDER,
    SECRET_CONF_MARKERS,
    fsspec_storage_options,
    redact_conf,
    spark_conf_for_artifact_store,
    spark_path,
)
from tests.support.versions import skip_without_zenml_s3_endpoints

REPO_ROOT = Path(__file__).resolve().parents[2]
P = "spark.hadoop.fs.s3a."

SERVICE_ACCOUNT = {
    "type": "service_account",
    "project_id": "my-project",
    "private_key_id": "abc123",
    "private_key": "-----BEGIN PRIVATE KEY-----\nFAKEKEY\n-----END PRIVATE KEY-----\n",
    "client_email": "runner@my-project.iam.gserviceaccount.com",
    "client_id": "42",
    "token_uri": "https://oauth2.googleapis.com/token",
}


@pytest.fixture(autouse=True)
def no_gcs_emulator(monkeypatch):
    """The session's GCS emulator fixture sets STORAGE_EMULATOR_HOST; these cases set it
    themselves where they mean to."""
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)


class FakeStore:
    """Minimal duck-typed artifact store (no `_build_filesystem_kwargs`)."""

    def __init__(self, path, flavor, credentials=None, **config):
        self.path = path
        self.flavor = flavor
        self.config = SimpleNamespace(path=path, **config)
        self._credentials = credentials

    def get_credentials(self):
        return self._credentials


def s3_store(key=None, secret=None, token=None, region=None, **config):
    return FakeStore("s3://bucket/root", "s3", (key, secret, token, region), **config)


# --- spark_path ---------------------------------------------------------------


@pytest.mark.parametrize(
    "uri, expected",
    [
        ("s3://bucket/x/y.parquet", "s3a://bucket/x/y.parquet"),
        ("s3a://bucket/x", "s3a://bucket/x"),
        ("gs://bucket/x", "gs://bucket/x"),
        ("gcs://bucket/x", "gs://bucket/x"),
        ("/tmp/zenml/artifacts", "/tmp/zenml/artifacts"),
        ("file:///tmp/a", "file:///tmp/a"),
        ("relative/s3://not-a-scheme", "relative/s3://not-a-scheme"),
    ],
)
def test_spark_path(uri, expected):
    assert spark_path(uri) == expected


# --- local / unknown stores ---------------------------------------------------


def test_local_store_gives_empty_conf_and_options(tmp_path):
    store = FakeStore(str(tmp_path), "local")
    assert spark_conf_for_artifact_store(store) == {}
    assert fsspec_storage_options(store) == {}


def test_local_flavor_wins_even_with_remote_looking_path():
    store = FakeStore("s3://bucket/root", "local", ("AK", "SK", None, None))
    assert spark_conf_for_artifact_store(store) == {}


def test_unknown_flavor_gives_empty_conf():
    store = FakeStore("az://container/root", "azure", credentials=object())
    assert spark_conf_for_artifact_store(store) == {}
    assert fsspec_storage_options(store) == {}


# --- S3 -----------------------------------------------------------------------


def test_s3_key_and_secret():
    conf = spark_conf_for_artifact_store(s3_store("AKIAFAKE", "s3cr3t"))
    assert conf == {
        P + "impl": S3A_FS_IMPL,
        P + "access.key": "AKIAFAKE",
        P + "secret.key": "s3cr3t",
        P + "aws.credentials.provider": S3A_SIMPLE_PROVIDER,
    }


def test_s3_session_token_uses_temporary_provider():
    conf = spark_conf_for_artifact_store(s3_store("ASIAFAKE", "s3cr3t", "sess-tok", "eu-west-1"))
    assert conf[P + "session.token"] == "sess-tok"
    assert conf[P + "aws.credentials.provider"] == S3A_TEMPORARY_PROVIDER
    assert conf[P + "endpoint.region"] == "eu-west-1"
    assert P + "endpoint" not in conf


def test_s3_without_credentials_leaves_default_chain():
    conf = spark_conf_for_artifact_store(s3_store())
    assert conf == {P + "impl": S3A_FS_IMPL}


def test_s3_custom_http_endpoint():
    store = s3_store("AK", "SK", client_kwargs={"endpoint_url": "http://127.0.0.1:5000"})
    conf = spark_conf_for_artifact_store(store)
    assert conf[P + "endpoint"] == "http://127.0.0.1:5000"
    assert conf[P + "path.style.access"] == "true"
    assert conf[P + "connection.ssl.enabled"] == "false"
    assert P + "endpoint.region" not in conf


def test_s3_https_endpoint_keeps_ssl_and_config_region_wins():
    store = s3_store(
        "AK", "SK", region="us-east-1",
        client_kwargs={"endpoint_url": "https://minio.example:9000", "region_name": "eu-central-1"},
    )
    conf = spark_conf_for_artifact_store(store)
    assert conf[P + "connection.ssl.enabled"] == "true"
    assert conf[P + "endpoint.region"] == "eu-central-1"


def test_s3_fsspec_options():
    store = s3_store("AK", "SK", "TOK", "us-west-2", client_kwargs={"endpoint_url": "http://127.0.0.1:5000"})
    assert fsspec_storage_options(store) == {
        "key": "AK",
        "secret": "SK",
        "token": "TOK",
        "client_kwargs": {"region_name": "us-west-2", "endpoint_url": "http://127.0.0.1:5000"},
    }


def test_s3_fsspec_options_without_credentials_is_empty():
    assert fsspec_storage_options(s3_store()) == {}


def test_s3_prefers_zenml_build_filesystem_kwargs():
    # S3-compatible ZenML subclasses inject endpoints through this hook.
    store = s3_store("IGNORED", "IGNORED")
    store._build_filesystem_kwargs = lambda: {
        "key": "AK2", "secret": "SK2", "token": None,
        "client_kwargs": {"endpoint_url": "http://minio:9000"},
        "config_kwargs": None, "s3_additional_kwargs": None,
    }
    conf = spark_conf_for_artifact_store(store)
    assert conf[P + "access.key"] == "AK2"
    assert conf[P + "endpoint"] == "http://minio:9000"
    assert fsspec_storage_options(store)["client_kwargs"] == {"endpoint_url": "http://minio:9000"}


# --- GCS ----------------------------------------------------------------------


def test_gcs_service_account_dict():
    conf = spark_conf_for_artifact_store(FakeStore("gs://bucket/root", "gcp", dict(SERVICE_ACCOUNT)))
    assert conf == {
        "spark.hadoop.fs.gs.impl": GCS_FS_IMPL,
        "spark.hadoop.google.cloud.auth.service.account.enable": "true",
        "spark.hadoop.fs.gs.auth.service.account.email": SERVICE_ACCOUNT["client_email"],
        "spark.hadoop.fs.gs.auth.service.account.private.key.id": "abc123",
        "spark.hadoop.fs.gs.auth.service.account.private.key": SERVICE_ACCOUNT["private_key"],
        "spark.hadoop.fs.gs.project.id": "my-project",
    }


def test_gcs_keyfile_for_connector_v3(tmp_path):
    keyfile = tmp_path / "sa.json"
    store = FakeStore("gs://bucket/root", "gcp", dict(SERVICE_ACCOUNT))
    conf = spark_conf_for_artifact_store(store, gcs_keyfile_path=str(keyfile))
    assert conf["spark.hadoop.fs.gs.auth.type"] == "SERVICE_ACCOUNT_JSON_KEYFILE"
    assert conf["spark.hadoop.fs.gs.auth.service.account.json.keyfile"] == str(keyfile)
    assert json.loads(keyfile.read_text()) == SERVICE_ACCOUNT
    assert stat.S_IMODE(os.stat(keyfile).st_mode) == 0o600


def test_gcs_without_credentials_and_with_credentials_object():
    assert spark_conf_for_artifact_store(FakeStore("gs://b", "gcp")) == {"spark.hadoop.fs.gs.impl": GCS_FS_IMPL}
    creds = object()  # stands in for a google.auth Credentials object
    store = FakeStore("gs://b", "gcp", creds)
    assert spark_conf_for_artifact_store(store) == {"spark.hadoop.fs.gs.impl": GCS_FS_IMPL}
    assert fsspec_storage_options(store) == {"token": creds}


def test_gcs_endpoint_override():
    store = FakeStore("gs://b/r", "gcp", dict(SERVICE_ACCOUNT), endpoint_url="http://localhost:4443")
    conf = spark_conf_for_artifact_store(store)
    assert conf["spark.hadoop.fs.gs.storage.root.url"] == "http://localhost:4443"
    assert fsspec_storage_options(store) == {"token": SERVICE_ACCOUNT, "endpoint_url": "http://localhost:4443"}


def test_gcs_fsspec_options_without_credentials_is_empty():
    assert fsspec_storage_options(FakeStore("gs://b", "gcp")) == {}


# --- redaction ----------------------------------------------------------------


def test_redact_conf_hides_secrets_and_keeps_ordinary_keys():
    conf = spark_conf_for_artifact_store(
        s3_store("AKIAFAKE", "s3cr3t", "sess-tok", client_kwargs={"endpoint_url": "http://127.0.0.1:5000"})
    )
    conf.update(spark_conf_for_artifact_store(FakeStore("gs://b", "gcp", dict(SERVICE_ACCOUNT))))
    conf.update({"AWS_SECRET_ACCESS_KEY": "x", "db-password": "x", "spark.executor.memory": "2g"})
    redacted = redact_conf(conf)
    assert list(redacted) == list(conf)  # same keys, same order
    for key in (P + "access.key", P + "secret.key", P + "session.token",
                "spark.hadoop.fs.gs.auth.service.account.private.key",
                "spark.hadoop.fs.gs.auth.service.account.private.key.id",
                "AWS_SECRET_ACCESS_KEY", "db-password"):
        assert redacted[key] == "***", key
    for key in (P + "endpoint", P + "impl", P + "path.style.access", "spark.executor.memory"):
        assert redacted[key] == conf[key], key
    text = json.dumps(redacted)
    for secret in ("AKIAFAKE", "s3cr3t", "sess-tok", "FAKEKEY"):
        assert secret not in text
    assert conf[P + "secret.key"] == "s3cr3t"  # input untouched


def test_secret_markers_cover_requested_words():
    for word in ("secret", "password", "token", "access.key", "private.key", "credential"):
        assert word in SECRET_CONF_MARKERS
    assert redact_conf({"Some.CREDENTIALS.File": "x", "aws_access_key_id": "y"}) == {
        "Some.CREDENTIALS.File": "***", "aws_access_key_id": "***",
    }


# --- import hygiene -----------------------------------------------------------


def test_module_import_is_light():
    # The package __init__ may import zenml; storage.py itself must add nothing heavy.
    code = (
        "import sys, zenml_compute_engines.flavors\n"
        "before = set(sys.modules)\n"
        "import zenml_compute_engines.flavors.storage\n"
        "new = set(sys.modules) - before\n"
        "heavy = ('pyspark', 'ray', 'dask', 'boto3', 'botocore', 's3fs', 'gcsfs', 'google', 'zenml')\n"
        "bad = sorted(m for m in new if m.split('.')[0] in heavy)\n"
        "assert not bad, bad\n"
        "assert not any(m.split('.')[0] in ('pyspark', 'ray', 'dask') for m in sys.modules)\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True)


# --- real ZenML artifact stores (offline) ------------------------------------


def _component_kwargs(flavor):
    from zenml.enums import StackComponentType

    now = datetime.now()
    return dict(name="test-store", id=uuid.uuid4(), flavor=flavor, type=StackComponentType.ARTIFACT_STORE,
                user=uuid.uuid4(), created=now, updated=now)


def test_real_zenml_s3_artifact_store():
    skip_without_zenml_s3_endpoints()
    from zenml.integrations.s3.artifact_stores.s3_artifact_store import S3ArtifactStore
    from zenml.integrations.s3.flavors.s3_artifact_store_flavor import S3ArtifactStoreConfig

    config = S3ArtifactStoreConfig(
        path="s3://bucket/root", key="AK", secret="SK", token="TOK",
        client_kwargs={"endpoint_url": "http://minio.test:9000", "region_name": "eu-west-1"},
    )
    store = S3ArtifactStore(config=config, **_component_kwargs("s3"))
    conf = spark_conf_for_artifact_store(store)
    assert conf == {
        P + "impl": S3A_FS_IMPL,
        P + "access.key": "AK",
        P + "secret.key": "SK",
        P + "session.token": "TOK",
        P + "aws.credentials.provider": S3A_TEMPORARY_PROVIDER,
        P + "endpoint": "http://minio.test:9000",
        P + "path.style.access": "true",
        P + "connection.ssl.enabled": "false",
        P + "endpoint.region": "eu-west-1",
    }
    assert fsspec_storage_options(store) == {
        "key": "AK", "secret": "SK", "token": "TOK",
        "client_kwargs": {"endpoint_url": "http://minio.test:9000", "region_name": "eu-west-1"},
    }


def test_real_zenml_gcp_artifact_store_with_secret(monkeypatch):
    from zenml.integrations.gcp.artifact_stores.gcp_artifact_store import GCPArtifactStore
    from zenml.integrations.gcp.flavors.gcp_artifact_store_flavor import GCPArtifactStoreConfig

    store = GCPArtifactStore(config=GCPArtifactStoreConfig(path="gs://bucket/root"), **_component_kwargs("gcp"))
    assert spark_conf_for_artifact_store(store) == {"spark.hadoop.fs.gs.impl": GCS_FS_IMPL}
    # Stand in for the secret store lookup; ZenML's GCPSecretSchema parses the JSON.
    fake_secret = SimpleNamespace(secret_values={"token": json.dumps(SERVICE_ACCOUNT)})
    monkeypatch.setattr(store, "get_authentication_secret", lambda: fake_secret)
    conf = spark_conf_for_artifact_store(store)
    assert conf["spark.hadoop.fs.gs.auth.service.account.email"] == SERVICE_ACCOUNT["client_email"]
    assert conf["spark.hadoop.fs.gs.auth.service.account.private.key"] == SERVICE_ACCOUNT["private_key"]
    assert fsspec_storage_options(store) == {"token": SERVICE_ACCOUNT}


# --- pyarrow filesystems (Ray Data) ----------------------------------------------


def _reconstruction_args(filesystem):
    return filesystem.__reduce__()[1][0]


def test_pyarrow_s3_filesystem_carries_keys_and_path_style_endpoint():
    from zenml_compute_engines.flavors.storage import pyarrow_filesystem

    store = s3_store("AKIAFAKE", "s3cr3t", client_kwargs={"endpoint_url": "http://127.0.0.1:9000"})
    filesystem, scheme = pyarrow_filesystem(store)
    args = _reconstruction_args(filesystem)
    assert scheme == "s3" and type(filesystem).__name__ == "S3FileSystem"
    assert (args["access_key"], args["secret_key"]) == ("AKIAFAKE", "s3cr3t")
    assert (args["endpoint_override"], args["scheme"]) == ("127.0.0.1:9000", "http")
    assert args["force_virtual_addressing"] is False


def test_pyarrow_gcs_filesystem_for_a_loopback_emulator_is_anonymous(monkeypatch):
    from zenml_compute_engines.flavors.storage import pyarrow_filesystem

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://127.0.0.1:4443")
    filesystem, scheme = pyarrow_filesystem(FakeStore("gs://bucket/root", "gcp", None))
    args = _reconstruction_args(filesystem)
    assert scheme == "gs" and args["anonymous"] is True
    assert (args["endpoint_override"], args["scheme"]) == ("127.0.0.1:4443", "http")


def test_pyarrow_filesystem_is_none_for_local_stores():
    from zenml_compute_engines.flavors.storage import pyarrow_filesystem

    assert pyarrow_filesystem(FakeStore("/tmp/store", "local")) == (None, None)
