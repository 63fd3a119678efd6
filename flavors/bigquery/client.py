"""The step's `google.cloud.bigquery.Client`: job defaults, a cost guard and a job log.

`EngineClient` is a `bigquery.Client`, so step code uses it like any client. For every
query, load, copy and extract job it starts, it adds:

- labels for the ZenML pipeline, run and step, plus the step's own labels; for queries
  also `maximum_bytes_billed`, the default dataset and the run's BigQuery session. A
  value set in the job's own config wins (its labels are merged with ours, and the
  `zenml_*` labels are always ours).
- With `dry_run_limit_bytes`: a dry run first; a query estimated over the limit is
  refused before it runs.
- An entry in the running step's job log, which becomes the step's metadata and tells
  which jobs to cancel when the step fails or is interrupted.

Imported only when a step asks for BigQuery (it imports google-cloud-bigquery).
"""

from __future__ import annotations

import copy
import inspect
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

from google.api_core.exceptions import NotFound
from google.cloud import bigquery
from zenml.logger import get_logger

from zenml_compute_engines.flavors.bigquery import names
from zenml_compute_engines.flavors.addresses import is_loopback_host
from zenml_compute_engines.flavors.engine import EngineError
from zenml_compute_engines.flavors.sizes import format_bytes

logger = get_logger(__name__)

_DONE = "DONE"


class QueryCostError(EngineError):
    """A query's dry-run estimate is over `dry_run_limit_bytes`; it was not run."""


@dataclass(frozen=True)
class JobPolicy:
    """What every job of one step (or, outside steps, of the run) carries."""

    component: str
    labels: Dict[str, str]
    maximum_bytes_billed: Optional[int] = None
    dry_run_limit_bytes: Optional[int] = None
    default_dataset: Optional[str] = None
    step: Optional[str] = None

    def merged_labels(self, own: Optional[Dict[str, str]]) -> Dict[str, str]:
        ours = {k: v for k, v in self.labels.items() if k.startswith(names.RESERVED_LABEL_PREFIX)}
        return {**self.labels, **(own or {}), **ours}


@dataclass(eq=False)
class JobRecord:
    """One job a step started: the library's job object, or (a `query_and_wait` result)
    its id, fetched when the metadata is written."""

    kind: str
    job: Any = None
    job_id: Optional[str] = None
    location: Optional[str] = None
    project: Optional[str] = None
    estimated_bytes: Optional[int] = None
    jobless_stats: Dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> Optional[str]:
        return self.job.job_id if self.job is not None else self.job_id

    @property
    def running(self) -> bool:
        return self.job is not None and self.job.state != _DONE


class JobScope:
    """The jobs started under one policy: a step's, or the run's outside steps."""

    def __init__(self, policy: JobPolicy, is_step: bool) -> None:
        self.policy = policy
        self.is_step = is_step
        self.records: List[JobRecord] = []
        self._lock = threading.Lock()

    def add(self, record: JobRecord) -> None:
        with self._lock:
            self.records.append(record)

    def running(self) -> List[JobRecord]:
        with self._lock:
            return [r for r in self.records if r.running]


@dataclass(frozen=True)
class StorageAccess:
    """How rows are read: Google's Storage Read API, one at `endpoint`, or REST only."""

    enabled: bool
    endpoint: Optional[str] = None

    def describe(self) -> str:
        if not self.enabled:
            return "off (rows over REST)"
        return f"grpc {self.endpoint}" if self.endpoint else "google"

    def read_client(self, credentials: Any) -> Any:
        from google.cloud import bigquery_storage_v1

        assert self.endpoint is not None
        if is_loopback_host(self.endpoint.rpartition(":")[0]):
            import grpc
            from google.cloud.bigquery_storage_v1.services.big_query_read.transports import (
                BigQueryReadGrpcTransport,
            )

            channel = grpc.insecure_channel(self.endpoint)  # an emulator speaks plaintext
            return bigquery_storage_v1.BigQueryReadClient(transport=BigQueryReadGrpcTransport(channel=channel))
        return bigquery_storage_v1.BigQueryReadClient(
            credentials=credentials, client_options={"api_endpoint": self.endpoint}
        )


