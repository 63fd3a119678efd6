"""Dask DataFrames as artifacts in the shared dataset format, written by the Dask workers."""

from __future__ import annotations

from typing import Any, ClassVar, Dict, Optional, Tuple, Type

import dask
import dask.dataframe as dd

from flavors.storage import fsspec_storage_options
from materializers import dataset


def part_name(index: int) -> str:
    """Zero-padded, so the manifest's sorted file list keeps the partition order."""
    return f"part.{index:05d}.parquet"


def _client(start: bool) -> Optional[Any]:
    from flavors.dask.engine import step_client

    return step_client(start=start)


class DaskDataFrameMaterializer(dataset.DatasetMaterializer):
    """Writes `df.to_parquet` from the workers straight to the artifact store, then a manifest.

    Nothing is computed on the pipeline process: with a Dask engine on the stack the
    graph runs on its cluster (with the step's resources/annotations), otherwise on
    Dask's default scheduler. One part file per partition.

    A *named* index (`set_index("id")`, `df.index.name = ...`) is stored as a column and
    restored on load with its divisions; an unnamed one (pandas' default RangeIndex)
    is not stored, so other engines see only the real columns (no `__null_dask_index__`),
    and the loaded frame gets a fresh index per partition.

    Loading is lazy (`dd.read_parquet` of the manifest's files, one partition per file),
    so artifacts written by any engine of the shared format load as Dask DataFrames.
    """

    ASSOCIATED_TYPES: ClassVar[Tuple[Type[Any], ...]] = (dd.DataFrame,)

    def load(self, data_type: Type[Any]) -> dd.DataFrame:
        manifest = dataset.read_manifest(self.artifact_store, self.uri)
        # Inside a step, start the engine now so the step computes on it (inputs load
        # within the step, before its end-of-step teardown is scheduled).
        _client(start=True)
        paths = self.data_files(manifest)
        if not paths:
            import pandas as pd

            empty = pd.DataFrame({c["name"]: pd.Series(dtype=object) for c in manifest.schema})
            return dd.from_pandas(empty, npartitions=1)
        options = fsspec_storage_options(self.artifact_store)
        try:
            return dd.read_parquet(paths, storage_options=options, calculate_divisions=True)
        except Exception:  # e.g. an index without statistics: divisions stay unknown
            return dd.read_parquet(paths, storage_options=options)

    def save(self, data: dd.DataFrame) -> None:
        client = _client(start=False)
        data.to_parquet(
            dataset.data_dir(self.uri),
            storage_options=fsspec_storage_options(self.artifact_store),
            name_function=part_name,
            write_index=data.index.name is not None,
            write_metadata_file=False,  # would gather every footer on this process
            compute_kwargs={"scheduler": client} if client is not None else None,
        )
        self._manifest = dataset.commit(
            self.artifact_store, self.uri, engine="dask", engine_version=dask.__version__
        )

    def extract_metadata(self, data: dd.DataFrame) -> Dict[str, Any]:
        meta = super().extract_metadata(data)
        meta["npartitions"] = data.npartitions
        return meta
