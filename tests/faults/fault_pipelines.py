"""Pipelines the fault suite interrupts: one step starts its engine, runs a small job on
it, says so through a file, then waits to be interrupted.

Run one in a process of its own with `python -m tests.faults.fault_pipelines hold <engine>
<ready file> <seconds to wait>`, `... two_steps <engine> <ready file> <go file>` or
`... worker_loss <engine> <ready file>` or `... secrets <engine> <ready file>` or `... query
bigquery <ready file>`, with ZENML_ACTIVE_STACK_ID naming an engine stack of the
session's ZenML store (inherited through ZENML_CONFIG_PATH).
"""

import os
import sys
import time
from pathlib import Path

import dask.dataframe as dd
import pandas as pd
import pyarrow as pa
import ray.data
from pyspark.sql import DataFrame
from zenml import pipeline, step


def _engine_job(engine: str) -> None:
    """Start the step's engine and run a small job on it."""
    if engine == "spark":
        from zenml_compute_engines import spark_session

        assert spark_session().range(100).count() == 100
    elif engine == "dask":
        from zenml_compute_engines import dask_client

        assert dask_client().submit(sum, [1, 2, 3]).result() == 6
    elif engine == "ray":
        import ray

        from zenml_compute_engines import ray_runtime

        ray_runtime()
        assert ray.get(ray.remote(lambda: 6).remote()) == 6
    elif engine == "bigquery":
        from zenml_compute_engines import bigquery_client

        assert [tuple(row) for row in bigquery_client().query("SELECT 6 AS v").result()] == [(6,)]
    else:
        raise ValueError(f"unknown engine {engine!r}")


@step
def hold(engine: str, ready: str, hold_s: float) -> None:
    _engine_job(engine)
    Path(ready).write_text(str(os.getpid()))
    time.sleep(hold_s)  # interrupted here
    _engine_job(engine)  # the engine still works after the wait


@pipeline(enable_cache=False)
def hold_pipeline(engine: str, ready: str, hold_s: float = 600) -> None:
    hold(engine=engine, ready=ready, hold_s=hold_s)


@step
def hold_in_query(ready: str) -> None:
    """Start a BigQuery job that runs until it is cancelled, say which, and wait for it."""
    from zenml_compute_engines import bigquery_client
    from tests.support.bigquery_proxy import RUNNING_MARKER

    job = bigquery_client().query(f"SELECT 1 /* {RUNNING_MARKER} */")
    Path(ready + ".tmp").write_text(job.job_id)
    os.replace(ready + ".tmp", ready)
    job.result()  # interrupted here


@pipeline(enable_cache=False)
def query_pipeline(ready: str) -> None:
    hold_in_query(ready=ready)


@step
def first_use(engine: str, ready: str) -> None:
    _engine_job(engine)
    Path(ready).write_text(str(os.getpid()))


@step
def second_use(engine: str, go: str) -> None:
    deadline = time.time() + 300
    while not Path(go).exists() and time.time() < deadline:
        time.sleep(0.2)
    _engine_job(engine)


@pipeline(enable_cache=False)
def two_steps_pipeline(engine: str, ready: str, go: str) -> None:
    """The engine is used by a step, then, once the `go` file exists, by the next one."""
    second_use(engine=engine, go=go, after=first_use(engine=engine, ready=ready))


def slow_square(i: int) -> int:
    time.sleep(3)
    return i * i


@step
def survive_worker_loss(engine: str, ready: str) -> int:
    """Four 3-second tasks on one worker slot; the test kills the worker running them."""
    if engine == "dask":
        from zenml_compute_engines import dask_client

        client = dask_client()
        futures = client.map(slow_square, range(4), pure=False)
        Path(ready).write_text("running")
        return int(sum(client.gather(futures)))
    if engine == "ray":
        import ray

        from zenml_compute_engines import ray_runtime

        ray_runtime()
        task = ray.remote(num_cpus=1)(slow_square)
        refs = [task.remote(i) for i in range(4)]
        Path(ready).write_text("running")
        return int(sum(ray.get(refs)))
    from zenml_compute_engines import spark_session

    rdd = spark_session().sparkContext.parallelize(range(4), 4).map(slow_square)
    Path(ready).write_text("running")
    return int(sum(rdd.collect()))


@pipeline(enable_cache=False)
def worker_loss_pipeline(engine: str, ready: str) -> None:
    survive_worker_loss(engine=engine, ready=ready)


@step
def make_spark() -> DataFrame:
    from zenml_compute_engines import spark_session

    return spark_session().range(100).selectExpr("id", "id % 3 AS k")


@step
def make_dask() -> dd.DataFrame:
    from zenml_compute_engines import dask_client

    dask_client()
    return dd.from_pandas(pd.DataFrame({"id": range(100), "k": [i % 3 for i in range(100)]}), npartitions=2)


@step
def make_ray() -> ray.data.Dataset:
    from zenml_compute_engines import ray_runtime

    ray_runtime()
    return ray.data.range(100, override_num_blocks=2)


