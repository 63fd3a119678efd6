"""BigQuery tables as artifacts: stored as a reference, never as a copy of the rows.

A step returns `BigQueryDataset(table_id="project.dataset.table")`; the artifact is a small
JSON file (the table id, its schema, size and row count, and how its data is pinned for
reproducibility), so zero bytes of the table leave BigQuery. A later step annotated
`BigQueryDataset` gets the reference back; one annotated `pandas.DataFrame` or
`pyarrow.Table` gets the rows, and `dask.dataframe.DataFrame` a frame whose partitions the
Dask workers read.

Importing this module imports no google-cloud module (the client is the engine's).
"""

from __future__ import annotations

import json
import posixpath
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, ClassVar, Dict, Optional, Tuple, Type

from zenml.enums import ArtifactType, VisualizationType
from zenml.logger import get_logger
from zenml.materializers.base_materializer import BaseMaterializer

from zenml_compute_engines.flavors.bigquery import names
from zenml_compute_engines.materializers import dataset as dataset_format
from zenml_compute_engines.flavors.sources import recorded_as_installed

logger = get_logger(__name__)

REFERENCE_NAME = "bigquery_table.json"
FORMAT = "zenml-compute-engines/bigquery-table"
FORMAT_VERSION = 1
# Pinning reads a table's data as of a moment: views and external tables have none.
_PINNABLE = ("TABLE", "SNAPSHOT", "CLONE")


@recorded_as_installed
@dataclass(frozen=True)
class BigQueryDataset:
    """A BigQuery table passed between steps by reference.

    Build it from `table_id="project.dataset.table"` or from `project`, `dataset` and
    `table`; names are validated (no quotes, backticks or SQL). Loaded from an artifact,
    it also says how the data was pinned: `as_of` (time travel) or `snapshot_id`; use
    `pinned_ref` in SQL to read the data as the artifact recorded it.
    """

    table_id: str = ""
    project: str = ""
    dataset: str = ""
    table: str = ""
    as_of: Optional[datetime] = None
    snapshot_id: Optional[str] = None

    def __post_init__(self) -> None:
        if self.table_id:
            parts = names.parse_table_id(self.table_id)
            given = (self.project, self.dataset, self.table)
            if any(g and g != p for g, p in zip(given, parts)):
                raise ValueError(
                    f"BigQueryDataset(table_id={self.table_id!r}) disagrees with "
                    f"project/dataset/table {given}; give one or the other"
                )
        else:
            parts = (
                names.check_project(self.project, "project"),
                names.check_dataset(self.dataset, "dataset"),
                names.check_table(self.table, "table"),
            )
        for name, value in zip(("project", "dataset", "table"), parts):
            object.__setattr__(self, name, value)
        object.__setattr__(self, "table_id", ".".join(parts))
        if self.snapshot_id is not None:
            names.parse_table_id(self.snapshot_id, "snapshot_id")
        if self.as_of is not None and self.as_of.tzinfo is None:
            raise ValueError("as_of must be timezone-aware (UTC)")

    @property
    def pinned_ref(self) -> str:
        """A FROM-clause reference to the data as the artifact recorded it."""
        if self.snapshot_id:
            return f"`{self.snapshot_id}`"
        if self.as_of is not None:
            stamp = self.as_of.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f+00:00")
            return f"`{self.table_id}` FOR SYSTEM_TIME AS OF TIMESTAMP '{stamp}'"
        return f"`{self.table_id}`"

    def __str__(self) -> str:
        return self.table_id


# Annotations that get the table's rows (readers.kind_of names them).
_ROW_KINDS = ("pandas", "arrow", "dask")


def _row_kind(data_type: Any) -> Optional[str]:
    from zenml_compute_engines.materializers.readers import kind_of

    kind = kind_of(data_type)
    return kind if kind in _ROW_KINDS else None


def _engine() -> Any:
    """The stack's BigQuery engine component, or None."""
    from zenml_compute_engines.flavors.context import compute_engine
    from zenml_compute_engines.flavors.engine import EngineError

    try:
        return compute_engine("bigquery")
    except EngineError:
        return None


