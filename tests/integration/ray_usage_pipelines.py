"""Ray pipelines whose steps run a known number of tasks, for the usage and timeline tests.

Functions shipped to Ray workers are defined inside the steps (cloudpickle sends them by
value, so an attached cluster's workers need not import this module).
"""

import time
from pathlib import Path
from typing import Any, Dict

import ray
import ray.data
from ray.data import Dataset
from zenml import pipeline, step

from zenml_compute_engines import ray_runtime


def _run_tasks(count: int, name: str) -> int:
    """Run `count` remote tasks of a function called `name`; their sum."""
    ray_runtime()

    def work(i: int) -> int:
        time.sleep(0.05)
        return i

    work.__name__ = work.__qualname__ = name
    return sum(ray.get([ray.remote(work).remote(i) for i in range(count)]))


@step
def three_tasks() -> int:
    return _run_tasks(3, "three_tasks_work")


@step
def five_tasks(previous: int) -> int:
    return _run_tasks(5, "five_tasks_work")


@step
def lazy_dataset(previous: int) -> Dataset:
    """Nothing runs in the step: Ray Data writes the dataset while ZenML saves the output."""
    ray_runtime()

    def doubled(batch: Dict[str, Any]) -> Dict[str, Any]:
        return {"id": batch["id"], "v": batch["id"] * 2}

    return ray.data.range(100, override_num_blocks=4).map_batches(doubled)


@step
def two_tasks_then_fail() -> int:
    _run_tasks(2, "before_failing_work")
    raise ValueError("this step fails on purpose after two tasks")


@step
def waiting_for_sigterm(previous: int, marker: str) -> int:
    """Uses no engine: says it started and waits to be terminated."""
    Path(marker).write_text("started")
    time.sleep(300)
    return previous


@pipeline(enable_cache=False)
def three_then_five() -> None:
    # The dataset step last: Ray Data's own actors may go on working after it.
    lazy_dataset(five_tasks(three_tasks()))


@pipeline(enable_cache=False)
def failing_after_tasks() -> None:
    two_tasks_then_fail()


@pipeline(enable_cache=False)
def three_then_terminated(marker: str) -> None:
    waiting_for_sigterm(three_tasks(), marker=marker)
