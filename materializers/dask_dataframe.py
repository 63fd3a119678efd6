"""Dask DataFrames as artifacts in the shared dataset format, written by the Dask workers."""

from __future__ import annotations

from typing import Any, ClassVar, Dict, Tuple, Type

import dask
import dask.dataframe as dd

from zenml_compute_engines.flavors.storage import fsspec_storage_options
from zenml_compute_engines.materializers import dataset
from zenml_compute_engines.flavors.sources import recorded_as_installed


def part_name(index: int) -> str:
    """Zero-padded, so the manifest's sorted file list keeps the partition order."""
    return f"part.{index:05d}.parquet"


@recorded_as_installed
class DaskDataFrameMaterializer(dataset.DatasetMaterializer):
    """Writes `df.to_parquet` from the workers straight to the artifact store, then a manifest.

    Nothing is computed on the pipeline process: with a Dask engine on the stack the
    graph runs on its cluster (with the step's resources/annotations), otherwise on
    Dask's default scheduler. One part file per partition.

    A *named* index (`set_index("id")`, `df.index.name = ...`) is stored as a column and
    restored on load with its divisions; an unnamed one (pandas' default RangeIndex)
    is not stored, so other engines see only the real columns (no `__null_dask_index__`),
    and the loaded frame gets a fresh index per partition.
    """

    ASSOCIATED_TYPES: ClassVar[Tuple[Type[Any], ...]] = (dd.DataFrame,)

    def save(self, data: dd.DataFrame) -> None:
        from zenml_compute_engines.flavors.dask.engine import step_client

        client = step_client(start=False)
        data.to_parquet(
            dataset.data_dir(self.uri),
            storage_options=fsspec_storage_options(self.artifact_store),
            name_function=part_name,
            write_index=data.index.name is not None,
            write_metadata_file=False,  # would gather every footer on this process
            compute_kwargs={"scheduler": client} if client is not None else None,
        )
        dataset.commit(
            self.artifact_store,
            self.uri,
            engine="dask",
            engine_version=dask.__version__,
            written_via="dask workers (pyarrow + fsspec)",
            schema=_arrow_schema(data),
        )

    def extract_metadata(self, data: dd.DataFrame) -> Dict[str, Any]:
        meta = super().extract_metadata(data)
        meta["npartitions"] = data.npartitions
        return meta


def _arrow_schema(data: dd.DataFrame) -> Any:
    import pyarrow as pa

    return pa.Schema.from_pandas(data._meta, preserve_index=data.index.name is not None)