@step
def use_then_fail(engine: str, rows: int) -> None:
    _engine_job(engine)
    raise RuntimeError(f"deliberate failure after the {engine} engine read {rows} rows")


@step
def count_rows(data: pa.Table) -> int:
    return data.num_rows


@pipeline(enable_cache=False)
def secrets_pipeline(engine: str) -> None:
    """A dataset saved and loaded through the stack's artifact store, then a failing step."""
    make = {"spark": make_spark, "dask": make_dask, "ray": make_ray}[engine]
    use_then_fail(engine=engine, rows=count_rows(make()))


@step(settings={"feature_store": {"cnf": {"spark.sql.shuffle.partitions": 4}}})
def misspelled_settings(engine: str) -> None:
    _engine_job(engine)


@pipeline(enable_cache=False)
def misspelled_settings_pipeline(engine: str) -> None:
    """A step whose engine settings hold a typo (`cnf` for `conf`)."""
    misspelled_settings(engine=engine)


# ---- an interrupted step's work, then the next run (a notebook's cells) -------------------

BEAT_S = 0.2


def beating_task(i: int, beats: str, seconds: float = 1.0) -> int:
    """A task of a long job: writes a heartbeat file in `beats` every 0.2 s while it runs,
    so the test sees from outside whether any task of the job still runs."""
    import threading

    path = Path(beats) / f"beat-{os.getpid()}-{threading.get_ident()}"
    end = time.time() + seconds
    while time.time() < end:
        path.write_text(str(time.time()))
        time.sleep(BEAT_S)
    return i


def _run_job(engine: str, tasks: int, beats: str) -> int:
    """`tasks` one-second tasks on the step's engine (about `tasks` / slots seconds)."""
    if engine == "spark":
        from zenml_compute_engines import spark_session

        return spark_session().sparkContext.parallelize(range(tasks), 2).map(lambda i: beating_task(i, beats)).sum()
    if engine == "dask":
        from zenml_compute_engines import dask_client

        client = dask_client()
        futures = client.map(beating_task, range(tasks), beats=beats, pure=False)
        return sum(client.gather(futures))
    import ray

    from zenml_compute_engines import ray_runtime

    ray_runtime()
    task = ray.remote(num_cpus=1)(beating_task)
    refs = [task.remote(i, beats) for i in range(tasks)]
    return sum(ray.get(refs))


@step
def long_job(engine: str, beats: str) -> int:
    return _run_job(engine, 400, beats)  # interrupted while its tasks run


@pipeline(enable_cache=False)
def long_job_pipeline(engine: str, beats: str) -> None:
    long_job(engine=engine, beats=beats)


@step
def short_job(engine: str, beats: str) -> float:
    began = time.time()
    assert _run_job(engine, 4, beats) == sum(range(4))
    return time.time() - began


@pipeline(enable_cache=False)
def short_job_pipeline(engine: str, beats: str) -> None:
    short_job(engine=engine, beats=beats)


@step
def neighbour_job(engine: str, beats: str, submitted: str) -> int:
    Path(submitted).write_text("submitting")
    return _run_job(engine, 6, beats)


@pipeline(enable_cache=False)
def neighbour_pipeline(engine: str, beats: str, submitted: str) -> None:
    """Another team's pipeline on the same attached cluster: six one-second tasks."""
    neighbour_job(engine=engine, beats=beats, submitted=submitted)


def interrupted_then_again(engine: str, beats: str, report: str) -> None:
    """What a notebook does: a cell runs a long pipeline and is interrupted (SIGINT), the
    next cell runs a short one on the same engine (reuse=process)."""
    try:
        long_job_pipeline(engine=engine, beats=beats)
    except BaseException as e:  # a notebook shows the error and takes the next cell
        Path(report + ".interrupted").write_text(f"{time.time()} {type(e).__name__}")
    run = short_job_pipeline(engine=engine, beats=str(Path(beats) / "next"))
    job_s = run.steps["short_job"].outputs["output"][0].load()
    Path(report).write_text(f"{job_s}")


def main() -> None:
    kind, engine, ready = sys.argv[1:4]
    if kind == "interrupted_then_again":
        interrupted_then_again(engine, beats=ready, report=sys.argv[4])
    elif kind == "neighbour":
        run = neighbour_pipeline(engine=engine, beats=ready, submitted=ready + ".submitted")
        assert run.steps["neighbour_job"].outputs["output"][0].load() == sum(range(6))
    elif kind == "hold":
        hold_pipeline(engine=engine, ready=ready, hold_s=float(sys.argv[4]))
    elif kind == "two_steps":
        two_steps_pipeline(engine=engine, ready=ready, go=sys.argv[4])
    elif kind == "query":
        query_pipeline(ready=ready)
    elif kind == "worker_loss":
        worker_loss_pipeline(engine=engine, ready=ready)
    else:
        secrets_pipeline(engine=engine)


if __name__ == "__main__":
    main()
