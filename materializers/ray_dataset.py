"""Ray Datasets as artifacts in the shared dataset format, written by Ray's workers.

`save` runs `Dataset.write_parquet` straight into the artifact's `data/` directory (each
write task writes its own part file; nothing is collected on the driver), then commits
the manifest from the parquet footers. `load` returns a lazy `ray.data.read_parquet` of
the manifest's files on the step's Ray, so any engine's dataset artifact loads as a
`ray.data.Dataset`.
"""

from __future__ import annotations

import logging
import posixpath
from typing import Any, ClassVar, Dict, Optional, Tuple, Type

import ray
import ray.data
from ray.data import Dataset

from materializers import dataset

logger = logging.getLogger(__name__)

# Part files are named part_<write uuid>_<task>[-<n>].parquet: `dataset.commit` only counts
# names that end in .parquet and do not start with "_" or ".". A Ray class (not one of
# ours), so it unpickles on cluster workers that do not have this package installed.
_FILENAMES = {"dataset_uuid": "part", "file_format": "parquet"}


def _ensure_ray() -> None:
    """Make sure the step's Ray is up: the stack's engine if it has one, else any Ray."""
    from flavors.context import compute_engine
    from flavors.engine import EngineError

    try:
        compute_engine("ray").session()
        return
    except EngineError:
        if ray.is_initialized():
            return
    from flavors.ray.engine import _loopback_node_ip

    logger.info("No Ray engine on the active stack and no Ray initialized: starting a local Ray on 127.0.0.1.")
    with _loopback_node_ip(True):
        ray.init(address="local", include_dashboard=False)


def _client_mode() -> bool:
    try:
        from ray.util.client import ray as client_ray

        return bool(client_ray.is_connected())
    except Exception:
        return False


def _target(artifact_store: Any, path: str) -> Tuple[str, Optional[Any]]:
    """The path and (for object stores) fsspec filesystem Ray's workers write/read with."""
    from flavors.storage import fsspec_storage_options

    if "://" not in path or path.startswith("file://"):
        return path, None
    import fsspec

    protocol = path.split("://", 1)[0]
    return path, fsspec.filesystem(protocol, **fsspec_storage_options(artifact_store))


def _by_value() -> Tuple[Any, Any]:
    """Writer and reader as closures: cloudpickle ships them by value, so a Ray Client
    cluster runs them without importing this package."""

    def write(ds: Any, path: str, filesystem: Any, filenames: Dict[str, str]) -> None:
        from ray.data.datasource.filename_provider import FilenameProvider

        ds.write_parquet(path, filesystem=filesystem, filename_provider=FilenameProvider(**filenames))

    def read(paths: Any, filesystem: Any) -> Any:
        import ray.data

        return ray.data.read_parquet(paths, filesystem=filesystem)

    return write, read


_write, _read = _by_value()


def _on_cluster(function: Any, *args: Any) -> Any:
    """Run a Ray Data call where it can execute: here, or (Ray Client, whose driver cannot
    execute Ray Data) inside a zero-CPU task on the cluster."""
    if not _client_mode():
        return function(*args)
    return ray.get(ray.remote(num_cpus=0)(function).remote(*args))


class RayDatasetMaterializer(dataset.DatasetMaterializer):
    """Writes `ray.data.Dataset`s with `write_parquet` from Ray's workers, then a manifest."""

    ASSOCIATED_TYPES: ClassVar[Tuple[Type[Any], ...]] = (Dataset,)

    def load(self, data_type: Type[Any]) -> Dataset:
        manifest = dataset.read_manifest(self.artifact_store, self.uri)
        _ensure_ray()
        directory = dataset.data_dir(self.uri)
        paths = self.data_files(manifest)
        if not paths:
            return ray.data.from_items([])
        path, filesystem = _target(self.artifact_store, directory)
        return _on_cluster(_read, paths, filesystem)

    def save(self, data: Dataset) -> None:
        _ensure_ray()
        directory = dataset.data_dir(self.uri)
        path, filesystem = _target(self.artifact_store, directory)
        _on_cluster(_write, data, path, filesystem, _FILENAMES)
        if not self.artifact_store.exists(directory):
            # An empty dataset writes no file: keep its schema in an empty part file.
            self.artifact_store.makedirs(directory)
            self._write_empty(data, directory)
        self._manifest = dataset.commit(
            self.artifact_store, self.uri, engine="ray", engine_version=ray.__version__
        )

    def _write_empty(self, data: Dataset, directory: str) -> None:
        import pyarrow.parquet as pq

        try:
            schema = data.schema(fetch_if_missing=False)
        except Exception:
            schema = None
        arrow_schema = getattr(schema, "base_schema", None)
        if arrow_schema is None or not hasattr(arrow_schema, "empty_table"):
            return
        with self.artifact_store.open(posixpath.join(directory, "part-empty.parquet"), "wb") as handle:
            pq.write_table(arrow_schema.empty_table(), handle)
