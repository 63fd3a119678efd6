"""A pipeline whose output takes seconds to save, for killing it midway (test_datasets.py)."""

from __future__ import annotations

import time
from typing import Annotated

import dask.dataframe as dd
import pandas as pd
from zenml import pipeline, step

from flavors import dask_client


def _slowly(part: pd.DataFrame) -> pd.DataFrame:
    time.sleep(2)  # each partition is computed while the artifact is written
    return part


@step
def slow_frame() -> Annotated[dd.DataFrame, "frame"]:
    dask_client()
    frame = dd.from_pandas(pd.DataFrame({"v": range(12)}), npartitions=6)
    return frame.map_partitions(_slowly, meta=frame._meta)


@pipeline(enable_cache=False)
def slow_save_pipeline() -> None:
    slow_frame()
