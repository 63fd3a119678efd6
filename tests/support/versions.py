"""What the installed releases of ZenML and the engines can do, for tests that depend on it.

CI runs the fast set a second time with the oldest releases we support (tests/versions/);
a test skips through here only for a limit of the other project, never of ours.
"""

from __future__ import annotations

from importlib.metadata import version

import pytest
from packaging.version import Version

ZENML = Version(version("zenml"))

# Before 0.92, ZenML's S3 artifact store probes bucket versioning while it is constructed,
# through a boto3 client that ignores `client_kwargs.endpoint_url`: against an S3-compatible
# server (MinIO, moto) it calls AWS instead and fails. Seen with ZenML 0.90.0.
ZENML_S3_ENDPOINTS = ZENML >= Version("0.92")
ZENML_S3_ENDPOINTS_REASON = (
    f"ZenML {ZENML}'s S3 artifact store cannot reach an S3-compatible endpoint (needs ZenML >= 0.92)"
)


def skip_without_zenml_s3_endpoints() -> None:
    if not ZENML_S3_ENDPOINTS:
        pytest.skip(ZENML_S3_ENDPOINTS_REASON)
