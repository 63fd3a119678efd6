"""Pipelines of the Dask usage tests (tests/integration/test_dask_usage.py).

The task functions are defined inside the steps: pickled by value, so that a worker need
not import this module (and ZenML with it), and named distinctively, since Dask names a
task (its key prefix) after its function.
"""

import time
from typing import Annotated, List

from zenml import pipeline, step

from zenml_compute_engines import dask_client


@step
def map_items(first: int, count: int, pause_s: float = 0.0) -> Annotated[List[int], "squares"]:
    """`count` tasks of one function (keys unique to the items, which do not overlap across
    the steps of a test)."""

    def usage_square(x: int) -> int:
        time.sleep(pause_s)
        return x * x

    client = dask_client()
    return client.gather(client.map(usage_square, range(first, first + count)))


@step
def shuffle_frame(n: int) -> int:
    """A DataFrame shuffle (P2P, Dask's default on a distributed scheduler)."""
    import dask.dataframe as dd
    import pandas as pd

    dask_client()
    frame = dd.from_pandas(pd.DataFrame({"k": [i % 7 for i in range(n)], "x": range(n)}), npartitions=4)
    return int(frame.shuffle("k").x.sum().compute())


@step
def map_then_fail(count: int) -> int:
    """`count` tasks that succeed, then one that raises, which fails the step."""

    def usage_ok(x: int) -> int:
        return x

    def usage_raises(x: int) -> int:
        raise ValueError(f"task {x} fails on purpose")

    client = dask_client()
    client.gather(client.map(usage_ok, range(1000, 1000 + count)))
    return client.submit(usage_raises, 1).result()


@step
def report_marker(count: int) -> int:
    def usage_report_marker(x: int) -> int:
        return x + 1

    client = dask_client()
    return sum(client.gather(client.map(usage_report_marker, range(2000, 2000 + count))))


@pipeline(enable_cache=False)
def two_counted_steps() -> None:
    map_items(first=0, count=3, id="three")
    map_items(first=100, count=5, id="five", after="three")
    shuffle_frame(n=200, after="five")


@pipeline(enable_cache=False)
def slow_counted_step(count: int = 6, pause_s: float = 0.3) -> None:
    map_items(first=300, count=count, pause_s=pause_s, id="ours")


@pipeline(enable_cache=False)
def failing_counted_step() -> None:
    map_then_fail(count=4)


@pipeline(enable_cache=False)
def reported_step() -> None:
    report_marker(count=4)
