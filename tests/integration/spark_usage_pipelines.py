"""Pipelines of the Spark usage tests: steps running a known number of Spark tasks.

Each step's own job runs through an RDD of a known number of partitions: one job, one
stage, one task per partition. A returned DataFrame is written by the output
materializer on the step's thread, which counts for the step too.
"""

import os
import time

from pyspark.sql import DataFrame
from zenml import pipeline, step

from zenml_compute_engines import spark_session


def _one_job(partitions: int) -> int:
    """One Spark job of `partitions` tasks."""
    return spark_session().sparkContext.parallelize(range(10 * partitions), partitions).count()


@step
def three_tasks_and_a_frame() -> DataFrame:
    _one_job(3)
    return spark_session().range(0, 30, 1, 3)  # saved by the materializer: 3 partitions


@step
def five_tasks_and_a_frame() -> DataFrame:
    _one_job(5)
    return spark_session().range(0, 50, 1, 5)


@step
def three_tasks() -> int:
    return _one_job(3)


@step
def three_tasks_then_fail() -> int:
    _one_job(3)
    raise RuntimeError("this step fails on purpose after its Spark job")


@step
def tasks_held_until(partitions: int, started: str, release: str) -> int:
    """A job of `partitions` tasks whose first one waits (up to 180 s) for the file
    `release`; the file `started` says the job is about to start."""

    def hold(index, rows):
        if index == 0:
            deadline = time.time() + 180
            while not os.path.exists(release) and time.time() < deadline:
                time.sleep(0.2)
        yield sum(1 for _ in rows)

    context = spark_session().sparkContext
    with open(started, "w") as handle:
        handle.write("started")
    return sum(context.parallelize(range(10 * partitions), partitions).mapPartitionsWithIndex(hold).collect())


@pipeline(enable_cache=False)
def two_steps_pipeline() -> None:
    three_tasks_and_a_frame()
    five_tasks_and_a_frame(after="three_tasks_and_a_frame")


@pipeline(enable_cache=False)
def three_tasks_pipeline() -> None:
    three_tasks()


@pipeline(enable_cache=False)
def failing_after_a_job_pipeline() -> None:
    three_tasks_then_fail()


@pipeline(enable_cache=False)
def held_tasks_pipeline(partitions: int, started: str, release: str) -> None:
    tasks_held_until(partitions=partitions, started=started, release=release)
