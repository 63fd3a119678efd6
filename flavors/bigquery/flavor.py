"""BigQuery engine flavor: config, settings and flavor (import-light: no google-cloud here)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, Literal, Optional, Type
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator
from zenml.models import ServiceConnectorRequirements
from zenml.utils.secret_utils import SecretField

from zenml_compute_engines.flavors.addresses import is_loopback_host
from zenml_compute_engines.flavors.bigquery import names
from zenml_compute_engines.flavors.engine import BaseEngineConfig, BaseEngineFlavor, BaseEngineSettings
from zenml_compute_engines.flavors.sizes import parse_bytes
from zenml_compute_engines.flavors.sources import recorded_as_installed

if TYPE_CHECKING:
    from zenml_compute_engines.flavors.bigquery.engine import BigQueryEngine

GOOGLE_ENDPOINT = "https://bigquery.googleapis.com"
Reproducibility = Literal["time_travel", "snapshot", "none"]


class BigQueryEngineSettings(BaseEngineSettings):
    """Per-step BigQuery options (`@step(settings={"feature_store": BigQueryEngineSettings(...)})`).

    They apply to every query and load job the step starts through `bigquery_client()`;
    an explicit value in a job's own `job_config` wins.

    Attributes:
        maximum_bytes_billed: Cap on the bytes a query may bill; BigQuery fails a query
            over it without charging. Bytes or a size like "50GB", "1TiB".
        dry_run_limit_bytes: Dry-run every query first and refuse, before it runs, one
            whose estimate is over this many bytes (the error states the estimate, the
            limit and the query's first line).
        labels: Extra job labels (BigQuery label rules: lowercase letters, digits, `_`,
            `-`; keys starting with `zenml_` are the component's own: pipeline, run, step).
    """

    maximum_bytes_billed: Optional[int] = Field(default=None, gt=0)
    dry_run_limit_bytes: Optional[int] = Field(default=None, gt=0)
    labels: Dict[str, str] = Field(default_factory=dict)

    @field_validator("maximum_bytes_billed", "dry_run_limit_bytes", mode="before")
    @classmethod
    def _sizes(cls, value: Any) -> Any:
        if isinstance(value, bool) or isinstance(value, float):
            raise ValueError(f"must be a whole number of bytes or a size like '50GB', got {value!r}")
        return parse_bytes(value)

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: Dict[str, str]) -> Dict[str, str]:
        return names.check_labels(value)


class BigQueryEngineConfig(BaseEngineConfig, BigQueryEngineSettings):
    """BigQuery engine component config.

    BigQuery is a service: the component never owns a process. Its engine is a
    `google.cloud.bigquery.Client`, created on a step's first `bigquery_client()` call,
    shared by the run's steps and closed when the run ends; with `session` the run also
    gets one BigQuery session, aborted when the run ends.

    Credentials, first match wins: a GCP service connector linked to the component; the
    service-account key in `service_account_json` (a ZenML secret reference); anonymous
    credentials for a loopback `api_endpoint` (an emulator); Application Default
    Credentials.

    Attributes:
        project: The project jobs run in and are billed to.
        location: Where jobs run: `US`, `EU` or a region such as `europe-west4`.
        default_dataset: Dataset for unqualified table names in queries
            ("dataset" or "project.dataset"); checked to exist when the client connects.
        api_endpoint: BigQuery REST endpoint: an emulator (`http://127.0.0.1:9050`) or a
            regional endpoint. Default: Google's.
        storage_api_endpoint: BigQuery Storage Read API endpoint (`host:port`; plaintext
            gRPC for a loopback host). Unset with a custom `api_endpoint`: rows are read
            over REST, so an emulator stack never contacts Google.
        service_account_json: A service-account key (JSON); use a secret reference,
            e.g. `'{{bq_sa.key}}'`.
        session: Run the pipeline run's queries in one BigQuery session (temporary
            tables are shared by its steps); aborted when the run ends, on failure too.
        reproducibility: How a `BigQueryDataset` artifact pins the table's data:
            `time_travel` records the time to read it `FOR SYSTEM_TIME AS OF` (within
            BigQuery's time-travel window, 7 days by default), `snapshot` creates a table
            snapshot (zero-copy), `none` stores the reference only.
        snapshot_dataset: Dataset for snapshots (default: the table's own dataset).
        snapshot_expiration_days: Snapshots expire after this many days (None: never).
    """

    project: str
    location: Optional[str] = None
    default_dataset: Optional[str] = None
    api_endpoint: Optional[str] = None
    storage_api_endpoint: Optional[str] = None
    # No validator on this field: ZenML resolves `{{secret.key}}` references only for
    # fields without one.
    service_account_json: Optional[str] = SecretField(default=None)
    session: bool = False
    reproducibility: Reproducibility = "time_travel"
    snapshot_dataset: Optional[str] = None
    snapshot_expiration_days: Optional[float] = Field(default=7, gt=0)

    @field_validator("project")
    @classmethod
    def _project(cls, value: str) -> str:
        return names.check_project(value)

    @field_validator("location")
    @classmethod
    def _location(cls, value: Optional[str]) -> Optional[str]:
        return names.check_location(value) if value and value.strip() else None

    @field_validator("api_endpoint")
    @classmethod
    def _api_endpoint(cls, value: Optional[str]) -> Optional[str]:
        if value is None or not value.strip():
            return None
        url = urlsplit(value.strip())
        try:
            url.port
        except ValueError:
            url = url._replace(netloc="")
        if url.scheme not in ("http", "https") or not url.hostname or url.query or url.fragment:
            raise ValueError(
                f"api_endpoint={value!r} is not an http(s) URL; e.g. 'http://127.0.0.1:9050' "
                "(an emulator) or 'https://bigquery.europe-west4.rep.googleapis.com'"
            )
        return value.strip().rstrip("/")

    @field_validator("storage_api_endpoint")
    @classmethod
    def _storage_api_endpoint(cls, value: Optional[str]) -> Optional[str]:
        if value is None or not value.strip():
            return None
        host, _, port = value.strip().rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536 or "/" in host:
            raise ValueError(
                f"storage_api_endpoint={value!r} is not a gRPC 'host:port'; e.g. "
                "'127.0.0.1:9060' (an emulator) or 'bigquerystorage.googleapis.com:443'"
            )
        return value.strip()

    @model_validator(mode="after")
    def _datasets(self) -> "BigQueryEngineConfig":
        for field in ("default_dataset", "snapshot_dataset"):
            value = getattr(self, field)
            if value is not None:
                project, dataset = names.parse_dataset_id(value, self.project, field)
                object.__setattr__(self, field, f"{project}.{dataset}")
        return self

    @property
    def address(self) -> str:
        """Where the jobs go: the endpoint and project (BigQuery is always attached)."""
        return f"{self.api_endpoint or GOOGLE_ENDPOINT} (project {self.project})"

    @property
    def endpoint_is_loopback(self) -> bool:
        return bool(self.api_endpoint) and is_loopback_host(urlsplit(self.api_endpoint).hostname)

    @property
    def is_local(self) -> bool:
        return self.endpoint_is_loopback


@recorded_as_installed
class BigQueryEngineFlavor(BaseEngineFlavor):
    """BigQuery as a ZenML stack component (`--flavor=bigquery`)."""

    @property
    def name(self) -> str:
        return "bigquery"

    @property
    def config_class(self) -> Type[BigQueryEngineConfig]:
        return BigQueryEngineConfig

    @property
    def service_connector_requirements(self) -> ServiceConnectorRequirements:
        """A GCP service connector (`zenml service-connector register ... --type gcp`)."""
        return ServiceConnectorRequirements(connector_type="gcp", resource_type="gcp-generic")

    @property
    def implementation_class(self) -> Type["BigQueryEngine"]:
        from zenml_compute_engines.flavors.bigquery.engine import BigQueryEngine

        return BigQueryEngine
