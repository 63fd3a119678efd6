"""Ray Datasets as artifacts in the shared dataset format, written by Ray's workers.

`save` runs `Dataset.write_parquet` straight into the artifact's `data/` directory (each
write task writes its own part file; nothing is collected on the driver), then commits
the manifest from the parquet footers. `read` (what a step annotated `ray.data.Dataset`
gets, whoever wrote the artifact) is a lazy `ray.data.read_parquet` of the manifest's
files on the step's Ray. On an object store both go through the artifact store's fsspec
filesystem, credentials and endpoint included.
"""

from __future__ import annotations

import logging
import posixpath
from typing import Any, ClassVar, Dict, Optional, Tuple, Type

import ray
import ray.data
from ray.data import Dataset

from zenml_compute_engines.materializers import dataset
from zenml_compute_engines.flavors.sources import recorded_as_installed

logger = logging.getLogger(__name__)

# Part files are named part_<write uuid>_<task>[-<n>].parquet: `dataset.commit` only counts
# names that end in .parquet and do not start with "_" or ".". A Ray class (not one of
# ours), so it unpickles on cluster workers that do not have this package installed.
_FILENAMES = {"dataset_uuid": "part", "file_format": "parquet"}


def _ensure_ray() -> None:
    """Make sure the step's Ray is up: the stack's engine if it has one, else any Ray."""
    from zenml_compute_engines.flavors.context import compute_engine
    from zenml_compute_engines.flavors.engine import EngineError

    try:
        compute_engine("ray").session()
        return
    except EngineError:
        if ray.is_initialized():
            return
    from zenml_compute_engines.flavors.ray.engine import _loopback_node_ip

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
    """The path and (for object stores) the pyarrow filesystem Ray's workers use, built
    from the artifact store's credentials and endpoint; the path is then scheme-less."""
    from zenml_compute_engines.flavors.storage import pyarrow_filesystem

    filesystem, scheme = pyarrow_filesystem(artifact_store)
    if filesystem is None or not path.startswith(f"{scheme}://"):
        return path, None
    return path.split("://", 1)[1], filesystem


def _by_value() -> Tuple[Any, Any]:
    """Writer and reader as closures: cloudpickle ships them by value, so a Ray Client
    cluster runs them without importing this package."""

    def write(ds: Any, path: str, filesystem: Any, filenames: Dict[str, str]) -> None:
        from ray.data.datasource import filename_provider as names

        # Older Ray (2.40) takes these arguments in a private subclass of FilenameProvider.
        provider = getattr(names, "_DefaultFilenameProvider", names.FilenameProvider)
        # Object stores have no directories: no write task needs to create a marker.
        ds.write_parquet(
            path,
            filesystem=filesystem,
            filename_provider=provider(**filenames),
            try_create_dir=filesystem is None,
        )

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


def read(store: Any, uri: str, manifest: dataset.Manifest) -> Dataset:
    """The dataset at `uri` as a lazy Ray Dataset, read by Ray's workers."""
    _ensure_ray()
    files = [posixpath.join(dataset.data_dir(uri), f.path) for f in manifest.files]
    if not files:
        return ray.data.from_arrow(manifest.arrow().empty_table())
    targets = [_target(store, path) for path in files]
    return _on_cluster(_read, [path for path, _ in targets], targets[0][1])


@recorded_as_installed
class RayDatasetMaterializer(dataset.DatasetMaterializer):
    """Writes `ray.data.Dataset`s with `write_parquet` from Ray's workers, then a manifest."""

    ASSOCIATED_TYPES: ClassVar[Tuple[Type[Any], ...]] = (Dataset,)

    def save(self, data: Dataset) -> None:
        _ensure_ray()
        directory = dataset.data_dir(self.uri)
        path, filesystem = _target(self.artifact_store, directory)
        _on_cluster(_write, data, path, filesystem, _FILENAMES)
        schema = _arrow_schema(data)
        via = f"ray tasks (pyarrow{', ' + type(filesystem).__name__ if filesystem is not None else ''})"
        dataset.commit(
            self.artifact_store, self.uri, engine="ray", engine_version=ray.__version__, written_via=via, schema=schema
        )


def _arrow_schema(data: Dataset) -> Optional[Any]:
    """The Dataset's Arrow schema if Ray knows it without executing anything."""
    import pyarrow as pa

    try:
        schema = data.schema(fetch_if_missing=False)
    except Exception:
        return None
    base = getattr(schema, "base_schema", None)
    return base if isinstance(base, pa.Schema) else None
