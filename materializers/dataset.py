"""The engine-neutral dataset format every engine writes and reads (DESIGN.md §5).

An artifact directory holds `data/` (parquet part files written by the engine's workers)
and `_manifest.json`, written last: it is the commit marker, so a half-written artifact
never loads. Row counts and the schema come from the parquet footers, never from
recomputing the data.
"""

from __future__ import annotations

import html
import json
import posixpath
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Dict, List, Optional

from zenml.enums import ArtifactType, VisualizationType
from zenml.materializers.base_materializer import BaseMaterializer

if TYPE_CHECKING:
    import pandas
    import pyarrow
    from zenml.artifact_stores import BaseArtifactStore

FORMAT = "zenml-compute-engines/dataset"
FORMAT_VERSION = 1
MANIFEST_NAME = "_manifest.json"
DATA_DIR = "data"


class IncompleteDatasetError(RuntimeError):
    """The artifact has no manifest: its writer failed or is still writing."""


@dataclass
class DataFile:
    path: str  # relative to the data directory
    rows: int
    bytes: int


@dataclass
class Manifest:
    """What a dataset artifact holds; stored as `_manifest.json`."""

    engine: str
    engine_version: str
    num_rows: int
    num_bytes: int
    schema: List[Dict[str, str]]
    files: List[DataFile] = field(default_factory=list)
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> "Manifest":
        raw = json.loads(text)
        raw["files"] = [DataFile(**f) for f in raw["files"]]
        return cls(**raw)


def data_dir(uri: str) -> str:
    """Where the part files of the dataset at `uri` live."""
    return posixpath.join(uri, DATA_DIR)


def _part_files(store: "BaseArtifactStore", directory: str) -> List[str]:
    # Engines leave markers (_SUCCESS, .crc, _committed_*) beside the parts.
    names = sorted(str(name) for name in store.listdir(directory))
    return [n for n in names if n.endswith(".parquet") and not n.startswith(("_", "."))]


def commit(store: "BaseArtifactStore", uri: str, engine: str, engine_version: str) -> Manifest:
    """Describe the part files under `uri/data` from their footers and write the manifest last."""
    import pyarrow.parquet as pq

    directory = data_dir(uri)
    files: List[DataFile] = []
    schema: "pyarrow.Schema | None" = None
    for name in _part_files(store, directory):
        path = posixpath.join(directory, name)
        with store.open(path, "rb") as handle:
            metadata = pq.ParquetFile(handle).metadata
            if schema is None:
                schema = metadata.schema.to_arrow_schema()
        files.append(DataFile(path=name, rows=metadata.num_rows, bytes=int(store.size(path) or 0)))
    manifest = Manifest(
        engine=engine,
        engine_version=engine_version,
        num_rows=sum(f.rows for f in files),
        num_bytes=sum(f.bytes for f in files),
        schema=[{"name": f.name, "type": str(f.type)} for f in (schema or [])],
        files=files,
    )
    with store.open(posixpath.join(uri, MANIFEST_NAME), "w") as handle:
        handle.write(manifest.to_json())
    return manifest


def read_manifest(store: "BaseArtifactStore", uri: str) -> Manifest:
    """The manifest of the dataset at `uri`; raises if the artifact was never committed."""
    path = posixpath.join(uri, MANIFEST_NAME)
    if not store.exists(path):
        raise IncompleteDatasetError(
            f"{uri} has no {MANIFEST_NAME}: the step that wrote it did not finish, so it "
            "cannot be loaded. Re-run the producing step."
        )
    with store.open(path, "r") as handle:
        return Manifest.from_json(handle.read())


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

    return {
        "num_rows": manifest.num_rows,
        "num_files": len(manifest.files),
        "data_bytes": StorageSize(manifest.num_bytes),
        "schema": {column["name"]: column["type"] for column in manifest.schema},
        "written_by": f"{manifest.engine} {manifest.engine_version}",
    }


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
    """What every engine's materializer shares: `save` commits a manifest (kept in
    `self._manifest`), from which the visualization and the metadata are derived."""

    SKIP_REGISTRATION = True  # a base class: the engine materializers register themselves
    ASSOCIATED_ARTIFACT_TYPE = ArtifactType.DATA

    _manifest: Manifest

    def data_files(self, manifest: Manifest) -> List[str]:
        """The manifest's part files as paths in the artifact store."""
        directory = data_dir(self.uri)
        return [posixpath.join(directory, data_file.path) for data_file in manifest.files]

    def save_visualizations(self, data: Any) -> Dict[str, VisualizationType]:
        path = save_html_visualization(self.artifact_store, self.uri, self._manifest)
        return {path: VisualizationType.HTML}

    def extract_metadata(self, data: Any) -> Dict[str, Any]:
        return metadata(self._manifest)
