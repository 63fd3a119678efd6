"""Which Google credentials a BigQuery component uses, in the documented order.

1. A GCP service connector linked to the component (`zenml feature-store connect ...`).
2. `service_account_json`: a service-account key, normally a ZenML secret reference.
3. Anonymous credentials, when `api_endpoint` is on loopback (an emulator): nothing is
   ever sent to Google.
4. Application Default Credentials (`gcloud auth application-default login`, a VM's or
   a pod's service account, `GOOGLE_APPLICATION_CREDENTIALS`).

Key material never appears in messages: only where the credentials came from and the
service account's e-mail.
"""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

from zenml_compute_engines.flavors.engine import EngineError

if TYPE_CHECKING:
    from google.auth.credentials import Credentials

    from zenml_compute_engines.flavors.bigquery.engine import BigQueryEngine

SCOPES = ("https://www.googleapis.com/auth/bigquery", "https://www.googleapis.com/auth/cloud-platform")


@dataclass(frozen=True)
class ResolvedCredentials:
    credentials: "Credentials"
    source: str
    principal: Optional[str] = None

    def __repr__(self) -> str:  # never the key material
        who = f", {self.principal}" if self.principal else ""
        return f"ResolvedCredentials({self.source}{who})"


def resolve(component: "BigQueryEngine") -> ResolvedCredentials:
    """The credentials of `component`, raising EngineError with what to fix."""
    from google.auth.credentials import AnonymousCredentials, Credentials

    connector = component.get_connector()
    if connector is not None:
        from zenml.client import Client

        # The instance is a per-resource client connector; name the registered one.
        name = Client().get_service_connector(component.connector, expand_secrets=False).name
        try:
            credentials = connector.connect()
        except Exception as e:
            raise EngineError(
                f"The GCP service connector '{name}' linked to '{component.name}' gave "
                f"no credentials: {e}"
            ) from e
        if not isinstance(credentials, Credentials):
            raise EngineError(
                f"The service connector '{name}' linked to '{component.name}' returned "
                f"{type(credentials).__name__}, not Google credentials; link a GCP connector "
                "with the gcp-generic resource type."
            )
        return ResolvedCredentials(
            credentials, f"service connector '{name}'", _principal(credentials)
        )

    # Attribute access resolves a `{{secret.key}}` reference (model_dump would not).
    key_json = component.config.service_account_json
    if key_json:
        from google.oauth2 import service_account

        try:
            info = json.loads(key_json)
            credentials = service_account.Credentials.from_service_account_info(info, scopes=SCOPES)
        except (ValueError, KeyError, TypeError) as e:
            # The message names the field; the key itself and the parser's excerpt stay out.
            raise EngineError(
                f"service_account_json of '{component.name}' is not a Google service-account key "
                f"(JSON with type, client_email, private_key, token_uri): {type(e).__name__}. "
                "Store the key file's content in a ZenML secret and pass '{{secret_name.key}}'."
            ) from None
        return ResolvedCredentials(credentials, "service_account_json", credentials.service_account_email)

    if component.config.endpoint_is_loopback:
        return ResolvedCredentials(AnonymousCredentials(), "anonymous (loopback api_endpoint)")

    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    try:
        credentials, _ = google.auth.default(scopes=SCOPES)
    except DefaultCredentialsError as e:
        raise EngineError(
            f"No credentials for BigQuery component '{component.name}': link a GCP service "
            f"connector (`zenml feature-store connect {component.name} --connector <name>`), set "
            "service_account_json to a secret reference, or configure Application Default "
            f"Credentials (`gcloud auth application-default login`). Cause: {e}"
        ) from e
    return ResolvedCredentials(credentials, "application default credentials", _principal(credentials))


def _principal(credentials: Any) -> Optional[str]:
    email = getattr(credentials, "service_account_email", None) or getattr(credentials, "signer_email", None)
    return email if isinstance(email, str) and "@" in email else None


def portable(credentials: "Credentials") -> "Credentials":
    """Credentials that can travel to Dask workers: these ones when they pickle, otherwise
    a short-lived access token of theirs (a service account's signer does not pickle)."""
    try:
        pickle.dumps(credentials)
        return credentials
    except Exception:
        pass
    import google.auth.transport.requests
    import google.oauth2.credentials

    if not credentials.valid:
        credentials.refresh(google.auth.transport.requests.Request())
    return google.oauth2.credentials.Credentials(token=credentials.token, expiry=credentials.expiry)
