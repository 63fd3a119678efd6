"""A file an engine wrote about one step (Spark's event log, Ray's timeline), kept as an artifact.

The file is copied as is into the artifact's folder, under its own name, so the engine's
own viewer opens it from there: Spark's History Server reads the folder as its log
directory, Perfetto or chrome://tracing open Ray's trace file.
"""

from __future__ import annotations

import os
import posixpath
from typing import Any, ClassVar, Dict, Tuple, Type

from zenml.enums import ArtifactType
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
