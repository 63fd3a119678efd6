"""The engine-neutral dataset format every engine writes and reads (DESIGN.md §5).

An artifact directory holds `data/` (parquet part files written by the engine's workers)
and `_manifest.json`, written last: it is the commit marker, so a half-written artifact
never loads. Row counts and the schema come from the parquet footers, never from
recomputing the data. The manifest's schema is engine-neutral (Arrow types without the
64-bit-offset variants some engines write), so an artifact looks the same whoever wrote it.

`DatasetMaterializer` is the base of every engine's materializer: subclasses write the
part files (`save`); loading as any of the five dataset types, the visualization, the
metadata and the content hash all derive from what is stored at the URI.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import posixpath
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Type

from zenml.enums import ArtifactType, VisualizationType
from zenml.materializers.base_materializer import BaseMaterializer

if TYPE_CHECKING:
    import pandas
    import pyarrow
    from zenml.artifact_stores import BaseArtifactStore

FORMAT = "zenml-compute-engines/dataset"
FORMAT_VERSION = 2
MANIFEST_NAME = "_manifest.json"
DATA_DIR = "data"


class IncompleteDatasetError(RuntimeError):
    """The artifact has no manifest: its writer failed or is still writing."""


class DatasetChangedError(RuntimeError):
    """The artifact's manifest differs from the one recorded when it was saved."""


@dataclass
class DataFile:
    path: str  # relative to the data directory
    rows: int
    bytes: int


@dataclass
class Manifest:
    """What a dataset artifact holds; stored as `_manifest.json`.

    `schema` lists the columns with engine-neutral Arrow type names; `arrow_schema` is
    the same schema, serialized (base64 Arrow IPC), for readers that need exact types
    (an empty dataset, Spark's executor-side reader). `written_via` says how the part
    files got to the store (e.g. "spark executors, pyarrow + fsspec"). `pandas_metadata`:
    the files carry pandas' own dtypes and index (written from pandas or Dask).
    """

    engine: str
    engine_version: str
    num_rows: int
    num_bytes: int
    schema: List[Dict[str, str]]
    files: List[DataFile] = field(default_factory=list)
    arrow_schema: str = ""
    written_via: str = ""
    pandas_metadata: bool = False
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> "Manifest":
        raw = json.loads(text)
        raw["files"] = [DataFile(**f) for f in raw["files"]]
        return cls(**raw)

    def arrow(self) -> "pyarrow.Schema":
        """The dataset's engine-neutral Arrow schema."""
        import pyarrow as pa

        if self.arrow_schema:
            return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(self.arrow_schema)))
        raise IncompleteDatasetError("this manifest (format version 1) records no Arrow schema")


def data_dir(uri: str) -> str:
    """Where the part files of the dataset at `uri` live."""
    return posixpath.join(uri, DATA_DIR)


def neutral_type(arrow_type: "pyarrow.DataType") -> "pyarrow.DataType":
    """`arrow_type` without 64-bit offsets (large_string -> string, large_list -> list,
    ...), recursively: how engines differ in writing the same data, not what it is."""
    import pyarrow as pa
    import pyarrow.types as t

    if t.is_large_string(arrow_type):
        return pa.string()
    if t.is_large_binary(arrow_type):
        return pa.binary()
    if t.is_large_list(arrow_type) or t.is_list(arrow_type):
        return pa.list_(neutral_field(arrow_type.value_field))
    if t.is_struct(arrow_type):
        return pa.struct([neutral_field(arrow_type.field(i)) for i in range(arrow_type.num_fields)])
    if t.is_map(arrow_type):
        return pa.map_(neutral_field(arrow_type.key_field), neutral_field(arrow_type.item_field))
    if t.is_dictionary(arrow_type):
        return neutral_type(arrow_type.value_type)
    return arrow_type


def neutral_field(arrow_field: "pyarrow.Field") -> "pyarrow.Field":
    return arrow_field.with_type(neutral_type(arrow_field.type)).remove_metadata()


