"""Load a dataset artifact as whatever the step asks for, with the step's own engine.

Any engine's artifact loads as any of: `pyspark.sql.DataFrame`, `dask.dataframe.DataFrame`,
`ray.data.Dataset`, `pyarrow.Table`, `pandas.DataFrame`. Spark, Dask and Ray read the part
files on their workers (the step's process holds the manifest only); Arrow and pandas
materialise the rows in the step's process, which is what those types are.

Engine libraries are imported only when a step asks for that type.
"""

from __future__ import annotations

import posixpath
import sys
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple

from zenml_compute_engines.materializers.dataset import Manifest, data_dir

if TYPE_CHECKING:
    import pyarrow
    from zenml.artifact_stores import BaseArtifactStore

# (kind, module, attribute), most specific first: which annotation asks for which reader.
_TYPES: Tuple[Tuple[str, str, str], ...] = (
    ("spark", "pyspark.sql", "DataFrame"),  # Spark Connect's DataFrame is a subclass
    ("dask", "dask.dataframe", "DataFrame"),
    ("ray", "ray.data", "Dataset"),
    ("arrow", "pyarrow", "Table"),
    ("pandas", "pandas", "DataFrame"),
)
LOADABLE = (
    "pyspark.sql.DataFrame, dask.dataframe.DataFrame, ray.data.Dataset, pyarrow.Table or "
    "pandas.DataFrame"
)


def kind_of(data_type: Any) -> Optional[str]:
    """Which reader serves an annotation, or None. An annotation's module is already
    imported, so nothing is imported here."""
    if not isinstance(data_type, type):
        return None
    for kind, module_name, attribute in _TYPES:
        module = sys.modules.get(module_name)
        if module is not None and issubclass(data_type, getattr(module, attribute)):
            return kind
    return None


def read(store: "BaseArtifactStore", uri: str, manifest: Manifest, data_type: Any) -> Any:
    kind = kind_of(data_type)
    if kind is None:
        raise TypeError(f"A dataset artifact ({uri}) loads as {LOADABLE}, not as {data_type}.")
    return _READERS[kind](store, uri, manifest, data_type)


def paths(uri: str, manifest: Manifest) -> List[str]:
    directory = data_dir(uri)
    return [posixpath.join(directory, data_file.path) for data_file in manifest.files]


# ---- in the step's process ------------------------------------------------------------------


def to_arrow(store: "BaseArtifactStore", uri: str, manifest: Manifest, data_type: Any = None) -> "pyarrow.Table":
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = manifest.arrow()
    tables = []
    for path in paths(uri, manifest):
        with store.open(path, "rb") as handle:
            tables.append(conform(pq.read_table(handle), schema))
    return pa.concat_tables(tables) if tables else schema.empty_table()


def to_pandas(store: "BaseArtifactStore", uri: str, manifest: Manifest, data_type: Any = None) -> Any:
    """pandas' own dtypes where a pandas or Dask writer recorded them; otherwise Arrow-backed
    dtypes, which keep every type as written (an int column with nulls stays int)."""
    import pandas as pd

    table = to_arrow(store, uri, manifest)
    if not manifest.pandas_metadata:
        return table.to_pandas(types_mapper=pd.ArrowDtype)
    try:
        return table.to_pandas()
    except TypeError:  # pandas cannot parse the dtype name it recorded for a nested ArrowDtype
        return table.to_pandas(types_mapper=pd.ArrowDtype, ignore_metadata=True)


def conform(table: "pyarrow.Table", schema: "pyarrow.Schema") -> "pyarrow.Table":
    """`table` with the manifest's engine-neutral types (a writer's large_string -> string)."""
    table = table.select(schema.names)
    return table if table.schema.equals(schema) else table.cast(schema)


# ---- on the engines' workers ----------------------------------------------------------------


def to_spark(store: "BaseArtifactStore", uri: str, manifest: Manifest, data_type: Any = None) -> Any:
    from zenml_compute_engines.materializers import spark_io

    return spark_io.read(store, uri, manifest)


def to_dask(store: "BaseArtifactStore", uri: str, manifest: Manifest, data_type: Any = None) -> Any:
    import dask.dataframe as dd

    from zenml_compute_engines.flavors.dask.engine import step_client
    from zenml_compute_engines.flavors.storage import fsspec_storage_options

    # Inside a step, start the engine now so the step computes on it (inputs load within
    # the step, before its end-of-step teardown is scheduled).
    step_client(start=True)
    files = paths(uri, manifest)
    if not files:
        return dd.from_pandas(manifest.arrow().empty_table().to_pandas(), npartitions=1)
    options = fsspec_storage_options(store)
    if not manifest.pandas_metadata:
        # Not written from pandas or Dask: Arrow-backed dtypes keep every type as written.
        return dd.read_parquet(files, storage_options=options, dtype_backend="pyarrow")
    try:
        return dd.read_parquet(files, storage_options=options, calculate_divisions=True)
    except TypeError:
        # pandas cannot parse the dtype name it recorded for a nested ArrowDtype column:
        # read with Arrow-backed dtypes, as it was written.
        return dd.read_parquet(files, storage_options=options, dtype_backend="pyarrow")
    except Exception:  # e.g. an index without statistics: divisions stay unknown
        return dd.read_parquet(files, storage_options=options)


def to_ray(store: "BaseArtifactStore", uri: str, manifest: Manifest, data_type: Any = None) -> Any:
    from zenml_compute_engines.materializers import ray_dataset

    dataset = ray_dataset.read(store, uri, manifest)
    if data_type is not None and not isinstance(dataset, data_type):
        return dataset.materialize()  # a MaterializedDataset was asked for
    return dataset


_READERS: Dict[str, Callable[..., Any]] = {
    "spark": to_spark,
    "dask": to_dask,
    "ray": to_ray,
    "arrow": to_arrow,
    "pandas": to_pandas,
}