class EngineClient(bigquery.Client):
    """A `bigquery.Client` that labels, caps, guards and logs the jobs of the running step."""

    def __init__(
        self,
        *,
        policy: JobPolicy,
        storage: StorageAccess,
        verify_destination: bool,
        **client_kwargs: Any,
    ) -> None:
        super().__init__(**client_kwargs)
        self._zenml_run_scope = JobScope(policy, is_step=False)
        self._zenml_scope = self._zenml_run_scope
        self._zenml_storage = storage
        self.session_id: Optional[str] = None
        # Some endpoints (emulators) accept a query's destination table and ignore it:
        # None = not known yet, checked once on the first destination query.
        self._destination_ignored: Optional[bool] = None if verify_destination else False

    def __repr__(self) -> str:
        step = self._zenml_scope.policy.step
        return (
            f"<EngineClient project={self.project!r} location={self.location!r} "
            f"component={self._zenml_scope.policy.component!r}"
            f"{f' step={step!r}' if step else ''}>"
        )

    # ---- scopes ------------------------------------------------------------------

    @property
    def job_scope(self) -> JobScope:
        """The scope whose policy and job log the next job uses."""
        return self._zenml_scope

    def begin_step(self, policy: JobPolicy) -> JobScope:
        self._zenml_scope = JobScope(policy, is_step=True)
        return self._zenml_scope

    def end_step(self) -> JobScope:
        scope, self._zenml_scope = self._zenml_scope, self._zenml_run_scope
        return scope

    # ---- jobs --------------------------------------------------------------------

    def query(self, query: str, job_config: Optional[bigquery.QueryJobConfig] = None, *args: Any, **kwargs: Any) -> Any:
        """`Client.query` with the step's job defaults, the dry-run guard and the job log."""
        bound = inspect.signature(super().query).bind(query, job_config, *args, **kwargs)
        config = self._query_config(job_config)
        estimate = None
        if not config.dry_run:
            estimate = self._guard(query, config, bound.arguments)
            if config.destination is not None and self._destination_ignored:
                query, config = self._destination_as_ddl(query, config)
        bound.arguments["query"], bound.arguments["job_config"] = query, config
        job = super().query(*bound.args, **bound.kwargs)
        if config.dry_run:
            return job
        self._zenml_scope.add(JobRecord("query", job=job, estimated_bytes=estimate))
        if config.destination is not None and self._destination_ignored is None and job.state == _DONE:
            job = self._check_destination(query, config, job, bound)
        return job

    def query_and_wait(self, query: str, **kwargs: Any) -> Any:
        """`Client.query_and_wait` with the step's job defaults, the guard and the job log."""
        given = kwargs.get("job_config")
        if given is not None and given.destination is not None and self._destination_ignored is not False:
            # Checking that the destination was written needs the job: go through query().
            where = {k: kwargs[k] for k in ("location", "project") if kwargs.get(k)}
            wait = {k: kwargs[k] for k in ("page_size", "max_results") if kwargs.get(k)}
            return self.query(query, job_config=given, **where).result(**wait)
        config = self._query_config(given)
        estimate = None if config.dry_run else self._guard(query, config, kwargs)
        kwargs["job_config"] = config
        rows = super().query_and_wait(query, **kwargs)
        if not config.dry_run:
            self._zenml_scope.add(
                JobRecord(
                    "query",
                    job_id=rows.job_id,
                    location=rows.location,
                    project=rows.project,
                    estimated_bytes=estimate,
                    jobless_stats={
                        "query_id": rows.query_id,
                        "bytes_processed": rows.total_bytes_processed,
                        "slot_ms": rows.slot_millis,
                    },
                )
            )
        return rows

    def load_table_from_uri(self, *args: Any, **kwargs: Any) -> Any:
        return self._labelled_job("load", super().load_table_from_uri, args, kwargs)

    def load_table_from_file(self, *args: Any, **kwargs: Any) -> Any:
        # load_table_from_dataframe and load_table_from_json end here too.
        return self._labelled_job("load", super().load_table_from_file, args, kwargs)

    def copy_table(self, *args: Any, **kwargs: Any) -> Any:
        return self._labelled_job("copy", super().copy_table, args, kwargs)

    def extract_table(self, *args: Any, **kwargs: Any) -> Any:
        return self._labelled_job("extract", super().extract_table, args, kwargs)

    def _labelled_job(self, kind: str, method: Callable[..., Any], args: Any, kwargs: Any) -> Any:
        bound = inspect.signature(method).bind(*args, **kwargs)
        given = bound.arguments.get("job_config")
        config = copy.deepcopy(given) if given is not None else _JOB_CONFIGS[kind]()
        config.labels = self._zenml_scope.policy.merged_labels(config.labels)
        bound.arguments["job_config"] = config
        job = method(*bound.args, **bound.kwargs)
        self._zenml_scope.add(JobRecord(kind, job=job))
        return job

    def _query_config(self, given: Optional[bigquery.QueryJobConfig]) -> bigquery.QueryJobConfig:
        policy = self._zenml_scope.policy
        config = copy.deepcopy(given) if given is not None else bigquery.QueryJobConfig()
        config.labels = policy.merged_labels(config.labels)
        if config.maximum_bytes_billed is None and policy.maximum_bytes_billed:
            config.maximum_bytes_billed = policy.maximum_bytes_billed
        if config.default_dataset is None and policy.default_dataset:
            config.default_dataset = policy.default_dataset
        properties = list(config.connection_properties or [])
        if self.session_id and not config.create_session and not any(p.key == "session_id" for p in properties):
            config.connection_properties = [*properties, bigquery.ConnectionProperty("session_id", self.session_id)]
        return config

    # ---- the cost guard ------------------------------------------------------------

    def _guard(self, query: str, config: bigquery.QueryJobConfig, call: Dict[str, Any]) -> Optional[int]:
        """Dry-run the query; refuse it when its estimate is over the limit. Returns the estimate."""
        limit = self._zenml_scope.policy.dry_run_limit_bytes
        if not limit:
            return None
        dry = copy.deepcopy(config)
        dry.dry_run = True
        dry.destination = None
        where = {k: call[k] for k in ("location", "project") if call.get(k)}
        estimate = int(super().query(query, job_config=dry, **where).total_bytes_processed or 0)
        check_estimate(query, estimate, limit, self._zenml_scope.policy)
        return estimate

    # ---- endpoints that ignore `destination` ----------------------------------------

    def _check_destination(self, query: str, config: Any, job: Any, bound: inspect.BoundArguments) -> Any:
        """Verify once per client that the endpoint wrote the destination table; if it did
        not (an emulator), write it with DDL now and for every later destination query."""
        destination = config.destination
        try:
            table = self.get_table(destination)
            written = job.created is None or table.modified is None or table.modified >= job.created
        except NotFound:
            written = False
        self._destination_ignored = not written
        if written:
            return job
        logger.warning(
            "The BigQuery endpoint %s ignored the destination table of a query job; writing "
            "%s.%s.%s with a CREATE TABLE ... AS statement instead (and rewriting later "
            "destination queries of this client the same way).",
            self._connection.API_BASE_URL,
            destination.project,
            destination.dataset_id,
            destination.table_id,
        )
        ddl, ddl_config = self._destination_as_ddl(query, config)
        bound.arguments["query"], bound.arguments["job_config"] = ddl, ddl_config
        ddl_job = bigquery.Client.query(self, *bound.args, **bound.kwargs)
        self._zenml_scope.add(JobRecord("query", job=ddl_job))
        return ddl_job

    def _destination_as_ddl(self, query: str, config: Any) -> Any:
        destination = config.destination
        project = names.check_project(destination.project, "destination")
        dataset = names.check_dataset(destination.dataset_id, "destination")
        table = names.check_table(destination.table_id, "destination")
        target = f"`{project}.{dataset}.{table}`"
        disposition = config.write_disposition or "WRITE_EMPTY"
        if disposition == "WRITE_TRUNCATE":
            ddl = f"CREATE OR REPLACE TABLE {target} AS\n{query}"
        elif disposition == "WRITE_APPEND" and self._exists(destination):
            ddl = f"INSERT INTO {target}\n{query}"
        else:  # WRITE_EMPTY (the default): fails when the table exists, like BigQuery
            ddl = f"CREATE TABLE {target} AS\n{query}"
        ddl_config = copy.deepcopy(config)
        # A DDL statement names its own target; BigQuery refuses these beside it. (The
        # public setters would send them as null, so drop the keys.)
        for key in ("destinationTable", "writeDisposition", "createDisposition"):
            ddl_config._properties["query"].pop(key, None)
        return ddl, ddl_config

    def _exists(self, table: Any) -> bool:
        try:
            self.get_table(table)
            return True
        except NotFound:
            return False

    # ---- sessions and cancellation ----------------------------------------------------

    def start_session(self) -> str:
        """Open the BigQuery session the run's queries share."""
        config = bigquery.QueryJobConfig(create_session=True, labels=self._zenml_run_scope.policy.labels)
        job = bigquery.Client.query(self, "SELECT 1", job_config=config)
        job.result()
        session = job.session_info
        if session is None or not session.session_id:
            raise EngineError(f"BigQuery at {self._connection.API_BASE_URL} returned no session id")
        self.session_id = session.session_id
        return self.session_id

    def abort_session(self) -> None:
        """End the run's session (its temporary tables go with it)."""
        if not self.session_id:
            return
        config = bigquery.QueryJobConfig(
            connection_properties=[bigquery.ConnectionProperty("session_id", self.session_id)],
            labels=self._zenml_run_scope.policy.labels,
        )
        session_id, self.session_id = self.session_id, None
        bigquery.Client.query(self, "CALL BQ.ABORT_SESSION()", job_config=config).result()
        logger.info("Aborted BigQuery session %s.", session_id)

    def cancel_running(self, scope: JobScope, why: str) -> List[str]:
        """Cancel the jobs of `scope` not known to be done; returns their ids."""
        cancelled = []
        for record in scope.running():
            job = record.job
            try:
                self.cancel_job(job.job_id, location=job.location, project=job.project)
            except Exception as e:  # cancel the others all the same
                logger.warning("Cancelling BigQuery job %s failed: %s", job.job_id, e)
                continue
            cancelled.append(job.job_id)
            logger.info("Cancelled BigQuery job %s (%s).", job.job_id, why)
        return cancelled

    # ---- the Storage Read API -------------------------------------------------------

    def _ensure_bqstorage_client(self, bqstorage_client: Any = None, *args: Any, **kwargs: Any) -> Any:
        """The library asks here before reading rows with the Storage Read API: never
        Google's API for a custom endpoint unless `storage_api_endpoint` says where."""
        if bqstorage_client is not None:
            return bqstorage_client
        if not self._zenml_storage.enabled:
            return None
        if self._zenml_storage.endpoint:
            return self._zenml_storage.read_client(self._credentials)
        return super()._ensure_bqstorage_client(None, *args, **kwargs)

    @property
    def storage(self) -> StorageAccess:
        return self._zenml_storage