def neutral_schema(schema: "pyarrow.Schema") -> "pyarrow.Schema":
    import pyarrow as pa

    return pa.schema([neutral_field(f) for f in schema])


def _part_files(store: "BaseArtifactStore", directory: str) -> List[str]:
    # Engines leave markers (_SUCCESS, .crc, _committed_*) beside the parts.
    if not store.exists(directory):
        return []
    names = sorted(str(name) for name in store.listdir(directory))
    return [n for n in names if n.endswith(".parquet") and not n.startswith(("_", "."))]


def commit(
    store: "BaseArtifactStore",
    uri: str,
    engine: str,
    engine_version: str,
    written_via: str = "",
    schema: Optional["pyarrow.Schema"] = None,
) -> Manifest:
    """Describe the part files under `uri/data` from their footers and write the manifest last.

    `schema` is used when no part file exists (an empty dataset), so that readers still
    know its columns.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    directory = data_dir(uri)
    files: List[DataFile] = []
    for name in _part_files(store, directory):
        path = posixpath.join(directory, name)
        with store.open(path, "rb") as handle:
            metadata = pq.ParquetFile(handle).metadata
            if not files:
                schema = metadata.schema.to_arrow_schema()
        files.append(DataFile(path=name, rows=metadata.num_rows, bytes=int(store.size(path) or 0)))
    neutral = neutral_schema(schema if schema is not None else pa.schema([]))
    manifest = Manifest(
        engine=engine,
        engine_version=engine_version,
        num_rows=sum(f.rows for f in files),
        num_bytes=sum(f.bytes for f in files),
        schema=[{"name": f.name, "type": str(f.type)} for f in neutral],
        files=files,
        arrow_schema=base64.b64encode(neutral.serialize().to_pybytes()).decode(),
        written_via=written_via,
        pandas_metadata=schema is not None and schema.pandas_metadata is not None,
    )
    with store.open(posixpath.join(uri, MANIFEST_NAME), "w") as handle:
        handle.write(manifest.to_json())
    return manifest


def _manifest_text(store: "BaseArtifactStore", uri: str) -> str:
    path = posixpath.join(uri, MANIFEST_NAME)
    if not store.exists(path):
        raise IncompleteDatasetError(
            f"{uri} is an incomplete dataset artifact: it has no {MANIFEST_NAME}, so the step that "
            "wrote it did not finish (it failed or was killed while saving). It cannot be "
            "loaded; re-run the producing step."
        )
    with store.open(path, "r") as handle:
        return handle.read()


def read_manifest(store: "BaseArtifactStore", uri: str) -> Manifest:
    """The manifest of the dataset at `uri`; raises if the artifact was never committed."""
    return Manifest.from_json(_manifest_text(store, uri))


def content_hash(store: "BaseArtifactStore", uri: str) -> str:
    """A hash of what the artifact holds, from its manifest alone (files, sizes, rows,
    schema): no part file is read."""
    return hashlib.sha256(_manifest_text(store, uri).encode()).hexdigest()


def preview(
    store: "BaseArtifactStore", uri: str, manifest: Manifest, rows: int = 10
) -> Optional["pandas.DataFrame"]:
    """The first `rows` rows, read from the first non-empty part file only."""
    import pyarrow.parquet as pq

    for data_file in manifest.files:
        if data_file.rows:
            with store.open(posixpath.join(data_dir(uri), data_file.path), "rb") as handle:
                parquet = pq.ParquetFile(handle)
                return next(parquet.iter_batches(batch_size=rows)).to_pandas().head(rows)
    return None


def metadata(manifest: Manifest) -> Dict[str, Any]:
    """Artifact metadata recorded in ZenML (no data is recomputed for it)."""
    from zenml.metadata.metadata_types import StorageSize

    meta: Dict[str, Any] = {
        "num_rows": manifest.num_rows,
        "num_columns": len(manifest.schema),
        "num_files": len(manifest.files),
        "data_bytes": StorageSize(manifest.num_bytes),
        "schema": {column["name"]: column["type"] for column in manifest.schema},
        "written_by": f"{manifest.engine} {manifest.engine_version}",
    }
    if manifest.written_via:
        meta["written_via"] = manifest.written_via
    return meta


def render_html(heading: str, schema: List[Dict[str, str]], rows: Optional["pandas.DataFrame"]) -> str:
    """The schema + first-rows page every tabular artifact of ours shows."""
    schema_rows = "".join(
        f"<tr><td>{html.escape(c['name'])}</td><td>{html.escape(c['type'])}</td></tr>" for c in schema
    )
    return (
        f"<h3>{html.escape(heading)}</h3>"
        f"<h4>Schema</h4><table><tr><th>column</th><th>type</th></tr>{schema_rows}</table>"
        "<h4>First rows</h4>"
        + (rows.to_html(index=False, max_cols=50) if rows is not None else "<p>(empty)</p>")
    )


def write_html(store: "BaseArtifactStore", uri: str, page: str) -> str:
    """Write a visualization page beside the artifact's data; returns its path."""
    path = posixpath.join(uri, "preview.html")
    with store.open(path, "w") as handle:
        handle.write(page)
    return path


