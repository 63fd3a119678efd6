"""Reading a BigQuery table's rows: as Arrow or pandas in the step, or as a Dask DataFrame
whose partitions are read by the Dask workers (the driver only plans the read).

Rows come from the Storage Read API where the client may use it (Google, or a
`storage_api_endpoint`), otherwise from the free `tabledata.list` REST call. A pinned
artifact is read as the artifact recorded it: from its snapshot, from the table itself
while it is unchanged since the recorded time, or through a `FOR SYSTEM_TIME AS OF` query.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, List, Optional, Tuple

from zenml.logger import get_logger

from zenml_compute_engines.flavors.bigquery.credentials import portable

if TYPE_CHECKING:
    import pyarrow

    from zenml_compute_engines.flavors.bigquery.client import EngineClient
    from zenml_compute_engines.materializers.bigquery_dataset import BigQueryDataset

logger = get_logger(__name__)

ROWS_PER_PARTITION = 250_000
MAX_PARTITIONS = 64


def source_table(client: "EngineClient", dataset: "BigQueryDataset") -> Any:
    """The table holding the artifact's data as it was recorded (snapshot, table or a
    time-travel query's result table)."""
    if dataset.snapshot_id:
        return dataset.snapshot_id
    if dataset.as_of is None:
        return dataset.table_id
    table = client.get_table(dataset.table_id)
    if table.streaming_buffer is None and table.modified is not None and table.modified <= dataset.as_of:
        return dataset.table_id  # unchanged since it was recorded: read it directly, for free
    logger.info(
        "BigQuery table %s changed after the artifact recorded it; reading it as of %s "
        "(a time-travel query, billed as one).",
        dataset.table_id,
        dataset.as_of.isoformat(),
    )
    job = client.query(f"SELECT * FROM {dataset.pinned_ref}")
    job.result()
    return job.destination


def to_arrow(client: "EngineClient", dataset: "BigQueryDataset") -> "pyarrow.Table":
    """All rows in this process (the Storage Read API decides itself via the client)."""
    return client.list_rows(source_table(client, dataset)).to_arrow()


@dataclass(frozen=True)
class _ClientSpec:
    """What a Dask worker needs to build its own client (the credentials portable)."""

    project: str
    location: Optional[str]
    api_endpoint: str
    credentials: Any
    storage_endpoint: Optional[str]


def to_dask(client: "EngineClient", dataset: "BigQueryDataset") -> Any:
    """A lazy Dask DataFrame; each partition is read by a worker (a Storage Read API stream
    or a row range over REST)."""
    import dask.dataframe as dd

    table = client.get_table(source_table(client, dataset))
    meta = client.list_rows(table, max_results=1).to_arrow(create_bqstorage_client=False).slice(0, 0).to_pandas()
    partitions = max(1, min(MAX_PARTITIONS, math.ceil((table.num_rows or 0) / ROWS_PER_PARTITION)))
    spec = _ClientSpec(
        project=client.project,
        location=client.location,
        api_endpoint=client._connection.API_BASE_URL,
        credentials=portable(client._credentials),
        storage_endpoint=client.storage.endpoint,
    )
    read_stream, read_range = _readers()
    storage = client._ensure_bqstorage_client()
    if storage is not None:
        session = _read_session(storage, table, partitions)
        streams = [stream.name for stream in session.streams]
        if not streams:
            return dd.from_pandas(meta, npartitions=1)
        blob = type(session).serialize(session)
        return dd.from_map(read_stream, streams, spec=spec, session=blob, meta=meta, enforce_metadata=False)
    ranges = _row_ranges(table.num_rows or 0, partitions)
    source = f"{table.project}.{table.dataset_id}.{table.table_id}"
    return dd.from_map(read_range, ranges, spec=spec, table=source, meta=meta, enforce_metadata=False)


def _read_session(storage: Any, table: Any, streams: int) -> Any:
    from google.cloud.bigquery_storage_v1 import types

    requested = types.ReadSession(
        table=f"projects/{table.project}/datasets/{table.dataset_id}/tables/{table.table_id}",
        data_format=types.DataFormat.ARROW,
    )
    return storage.create_read_session(
        parent=f"projects/{table.project}", read_session=requested, max_stream_count=streams
    )


def _row_ranges(rows: int, partitions: int) -> List[Tuple[int, int]]:
    size = max(1, math.ceil(rows / partitions))
    return [(start, min(size, rows - start)) for start in range(0, rows, size)] or [(0, 0)]


def _readers() -> Any:
    """The worker-side readers as closures: cloudpickle ships them by value, so workers
    need google-cloud-bigquery(-storage) but not this package."""

    def make_client(spec: Any) -> Any:
        from google.cloud import bigquery

        return bigquery.Client(
            project=spec.project,
            credentials=spec.credentials,
            location=spec.location,
            client_options={"api_endpoint": spec.api_endpoint},
        )

    def make_storage(spec: Any) -> Any:
        from google.cloud import bigquery_storage_v1

        if spec.storage_endpoint is None:
            return bigquery_storage_v1.BigQueryReadClient(credentials=spec.credentials)
        host = spec.storage_endpoint.rpartition(":")[0]
        if host in ("127.0.0.1", "localhost", "::1", "[::1]"):
            import grpc
            from google.cloud.bigquery_storage_v1.services.big_query_read.transports import (
                BigQueryReadGrpcTransport,
            )

            channel = grpc.insecure_channel(spec.storage_endpoint)
            return bigquery_storage_v1.BigQueryReadClient(transport=BigQueryReadGrpcTransport(channel=channel))
        return bigquery_storage_v1.BigQueryReadClient(
            credentials=spec.credentials, client_options={"api_endpoint": spec.storage_endpoint}
        )

    def read_stream(stream: str, spec: Any, session: bytes) -> Any:
        from google.cloud.bigquery_storage_v1 import types

        read_session = types.ReadSession.deserialize(session)
        return make_storage(spec).read_rows(stream).to_arrow(read_session).to_pandas()

    def read_range(row_range: Tuple[int, int], spec: Any, table: str) -> Any:
        start, count = row_range
        rows = make_client(spec).list_rows(table, start_index=start, max_results=count)
        return rows.to_arrow(create_bqstorage_client=False).to_pandas()

    return read_stream, read_range
