"""Credentials bridge: derive engine storage configuration from a ZenML artifact store.

Every function takes the artifact store duck-typed (``.path``, ``.flavor``,
``.config``, ``.get_credentials()``) so real ZenML stores and small test fakes
both work. Nothing heavy (pyspark, boto3, google-cloud, zenml integrations) is
imported here: the module must stay cheap to import in any process.

ZenML facts this relies on (zenml 0.98):
  * ``S3ArtifactStore.get_credentials()`` -> ``(key, secret, token, region)``;
    ``S3ArtifactStore._build_filesystem_kwargs()`` -> the exact s3fs kwargs,
    where ``config.client_kwargs`` (e.g. ``endpoint_url``, ``region_name``)
    overrides the connector region.
  * ``GCPArtifactStore.get_credentials()`` -> google ``Credentials`` (service
    connector), a dict (service-account JSON from a secret) or ``None``.
    ``GCPArtifactStoreConfig`` has no endpoint field (extra keys are dropped),
    so a GCS endpoint override is only read from duck-typed configs.
"""

import json
import logging
import os
from typing import Any, Dict, Mapping, Optional, Tuple
from urllib.parse import urlsplit

from zenml_compute_engines.flavors.addresses import is_loopback_host

logger = logging.getLogger(__name__)

S3A_FS_IMPL = "org.apache.hadoop.fs.s3a.S3AFileSystem"
S3A_TEMPORARY_PROVIDER = "org.apache.hadoop.fs.s3a.TemporaryAWSCredentialsProvider"
S3A_SIMPLE_PROVIDER = "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider"
GCS_FS_IMPL = "com.google.cloud.hadoop.fs.gcs.GoogleHadoopFileSystem"

# Substrings (matched case-insensitively, with "_"/"-" normalised to ".") that
# mark a conf key as secret. Deliberately generous: a redacted harmless value
# costs nothing, a leaked key costs a rotation.
SECRET_CONF_MARKERS: Tuple[str, ...] = (
    "secret", "password", "passwd", "token", "credential", "access.key",
    "accesskey", "private.key", "privatekey", "account.key", "api.key",
    "apikey", "signature",
)
REDACTED = "***"


def _scheme(artifact_store: Any) -> str:
    """Return "s3", "gs" or "" (local/unknown) for an artifact store."""
    if str(getattr(artifact_store, "flavor", "")).lower() == "local":
        return ""
    path = str(getattr(artifact_store, "path", "") or "")
    if path.startswith("s3://"):
        return "s3"
    if path.startswith(("gs://", "gcs://")):
        return "gs"
    return ""


def _client_kwargs(artifact_store: Any) -> Dict[str, Any]:
    return dict(getattr(getattr(artifact_store, "config", None), "client_kwargs", None) or {})


def _s3_settings(artifact_store: Any) -> Dict[str, Any]:
    """Collect s3fs-style kwargs: key, secret, token, client_kwargs (+extras).

    Prefer ZenML's own ``_build_filesystem_kwargs`` so S3-compatible subclasses
    that inject endpoints are honoured; fall back to ``get_credentials`` plus
    ``config.client_kwargs`` for fakes and older ZenML versions.
    """
    build = getattr(artifact_store, "_build_filesystem_kwargs", None)
    if callable(build):
        kwargs = dict(build())
        kwargs["client_kwargs"] = dict(kwargs.get("client_kwargs") or {})
        return kwargs
    creds = _credentials(artifact_store)
    key, secret, token, region = creds if isinstance(creds, tuple) and len(creds) == 4 else (None,) * 4
    client_kwargs: Dict[str, Any] = {"region_name": region} if region else {}
    client_kwargs.update(_client_kwargs(artifact_store))  # config wins, as in ZenML
    config = getattr(artifact_store, "config", None)
    return {
        "key": key, "secret": secret, "token": token, "client_kwargs": client_kwargs,
        "config_kwargs": getattr(config, "config_kwargs", None),
        "s3_additional_kwargs": getattr(config, "s3_additional_kwargs", None),
    }


def _credentials(artifact_store: Any) -> Any:
    getter = getattr(artifact_store, "get_credentials", None)
    return getter() if callable(getter) else None


def _gcs_endpoint(artifact_store: Any) -> Optional[str]:
    """The store's GCS endpoint: its config (duck-typed stores), else the emulator that
    ZenML's GCP store itself reaches through gcsfs (`STORAGE_EMULATOR_HOST`), named
    explicitly so that workers on other machines reach the same one."""
    config = getattr(artifact_store, "config", None)
    configured = getattr(config, "endpoint_url", None) or _client_kwargs(artifact_store).get("endpoint_url")
    if configured:
        return configured
    emulator = os.environ.get("STORAGE_EMULATOR_HOST", "")
    if emulator in ("", "default"):
        return None
    return emulator if emulator.startswith(("http://", "https://")) else f"http://{emulator}"


