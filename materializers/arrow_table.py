"""Arrow tables (and, on request, pandas DataFrames) in the shared dataset format.

These live in the step's process already, so the step's process writes them: one part
file per `PART_ROWS` rows, then the manifest. The artifact is then like any engine's: a
Spark, Dask or Ray step reads it on its workers.

`ArrowTableMaterializer` is the default for `pyarrow.Table` outputs (ZenML has none).
`PandasDatasetMaterializer` is opt-in, so that importing this package never changes how
ZenML stores your other pandas outputs:
`@step(output_materializers=PandasDatasetMaterializer)`.
"""

from __future__ import annotations

import posixpath
from typing import Any, ClassVar, Tuple, Type

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from zenml_compute_engines.materializers import dataset
from zenml_compute_engines.flavors.sources import recorded_as_installed

PART_ROWS = 1_000_000


def write_table(store: Any, uri: str, table: pa.Table, engine: str, version: str) -> None:
    directory = dataset.data_dir(uri)
    store.makedirs(directory)
    starts = range(0, table.num_rows, PART_ROWS) if table.num_rows else [0]
    for index, start in enumerate(starts):
        with store.open(posixpath.join(directory, f"part-{index:05d}.parquet"), "wb") as handle:
            pq.write_table(table.slice(start, PART_ROWS), handle)
    dataset.commit(store, uri, engine=engine, engine_version=version, written_via="this process (pyarrow)")


@recorded_as_installed
class ArrowTableMaterializer(dataset.DatasetMaterializer):
    """`pyarrow.Table` outputs as dataset artifacts."""

    ASSOCIATED_TYPES: ClassVar[Tuple[Type[Any], ...]] = (pa.Table,)

    def save(self, data: pa.Table) -> None:
        write_table(self.artifact_store, self.uri, data, engine="pyarrow", version=pa.__version__)


@recorded_as_installed
class PandasDatasetMaterializer(dataset.DatasetMaterializer):
    """`pandas.DataFrame` outputs as dataset artifacts (opt-in, see the module's docstring).
    The index is not stored unless it is named."""

    SKIP_REGISTRATION = True
    ASSOCIATED_TYPES: ClassVar[Tuple[Type[Any], ...]] = (pd.DataFrame,)

    def save(self, data: pd.DataFrame) -> None:
        table = pa.Table.from_pandas(data, preserve_index=data.index.name is not None)
        write_table(self.artifact_store, self.uri, table, engine="pandas", version=pd.__version__)
