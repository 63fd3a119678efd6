"""The BigQuery engine: a shared, labelled, cost-guarded client per run (google-cloud lazily).

BigQuery is a service, so the component is always *attached*: it never starts a process.
Connecting creates the client (and, with `session`, a BigQuery session); each step gets
the same client with its own job policy and job log; a failed or interrupted step's
running jobs are cancelled; the end of the run aborts the session and closes the client.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, List, Optional
from urllib.parse import urlsplit
from uuid import UUID

from zenml.logger import get_logger
from zenml.steps.step_context import StepContext

from zenml_compute_engines.flavors.bigquery import credentials
from zenml_compute_engines.flavors.bigquery.flavor import GOOGLE_ENDPOINT, BigQueryEngineConfig, BigQueryEngineSettings
from zenml_compute_engines.flavors.bigquery.names import label_value
from zenml_compute_engines.flavors.engine import BaseEngine, EngineError, LiveEngine, current_step_context
from zenml_compute_engines.flavors.usage import StepUsage

if TYPE_CHECKING:
    from zenml_compute_engines.flavors.bigquery.client import EngineClient, JobPolicy

logger = get_logger(__name__)


@dataclass(eq=False)
class BigQueryHandle:
    client: "EngineClient"
    credentials: credentials.ResolvedCredentials


def _probe(endpoint: str, timeout: float) -> None:
    """Fail fast, naming the endpoint, when nothing listens there (HTTP calls would retry)."""
    url = urlsplit(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout):
            pass
    except OSError as e:
        raise EngineError(f"BigQuery endpoint {endpoint} is unreachable: {e}") from e


class BigQueryEngine(BaseEngine):
    """BigQuery as a compute engine: hands steps a `google.cloud.bigquery.Client`."""

    kind = "bigquery"
    pip_extra = "bigquery"
    data_type_modules = ("zenml_compute_engines.materializers.bigquery_dataset",)
    engine_settings_class = BigQueryEngineSettings

    @property
    def config(self) -> BigQueryEngineConfig:
        return self._config  # type: ignore[return-value]

    # ---- connect / disconnect ---------------------------------------------------------

    def _connect(self, settings: BigQueryEngineSettings) -> BigQueryHandle:
        from google.api_core.client_options import ClientOptions
        from google.api_core.exceptions import NotFound

        from zenml_compute_engines.flavors.bigquery.client import EngineClient, StorageAccess

        config = self.config
        if config.api_endpoint:
            _probe(config.api_endpoint, timeout=min(10.0, config.startup_timeout_s / 2))
        resolved = credentials.resolve(self)
        storage = StorageAccess(
            enabled=bool(config.storage_api_endpoint) or not config.api_endpoint,
            endpoint=config.storage_api_endpoint,
        )
        client = EngineClient(
            project=config.project,
            credentials=resolved.credentials,
            location=config.location,
            client_options=ClientOptions(api_endpoint=config.api_endpoint) if config.api_endpoint else None,
            policy=self._policy(settings, context=None),
            storage=storage,
            verify_destination=bool(config.api_endpoint),
        )
        try:
            if config.default_dataset:
                try:
                    client.get_dataset(config.default_dataset)
                except NotFound:
                    raise EngineError(
                        f"default_dataset={config.default_dataset!r} of '{self.name}' does not exist "
                        f"at {config.address}; create it or change the component "
                        f"(`zenml feature-store update {self.name} --default_dataset=...`)."
                    ) from None
            if config.session:
                client.start_session()
        except BaseException:
            client.close()
            raise
        return BigQueryHandle(client=client, credentials=resolved)

    def _stop(self, handle: BigQueryHandle, owned: bool) -> None:
        client = handle.client
        try:
            scope = client.job_scope
            if scope.is_step:  # the process ends while a step still runs (SIGTERM, exit)
                client.cancel_running(scope, why=f"step '{scope.policy.step}' was interrupted")
            client.abort_session()
        finally:
            client.close()

    def _is_alive(self, live: LiveEngine) -> bool:
        # The client retries a refused connection for up to 10 minutes per call; a step
        # should instead learn at once that the endpoint went away. Google's own endpoint
        # is not probed (a TCP connection per step to it would cost more than it tells).
        if not self.config.api_endpoint:
            return True
        try:
            _probe(self.config.api_endpoint, timeout=2.0)
        except EngineError:
            return False
        return True

    # ---- per step ------------------------------------------------------------------

    def _policy(self, settings: BigQueryEngineSettings, context: Optional[StepContext]) -> "JobPolicy":
        from zenml_compute_engines.flavors.bigquery.client import JobPolicy

        labels = dict(settings.labels)
        step = None
        if context is not None:
            step = context.step_run.name
            labels.update(
                zenml_pipeline=label_value(context.pipeline.name),
                zenml_run=label_value(context.pipeline_run.name),
                zenml_run_id=label_value(str(context.pipeline_run.id)),
                zenml_step=label_value(step),
            )
        return JobPolicy(
            component=self.name,
            labels=labels,
            maximum_bytes_billed=settings.maximum_bytes_billed,
            dry_run_limit_bytes=settings.dry_run_limit_bytes,
            default_dataset=self.config.default_dataset,
            step=step,
        )

    def _step_view(self, live: LiveEngine, settings: BigQueryEngineSettings) -> "EngineClient":
        client = live.handle.client
        context = current_step_context()
        if context is not None:
            client.begin_step(self._policy(settings, context))
        return client

    def _cancel_step_work(self, live: LiveEngine, view: "EngineClient", step_run_id: UUID) -> List[str]:
        scope = view.job_scope
        return view.cancel_running(scope, why=f"step '{scope.policy.step}' failed")

    def _release_step_view(self, live: LiveEngine, view: "EngineClient", step_run_id: UUID, step_failed: bool) -> None:
        view.end_step()

    def _step_facts(self, live: LiveEngine, view: "EngineClient") -> Dict[str, Any]:
        from zenml_compute_engines.flavors.bigquery.client import scope_facts

        return scope_facts(view, view.job_scope, console=not self.config.api_endpoint)

    def _step_usage(self, live: LiveEngine, view: "EngineClient", step_run_id: UUID, mark: Any) -> Optional[StepUsage]:
        """The step's jobs (its output loads included) in the shape every engine reports:
        BigQuery's job statistics, slot-milliseconds as busy time, bytes processed as read."""
        from zenml_compute_engines.flavors.bigquery.client import scope_facts

        totals = scope_facts(view, view.job_scope, console=False)["jobs_total"]
        return StepUsage(
            source="bigquery job statistics",
            jobs=totals["jobs"],
            busy_s=totals["slot_ms"] / 1000,
            bytes_read=totals["bytes_processed"],
        )

    # ---- observability -------------------------------------------------------------

    def _describe(self, handle: BigQueryHandle) -> Dict[str, Any]:
        from google.cloud import bigquery

        config = self.config
        facts = {
            "google_cloud_bigquery_version": bigquery.__version__,
            "address": config.address,
            "project": config.project,
            "location": config.location,
            "api_endpoint": config.api_endpoint or GOOGLE_ENDPOINT,
            "credentials": handle.credentials.source,
            "principal": handle.credentials.principal,
            "default_dataset": config.default_dataset,
            "maximum_bytes_billed": config.maximum_bytes_billed,
            "dry_run_limit_bytes": config.dry_run_limit_bytes,
            "session_id": handle.client.session_id,
            "storage_read_api": handle.client.storage.describe(),
        }
        return {k: v for k, v in facts.items() if v is not None}
