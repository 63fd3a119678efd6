"""What an engine recorded of one step, kept as an artifact of the run.

`EngineRecordFile`: a file the engine wrote (Spark's event log, Ray's timeline), copied as is
into the artifact's folder under its own name, so the engine's own viewer opens it from
there: Spark's History Server reads the folder as its log directory, Perfetto or
chrome://tracing open Ray's trace file.

`EngineRecordPages`: HTML pages (Dask's performance report and a static summary of it),
each one a visualization in the ZenML dashboard.
"""

from __future__ import annotations

import os
import posixpath
from typing import Any, ClassVar, Dict, Tuple, Type

from zenml.enums import ArtifactType, VisualizationType
from zenml.materializers.base_materializer import BaseMaterializer

from zenml_compute_engines.flavors.sources import recorded_as_installed

# Hidden, so that Spark's History Server, which lists the folder, skips it.
_KIND_FILE = ".kind"


@recorded_as_installed
class EngineRecordFile:
    """A file about one step, written by its engine.

    Attributes:
        path: Where the file is: a local file before it is saved, the copy in the
            artifact store once loaded.
        kind: What it is ("spark event log", "ray timeline").
    """

    def __init__(self, path: str, kind: str) -> None:
        self.path = path
        self.kind = kind

    @property
    def filename(self) -> str:
        return posixpath.basename(self.path.replace(os.sep, "/"))

    def __repr__(self) -> str:
        return f"EngineRecordFile({self.kind}: {self.path})"


@recorded_as_installed
class EngineRecordFileMaterializer(BaseMaterializer):
    """Copies an `EngineRecordFile` into the artifact's folder, keeping its name."""

    ASSOCIATED_TYPES: ClassVar[Tuple[Type[Any], ...]] = (EngineRecordFile,)
    ASSOCIATED_ARTIFACT_TYPE: ClassVar[ArtifactType] = ArtifactType.DATA

    def save(self, data: EngineRecordFile) -> None:
        self.artifact_store.makedirs(self.uri)
        with open(data.path, "rb") as source, self.artifact_store.open(
            posixpath.join(self.uri, data.filename), "wb"
        ) as target:
            while chunk := source.read(1 << 20):
                target.write(chunk)
        with self.artifact_store.open(posixpath.join(self.uri, _KIND_FILE), "w") as handle:
            handle.write(data.kind)

    def load(self, data_type: Type[Any]) -> EngineRecordFile:
        with self.artifact_store.open(posixpath.join(self.uri, _KIND_FILE), "r") as handle:
            kind = handle.read().strip()
        names = [name for name in self.artifact_store.listdir(self.uri) if name != _KIND_FILE]
        return EngineRecordFile(posixpath.join(self.uri, str(names[0])), kind)

    def extract_metadata(self, data: EngineRecordFile) -> Dict[str, Any]:
        return {"kind": data.kind, "file": data.filename, "bytes": os.path.getsize(data.path)}


@recorded_as_installed
class EngineRecordPages:
    """HTML pages an engine made of one step, shown in this order as the artifact's
    visualizations in the ZenML dashboard.

    Attributes:
        pages: File name -> HTML. The dashboard shows an HTML visualization in a frame
            that runs no scripts, so a page drawn by JavaScript (Dask's performance
            report) shows there only after a download; put a static page first.
        kind: What they are ("dask performance report").
    """

    def __init__(self, pages: Dict[str, str], kind: str) -> None:
        self.pages = dict(pages)
        self.kind = kind

    def __repr__(self) -> str:
        return f"EngineRecordPages({self.kind}: {', '.join(self.pages)})"


@recorded_as_installed
class EngineRecordPagesMaterializer(BaseMaterializer):
    """Saves each page of an `EngineRecordPages` as a file and as an HTML visualization."""

    ASSOCIATED_TYPES: ClassVar[Tuple[Type[Any], ...]] = (EngineRecordPages,)
    ASSOCIATED_ARTIFACT_TYPE: ClassVar[ArtifactType] = ArtifactType.DATA

    def save(self, data: EngineRecordPages) -> None:
        self.artifact_store.makedirs(self.uri)
        for name, html in data.pages.items():
            with self.artifact_store.open(posixpath.join(self.uri, name), "w") as handle:
                handle.write(html)
        with self.artifact_store.open(posixpath.join(self.uri, _KIND_FILE), "w") as handle:
            handle.write("\n".join([data.kind, *data.pages]))

    def load(self, data_type: Type[Any]) -> EngineRecordPages:
        with self.artifact_store.open(posixpath.join(self.uri, _KIND_FILE), "r") as handle:
            kind, *names = handle.read().splitlines()
        pages = {}
        for name in names:
            with self.artifact_store.open(posixpath.join(self.uri, name), "r") as handle:
                pages[name] = handle.read()
        return EngineRecordPages(pages, kind)

    def save_visualizations(self, data: EngineRecordPages) -> Dict[str, VisualizationType]:
        return {posixpath.join(self.uri, name): VisualizationType.HTML for name in data.pages}

    def extract_metadata(self, data: EngineRecordPages) -> Dict[str, Any]:
        return {"kind": data.kind, "pages": ", ".join(data.pages)}