def _is_service_account_info(creds: Any) -> bool:
    return isinstance(creds, dict) and bool(creds.get("private_key")) and bool(creds.get("client_email"))


def spark_path(uri: str) -> str:
    """Map an artifact-store URI to the scheme Spark's Hadoop connectors expect.

    ``s3://`` becomes ``s3a://`` (Hadoop ships no ``s3`` filesystem by default),
    ``gcs://`` (an fsspec alias) becomes ``gs://``; anything else is unchanged.
    """
    uri = os.fspath(uri)
    if uri.startswith("s3://"):
        return "s3a://" + uri[len("s3://"):]
    if uri.startswith("gcs://"):
        return "gs://" + uri[len("gcs://"):]
    return uri


def spark_conf_for_artifact_store(
    artifact_store: Any, gcs_keyfile_path: Optional[str] = None
) -> Dict[str, str]:
    """Build ``spark.hadoop.*`` settings that let Spark reach the artifact store.

    Args:
        artifact_store: The (duck-typed) ZenML artifact store.
        gcs_keyfile_path: Optional path where a GCS service-account dict is
            written (mode 0600) for GCS connector 3.x, which only accepts a JSON
            keyfile; the inline 2.x properties are emitted either way.

    Returns:
        Spark conf entries; ``{}`` for local and unknown stores (the caller
        decides what to do). Contains secrets: pass through ``redact_conf``
        before logging or storing it.
    """
    scheme = _scheme(artifact_store)
    conf: Dict[str, str] = {}
    if scheme == "s3":
        s3 = _s3_settings(artifact_store)
        p = "spark.hadoop.fs.s3a."
        conf[p + "impl"] = S3A_FS_IMPL
        key, secret, token = s3.get("key"), s3.get("secret"), s3.get("token")
        if key and secret:
            # Pin the provider so S3A uses exactly these credentials; with no
            # credentials we set nothing and S3A's default chain (env, profile,
            # instance role) applies.
            conf[p + "access.key"], conf[p + "secret.key"] = key, secret
            if token:
                conf[p + "session.token"] = token
            conf[p + "aws.credentials.provider"] = S3A_TEMPORARY_PROVIDER if token else S3A_SIMPLE_PROVIDER
        endpoint = s3["client_kwargs"].get("endpoint_url")
        if endpoint:
            # Custom endpoints (MinIO, moto, Ceph) rarely support virtual-host buckets.
            conf[p + "endpoint"] = endpoint
            conf[p + "path.style.access"] = "true"
            conf[p + "connection.ssl.enabled"] = "false" if endpoint.startswith("http://") else "true"
        region = s3["client_kwargs"].get("region_name")
        if region:
            conf[p + "endpoint.region"] = region
    elif scheme == "gs":
        conf["spark.hadoop.fs.gs.impl"] = GCS_FS_IMPL
        creds = _credentials(artifact_store)
        if _is_service_account_info(creds):
            # GCS connector 2.x reads these under the google.cloud./fs.gs. prefixes.
            conf["spark.hadoop.google.cloud.auth.service.account.enable"] = "true"
            conf["spark.hadoop.fs.gs.auth.service.account.email"] = creds["client_email"]
            if creds.get("private_key_id"):
                conf["spark.hadoop.fs.gs.auth.service.account.private.key.id"] = creds["private_key_id"]
            conf["spark.hadoop.fs.gs.auth.service.account.private.key"] = creds["private_key"]
            if creds.get("project_id"):
                conf["spark.hadoop.fs.gs.project.id"] = creds["project_id"]
            if gcs_keyfile_path:
                _write_private_json(gcs_keyfile_path, creds)
                conf["spark.hadoop.fs.gs.auth.type"] = "SERVICE_ACCOUNT_JSON_KEYFILE"
                conf["spark.hadoop.fs.gs.auth.service.account.json.keyfile"] = gcs_keyfile_path
        elif creds is not None:
            # google Credentials objects (service connectors) cannot be handed
            # to the JVM; the connector falls back to its default auth chain.
            logger.debug("GCS credentials of type %s not forwarded to Spark.", type(creds).__name__)
        endpoint = _gcs_endpoint(artifact_store)
        if endpoint:
            conf["spark.hadoop.fs.gs.storage.root.url"] = endpoint
    logger.debug("Spark storage conf for %r: %s", getattr(artifact_store, "path", None), redact_conf(conf))
    return conf