@recorded_as_installed
class BigQueryDatasetMaterializer(BaseMaterializer):
    """Stores a `BigQueryDataset` as a reference (plus schema, size, pin); loads the
    reference, or the rows for pandas / pyarrow / Dask annotations."""

    ASSOCIATED_TYPES: ClassVar[Tuple[Type[Any], ...]] = (BigQueryDataset,)
    ASSOCIATED_ARTIFACT_TYPE = ArtifactType.DATA

    _reference: Dict[str, Any]

    @classmethod
    def can_load_type(cls, data_type: Type[Any]) -> bool:
        return super().can_load_type(data_type) or _row_kind(data_type) is not None

    def validate_load_type_compatibility(self, data_type: Type[Any]) -> None:
        if not self.can_load_type(data_type):
            raise TypeError(
                f"A BigQuery table artifact loads as BigQueryDataset, pandas.DataFrame, "
                f"pyarrow.Table or dask.dataframe.DataFrame, not {data_type}."
            )

    # ---- load ------------------------------------------------------------------------

    def load(self, data_type: Type[Any]) -> Any:
        reference = self._read_reference()
        dataset = BigQueryDataset(
            table_id=reference["table_id"],
            as_of=datetime.fromisoformat(reference["as_of"]) if reference.get("as_of") else None,
            snapshot_id=reference.get("snapshot_id"),
        )
        kind = _row_kind(data_type)
        if kind is None:
            return dataset
        from zenml_compute_engines.flavors.bigquery import rows

        engine = _engine()
        if engine is None:
            raise RuntimeError(
                f"Loading BigQuery table {dataset.table_id} as {data_type.__name__} needs a BigQuery "
                "engine on the active stack (`zenml feature-store register ... --flavor=bigquery`)."
            )
        client = engine.session()
        if kind == "dask":
            from zenml_compute_engines.flavors.dask.engine import step_client

            step_client(start=True)  # the step's Dask cluster reads the partitions
            return rows.to_dask(client, dataset)
        table = rows.to_arrow(client, dataset)
        return table if kind == "arrow" else table.to_pandas()

    def _read_reference(self) -> Dict[str, Any]:
        path = posixpath.join(self.uri, REFERENCE_NAME)
        with self.artifact_store.open(path, "r") as handle:
            return json.load(handle)

    # ---- save ------------------------------------------------------------------------

    def save(self, data: BigQueryDataset) -> None:
        reference: Dict[str, Any] = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "table_id": data.table_id,
            "pinned": "none",
        }
        engine = _engine()
        if engine is None:
            logger.warning(
                "No BigQuery engine on the active stack: storing %s as a bare reference (no "
                "schema, size or pin).",
                data.table_id,
            )
        else:
            reference.update(self._describe_and_pin(engine, data))
        with self.artifact_store.open(posixpath.join(self.uri, REFERENCE_NAME), "w") as handle:
            json.dump(reference, handle, indent=1)
        self._reference = reference

    def _describe_and_pin(self, engine: Any, data: BigQueryDataset) -> Dict[str, Any]:
        from google.api_core.exceptions import NotFound
        from google.cloud import bigquery

        client = engine.session()
        try:
            table = client.get_table(data.table_id)
        except NotFound:
            raise ValueError(
                f"The step returned BigQueryDataset({data.table_id!r}), but that table does not exist "
                f"at {engine.config.address}."
            ) from None
        facts: Dict[str, Any] = {
            "location": table.location,
            "table_type": table.table_type,
            "num_rows": table.num_rows,
            "num_bytes": table.num_bytes,
            "modified": table.modified.isoformat() if table.modified else None,
            "schema": [{"name": f.name, "type": f.field_type, "mode": f.mode} for f in table.schema],
        }
        mode = engine.config.reproducibility
        if mode != "none" and table.table_type not in _PINNABLE:
            logger.warning("%s is a %s: stored without a pin (only tables can be pinned).", data.table_id, table.table_type)
            mode = "none"
        if mode == "time_travel":
            # The table's own last change (the server's clock), unless rows are still in the
            # streaming buffer, which that time does not cover.
            as_of = table.modified if table.streaming_buffer is None and table.modified else datetime.now(timezone.utc)
            facts.update(pinned="time_travel", as_of=as_of.isoformat())
        elif mode == "snapshot":
            snapshot_id = self._snapshot_id(engine.config, data)
            config = bigquery.CopyJobConfig(operation_type="SNAPSHOT")
            if engine.config.snapshot_expiration_days:
                config.destination_expiration_time = (
                    datetime.now(timezone.utc) + timedelta(days=engine.config.snapshot_expiration_days)
                ).isoformat()
            job = client.copy_table(data.table_id, snapshot_id, job_config=config)
            job.result()
            facts.update(pinned="snapshot", snapshot_id=snapshot_id, snapshot_job_id=job.job_id)
        return facts

    def _snapshot_id(self, config: Any, data: BigQueryDataset) -> str:
        dataset = config.snapshot_dataset or f"{data.project}.{data.dataset}"
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d%H%M%S")
        return f"{dataset}.{data.table[:900]}__zenml_{stamp}_{uuid.uuid4().hex[:8]}"

    # ---- what the dashboard shows ---------------------------------------------------------

    def save_visualizations(self, data: BigQueryDataset) -> Dict[str, VisualizationType]:
        reference = self._reference
        rows = None
        engine = _engine()
        if engine is not None and reference.get("schema"):
            source = reference.get("snapshot_id") or reference["table_id"]
            rows = engine.session().list_rows(source, max_results=10).to_arrow(create_bqstorage_client=False).to_pandas()
        heading = f"BigQuery table {reference['table_id']} (stored by reference, {_pin_text(reference)})"
        if reference.get("num_rows") is not None:
            heading += f": {reference['num_rows']:,} rows, {reference['num_bytes'] or 0:,} bytes"
        schema = [{"name": c["name"], "type": f"{c['type']} {c['mode'] or ''}".strip()} for c in reference.get("schema", [])]
        path = dataset_format.write_html(self.artifact_store, self.uri, dataset_format.render_html(heading, schema, rows))
        return {path: VisualizationType.HTML}

    def extract_metadata(self, data: BigQueryDataset) -> Dict[str, Any]:
        from zenml.metadata.metadata_types import StorageSize

        reference = self._reference
        meta: Dict[str, Any] = {"table_id": reference["table_id"], "pinned": _pin_text(reference)}
        if reference.get("schema") is not None:
            meta.update(
                num_rows=reference["num_rows"],
                data_bytes=StorageSize(reference["num_bytes"] or 0),
                schema={c["name"]: c["type"] for c in reference["schema"]},
                location=reference["location"],
            )
        return {k: v for k, v in meta.items() if v is not None}


def _pin_text(reference: Dict[str, Any]) -> str:
    if reference.get("pinned") == "snapshot":
        return f"snapshot {reference['snapshot_id']}"
    if reference.get("pinned") == "time_travel":
        return f"as of {reference['as_of']}"
    return "not pinned"
