"""Dask pipelines the integration tests run (under the source root, so ZenML can load their steps)."""

import json
import os
import time
from typing import Annotated, Any, Dict

import dask.dataframe as dd
import pandas as pd
from zenml import pipeline, step
from zenml.enums import ExecutionMode

from zenml_compute_engines import DaskEngineSettings, dask_client
from tests.support import dask_cluster as probes


def numbers(n: int) -> pd.DataFrame:
    return pd.DataFrame({"id": range(n), "k": [i % 3 for i in range(n)], "x": [i * 0.5 for i in range(n)]})


@step
def make_frame(n: int) -> Annotated[dd.DataFrame, "frame"]:
    dask_client()
    # Lazy: the pid column is computed by the workers while the output is written.
    return dd.from_pandas(numbers(n), npartitions=4).map_partitions(probes.tag_pid)


@step
def summarize(df: dd.DataFrame) -> Annotated[Dict[str, Any], "summary"]:
    client = dask_client()
    sums = client.compute(df.groupby("k").x.sum()).result()
    return {
        "sums": {str(k): float(v) for k, v in sums.items()},  # str: JSON keys (ZenML 0.90 stores dicts as JSON)
        "rows": int(df.shape[0].compute()),  # default scheduler: the step's client
        "writer_pids": sorted(int(p) for p in df.pid.unique().compute()),
        "task_pid": client.submit(probes.worker_pid, pure=False).result(),
        "npartitions": df.npartitions,
        "client_id": client.id,
        "scheduler": client.scheduler.address,
        "driver_pid": os.getpid(),
        "listening_ips": probes.listening_ips(),
    }


@step
def client_facts() -> Annotated[Dict[str, Any], "facts"]:
    client = dask_client()
    same = client is dask_client()
    return {"client_id": client.id, "same_client_twice": same, "scheduler": client.scheduler.address}


@step
def fail_with_dask(df: dd.DataFrame) -> int:
    dask_client().compute(df.id.sum()).result()
    raise ValueError("this step fails on purpose")


@step
def fail_without_dask() -> int:
    raise ValueError("this step fails on purpose, before any step asks for Dask")


@step
def count_rows(df: dd.DataFrame, offset: int) -> int:
    return int(df.shape[0].compute()) + offset


@step
def sleep_with_dask(marker: str) -> int:
    client = dask_client()
    workers = list(client.run(probes.worker_pid).values())
    with open(marker + ".tmp", "w") as handle:
        json.dump({"driver": os.getpid(), "workers": workers}, handle)
    os.replace(marker + ".tmp", marker)
    time.sleep(120)
    return 0


@step(
    settings={
        "feature_store": DaskEngineSettings(resources={"slot": 1}, annotations={"priority": 7, "retries": 2})
    }
)
def probe_with_settings() -> Annotated[Dict[str, Any], "with_settings"]:
    client = dask_client()
    future = client.submit(probes.resource_probe, pure=False)
    frame = dd.from_pandas(pd.DataFrame({"a": range(4)}), npartitions=2)
    in_frame = frame.map_partitions(
        lambda part: part.assign(held=probes.resource_probe()["held"].get("slot", 0)),
        meta={"a": "int64", "held": "float64"},
    )
    return {
        "submit": future.result(),
        "compute_held": sorted(set(in_frame.held.compute())),
        "retries_on_scheduler": client.run_on_scheduler(
            lambda dask_scheduler, key=future.key: dask_scheduler.tasks[key].retries
        ),
    }


@step
def probe_without_settings() -> Annotated[Dict[str, Any], "without_settings"]:
    return {"submit": dask_client().submit(probes.resource_probe, pure=False).result()}


@step(settings={"feature_store": DaskEngineSettings(resources={"gpu": 1})})
def wants_missing_resource() -> int:
    dask_client()
    return 0


@pipeline(enable_cache=False)
def frame_pipeline(n: int = 100) -> None:
    summarize(make_frame(n))


@pipeline(enable_cache=False)
def two_client_steps() -> None:
    client_facts(id="first")
    client_facts(id="second", after="first")


@pipeline(enable_cache=False)
def client_step_chain(steps: int = 5) -> None:
    """`steps` steps in a row, each asking for the client: all but the first reuse the engine."""
    previous = None
    for i in range(steps):
        name = f"step_{i}"
        client_facts(id=name, after=previous)
        previous = name


@pipeline(enable_cache=False)
def failing_dask_pipeline() -> None:
    fail_with_dask(make_frame(10))


@pipeline(enable_cache=False, execution_mode=ExecutionMode.CONTINUE_ON_FAILURE)
def blocked_consumer_pipeline(n: int = 10) -> None:
    """The failure comes first; `count_rows`, which consumes the Dask step's output, is then skipped."""
    offset = fail_without_dask()
    count_rows(make_frame(n), offset)


@pipeline(enable_cache=False)
def sleeping_dask_pipeline(marker: str) -> None:
    sleep_with_dask(marker)


@pipeline(enable_cache=False)
def settings_dask_pipeline() -> None:
    probe_with_settings()
    probe_without_settings(after="probe_with_settings")


@pipeline(enable_cache=False)
def missing_resource_pipeline() -> None:
    wants_missing_resource()