def save_html_visualization(store: "BaseArtifactStore", uri: str, manifest: Manifest) -> str:
    """Write a schema + preview page beside the data; returns its path."""
    heading = (
        f"{manifest.num_rows:,} rows in {len(manifest.files)} parquet file(s), "
        f"{manifest.num_bytes:,} bytes, written by {manifest.engine} {manifest.engine_version}"
    )
    return write_html(store, uri, render_html(heading, manifest.schema, preview(store, uri, manifest)))


class DatasetMaterializer(BaseMaterializer):
    """What every engine's materializer shares.

    Subclasses write the part files and commit the manifest in `save`. Everything else
    is read from the store, so a fresh instance (not the one that saved) can describe and
    load the artifact: loading as any of Spark, Dask, Ray, Arrow or pandas (readers.py),
    the visualization, the metadata and the content hash.
    """

    SKIP_REGISTRATION = True  # a base class: the engine materializers register themselves
    ASSOCIATED_ARTIFACT_TYPE = ArtifactType.DATA

    @classmethod
    def can_load_type(cls, data_type: Type[Any]) -> bool:
        from zenml_compute_engines.materializers import readers

        return readers.kind_of(data_type) is not None

    def validate_load_type_compatibility(self, data_type: Type[Any]) -> None:
        if not self.can_load_type(data_type):
            from zenml_compute_engines.materializers import readers

            raise TypeError(
                f"A dataset artifact ({self.uri}) loads as {readers.LOADABLE}, not as {data_type}."
            )

    def load(self, data_type: Type[Any]) -> Any:
        from zenml_compute_engines.materializers import readers

        manifest = read_manifest(self.artifact_store, self.uri)
        expected = getattr(self, "expected_content_hash", None)
        if expected and content_hash(self.artifact_store, self.uri) != expected:
            raise DatasetChangedError(
                f"The dataset artifact at {self.uri} changed after it was saved (its manifest no "
                "longer matches the content hash ZenML recorded); re-run the producing step."
            )
        return readers.read(self.artifact_store, self.uri, manifest, data_type)

    def data_files(self, manifest: Manifest) -> List[str]:
        """The manifest's part files as paths in the artifact store."""
        directory = data_dir(self.uri)
        return [posixpath.join(directory, data_file.path) for data_file in manifest.files]

    def save_visualizations(self, data: Any) -> Dict[str, VisualizationType]:
        manifest = read_manifest(self.artifact_store, self.uri)
        path = save_html_visualization(self.artifact_store, self.uri, manifest)
        return {path: VisualizationType.HTML}

    def extract_metadata(self, data: Any) -> Dict[str, Any]:
        return metadata(read_manifest(self.artifact_store, self.uri))

    def compute_content_hash(self, data: Any) -> Optional[str]:
        return content_hash(self.artifact_store, self.uri)