_JOB_CONFIGS = {
    "load": bigquery.LoadJobConfig,
    "copy": bigquery.CopyJobConfig,
    "extract": bigquery.ExtractJobConfig,
}


def check_estimate(query: str, estimate: int, limit: int, policy: JobPolicy) -> None:
    """Raise QueryCostError when a dry run's `estimate` is over `limit`."""
    if estimate <= limit:
        return
    first_line = next((line.strip() for line in query.splitlines() if line.strip()), "")
    if len(first_line) > 120:
        first_line = first_line[:117] + "..."
    where = f"step '{policy.step}'" if policy.step else f"component '{policy.component}'"
    raise QueryCostError(
        f"BigQuery query refused before it ran ({where}): its dry run estimates "
        f"{format_bytes(estimate)} processed, over dry_run_limit_bytes={format_bytes(limit)}. "
        f"Query: {first_line}\nNarrow it (a partition filter, fewer columns) or raise the limit "
        "for this step: @step(settings={\"feature_store\": BigQueryEngineSettings(dry_run_limit_bytes=...)})."
    )


def job_facts(client: bigquery.Client, record: JobRecord, console: bool) -> Dict[str, Any]:
    """What step metadata says about one job (fetched or refreshed if not known done)."""
    job = record.job
    if job is None and record.job_id:
        try:
            job = record.job = client.get_job(record.job_id, location=record.location, project=record.project)
        except Exception as e:  # the step's metadata is still worth writing
            logger.debug("Could not fetch BigQuery job %s: %s", record.job_id, e)
    if job is not None and job.state != _DONE:
        try:
            job.reload()
        except Exception as e:
            logger.debug("Could not refresh BigQuery job %s: %s", job.job_id, e)
    if job is None:
        facts = {"job_id": record.job_id, "type": record.kind, **record.jobless_stats}
        return {k: v for k, v in facts.items() if v is not None}
    statistics = job._properties.get("statistics", {})
    query = statistics.get("query", {})
    destination = getattr(job, "destination", None)
    facts = {
        "job_id": job.job_id,
        "type": job.job_type,
        "state": job.state,
        "location": job.location,
        "bytes_processed": _int(query.get("totalBytesProcessed")),
        "bytes_billed": _int(query.get("totalBytesBilled")),
        "slot_ms": _int(statistics.get("totalSlotMs") or query.get("totalSlotMs")),
        "cache_hit": query.get("cacheHit"),
        "estimated_bytes": record.estimated_bytes,
        "output_rows": _int(statistics.get("load", {}).get("outputRows")),
        "destination": f"{destination.project}.{destination.dataset_id}.{destination.table_id}"
        if destination is not None
        else None,
        "error": (job.error_result or {}).get("message"),
    }
    if console:
        facts["console_url"] = (
            f"https://console.cloud.google.com/bigquery?project={job.project}"
            f"&j=bq:{job.location}:{job.job_id}&page=queryresults"
        )
    return {k: v for k, v in facts.items() if v is not None}


def _int(value: Any) -> Optional[int]:
    return int(value) if value not in (None, "") else None


def scope_facts(client: bigquery.Client, scope: JobScope, console: bool) -> Dict[str, Any]:
    """The `jobs` list and its totals for a step's metadata."""
    jobs = [job_facts(client, record, console) for record in list(scope.records)]
    totals = {
        "jobs": len(jobs),
        "bytes_processed": sum(j.get("bytes_processed", 0) for j in jobs),
        "bytes_billed": sum(j.get("bytes_billed", 0) for j in jobs),
        "slot_ms": sum(j.get("slot_ms", 0) for j in jobs),
    }
    return {"jobs": jobs, "jobs_total": totals}
