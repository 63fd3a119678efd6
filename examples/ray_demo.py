"""The seed's Ray example as a ZenML pipeline: partitions processed by `@ray.remote` tasks.

No `ray.init()` or `ray.shutdown()` here: each step asks `zenml_compute_engines.ray_runtime()` for the
Ray of the active stack. With this script's stack that is an embedded Ray on 127.0.0.1,
initialized once by the first step, shared by the whole run and shut down (raylet, GCS and
workers exit) after the last step's outputs are saved. The `ray.data.Dataset`s passed
between steps are written by Ray's workers as parquet artifacts (materializers/ray_dataset.py).

Run it from the repository after `zenml init`:

    python examples/ray_demo.py

It registers, once, the `ray` flavor and a `ray_local` engine component on a `ray_local`
stack (examples/_setup.py), activates that stack, runs the pipeline and prints the result,
the engine it used and where the artifacts are. On a cluster:
`zenml feature-store register ray_prod --flavor=ray --address=<head>:6379` (or
`ray://<head>:10001`) and a stack with `-f ray_prod`; the steps stay the same.
"""

import sys
from pathlib import Path
from typing import Annotated, Any, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a plain script

import ray  # noqa: E402
import ray.data  # noqa: E402
from ray.data import Dataset  # noqa: E402
from zenml import pipeline, step  # noqa: E402

from zenml_compute_engines import ray_runtime  # noqa: E402

COMPONENT = "ray_local"  # also the name of the demo's stack
ENGINE_CONFIG = {"num_cpus": 1, "object_store_memory": "200MB"}


@ray.remote
def process_partition(index: int, partition: Dict[str, Any]) -> Dict[str, int]:
    """Runs on a Ray worker, one partition (a block of the dataset) per task."""
    values = partition["value"]
    return {"partition": index, "rows": len(values), "total": int(values.sum()), "max": int(values.max())}


@step
def create_readings(n_rows: int = 10_000, partitions: int = 4) -> Annotated[Dataset, "readings"]:
    ray_runtime()

    def with_value(batch: Dict[str, Any]) -> Dict[str, Any]:
        return {"id": batch["id"], "sensor": batch["id"] % 8, "value": (batch["id"] * 37) % 1000}

    # Lazy: Ray's workers compute the blocks while the artifact is written.
    return ray.data.range(n_rows, override_num_blocks=partitions).map_batches(with_value)


@step
def process_partitions(readings: Dataset, partitions: int = 4) -> Annotated[Dataset, "partition_stats"]:
    runtime = ray_runtime()
    # The blocks stay in Ray's object store; each remote task gets one.
    blocks = readings.repartition(partitions).to_numpy_refs()
    stats: List[Dict[str, int]] = ray.get(
        [runtime.options(process_partition).remote(i, block) for i, block in enumerate(blocks)]
    )
    return ray.data.from_items(sorted(stats, key=lambda s: s["partition"]))


@step
def combine(partition_stats: Dataset) -> Annotated[Dict[str, int], "totals"]:
    rows = partition_stats.take_all()  # one small row per partition
    return {
        "partitions": len(rows),
        "rows": sum(r["rows"] for r in rows),
        "total": sum(r["total"] for r in rows),
        "max": max(r["max"] for r in rows),
    }


@pipeline(enable_cache=False)
def ray_demo(n_rows: int = 10_000, partitions: int = 4) -> None:
    combine(process_partitions(create_readings(n_rows=n_rows, partitions=partitions), partitions=partitions))


def main() -> None:
    from zenml.client import Client

    from examples._setup import use_engine_stack

    stack = use_engine_stack("ray", COMPONENT, ENGINE_CONFIG)
    run = Client().get_pipeline_run(ray_demo().id)

    totals = run.steps["combine"].outputs["totals"][0].load()
    print(f"\nStack '{stack}': {totals['rows']} readings in {totals['partitions']} partitions, processed by Ray tasks:")
    print(f"  sum of values = {totals['total']}, max value = {totals['max']}")
    engine = run.steps["create_readings"].run_metadata.get("compute_engine", {})
    resources = engine.get("cluster_resources", {})
    print(
        f"Engine: {engine.get('mode')} Ray {engine.get('ray_version')} at {engine.get('address')}, "
        f"job {engine.get('job_id')}, {engine.get('node_count')} node(s), {resources.get('CPU')} CPU(s); "
        f"initialized {engine.get('engine_starts_in_process')}x for the whole run and shut down after it."
    )
    print("Artifacts:")
    for step_name, output in (
        ("create_readings", "readings"),
        ("process_partitions", "partition_stats"),
        ("combine", "totals"),
    ):
        artifact = run.steps[step_name].outputs[output][0]
        rows = artifact.run_metadata.get("num_rows")
        print(f"  {output:15s} {artifact.uri}" + (f"  ({rows} rows, parquet + _manifest.json)" if rows else ""))


if __name__ == "__main__":
    main()