def _write_private_json(path: str, data: Mapping[str, Any]) -> None:
    """Write ``data`` as JSON readable only by the current user."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # O_CREAT's mode does not apply to a pre-existing file
    with os.fdopen(fd, "w") as handle:
        json.dump(dict(data), handle)


def fsspec_storage_options(artifact_store: Any) -> Dict[str, Any]:
    """Build fsspec ``storage_options`` (s3fs / gcsfs) for the artifact store.

    Returns ``{}`` for local and unknown stores. S3 options mirror ZenML's own
    s3fs kwargs (``key``, ``secret``, ``token``, ``client_kwargs`` with
    ``endpoint_url``/``region_name``); GCS options pass the credentials as
    gcsfs ``token`` (dict or Credentials object) plus ``endpoint_url`` if set.
    The result contains secrets: never log it.
    """
    scheme = _scheme(artifact_store)
    opts: Dict[str, Any] = {}
    if scheme == "s3":
        s3 = _s3_settings(artifact_store)
        opts.update({k: s3[k] for k in ("key", "secret", "token") if s3.get(k)})
        for name in ("client_kwargs", "config_kwargs", "s3_additional_kwargs"):
            if s3.get(name):
                opts[name] = dict(s3[name])
    elif scheme == "gs":
        creds = _credentials(artifact_store)
        endpoint = _gcs_endpoint(artifact_store)
        if creds is not None:
            opts["token"] = creds
        elif endpoint and is_loopback_host(urlsplit(endpoint).hostname):
            opts["token"] = "anon"  # an emulator without credentials: never look for Google's
        if endpoint:
            opts["endpoint_url"] = endpoint
    return opts


def pyarrow_filesystem(artifact_store: Any) -> Tuple[Any, Optional[str]]:
    """A pyarrow-native filesystem for the store's objects, and the scheme to strip from
    its paths; `(None, None)` for local stores.

    For engines that read and write with pyarrow in many threads and processes (Ray
    Data): pyarrow's own S3 and GCS clients pickle cleanly and need no event loop,
    unlike fsspec's. Built from the same credentials and endpoint as
    `fsspec_storage_options`; the result holds secrets: never log it.
    """
    import pyarrow.fs as pafs

    scheme = _scheme(artifact_store)
    options = fsspec_storage_options(artifact_store)
    if scheme == "s3":
        client_kwargs = options.get("client_kwargs") or {}
        endpoint = client_kwargs.get("endpoint_url")
        kwargs: Dict[str, Any] = {
            "access_key": options.get("key"),
            "secret_key": options.get("secret"),
            "session_token": options.get("token"),
            "region": client_kwargs.get("region_name") or "us-east-1",
        }
        if endpoint:
            url = urlsplit(endpoint)
            kwargs.update(endpoint_override=url.netloc, scheme=url.scheme or "https")
        return pafs.S3FileSystem(**{k: v for k, v in kwargs.items() if v is not None}), "s3"
    if scheme == "gs":
        kwargs = {}
        endpoint = options.get("endpoint_url")
        if endpoint:
            url = urlsplit(endpoint)
            kwargs.update(endpoint_override=url.netloc, scheme=url.scheme or "https")
        token = options.get("token")
        if token == "anon":
            kwargs["anonymous"] = True
        elif token is not None:
            credentials = _google_credentials(token)
            kwargs.update(access_token=credentials.token, credential_token_expiration=credentials.expiry)
        return pafs.GcsFileSystem(**kwargs), "gs"
    return None, None


def _google_credentials(token: Any) -> Any:
    """Fresh google-auth credentials from a service-account dict or a Credentials object."""
    import google.auth.transport.requests

    if isinstance(token, dict):
        from google.oauth2 import service_account

        token = service_account.Credentials.from_service_account_info(
            token, scopes=["https://www.googleapis.com/auth/devstorage.read_write"]
        )
    if not token.valid:
        token.refresh(google.auth.transport.requests.Request())
    return token


def redact_conf(conf: Mapping[str, Any]) -> Dict[str, Any]:
    """Return a copy of ``conf`` with secret-looking values replaced by ``***``.

    A key is secret when, lower-cased and with ``_``/``-`` read as ``.``, it
    contains any of ``SECRET_CONF_MARKERS``. Use before logging conf or storing
    it as metadata. The input mapping is not modified.
    """
    redacted: Dict[str, Any] = {}
    for key, value in conf.items():
        norm = str(key).lower().replace("_", ".").replace("-", ".")
        redacted[key] = REDACTED if any(m in norm for m in SECRET_CONF_MARKERS) else value
    return redacted
