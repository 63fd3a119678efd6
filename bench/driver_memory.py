"""How much memory the pipeline process holds as the data grows, through Spark -> Dask -> Ray.

A three-step pipeline (bench/pipelines_memory.py) on a stack whose feature_store is an
engine bundle of an owned Spark (`local[2]`), Dask (a LocalCluster of 2 worker processes)
and Ray (2 CPUs): Spark writes the dataset artifact, Dask and Ray each read it on their
workers and reduce it. Each size runs in a fresh process with an isolated ZenML store;
the figure is the growth of that process's peak RSS (the engines' JVM and worker
processes are not it) from `--small` to `--large` rows.

    RESULT driver_rss_growth_mb value=<MB>     (target <= 100)

    .venv/bin/python bench/driver_memory.py [--small 1000000] [--large 20000000]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import RAY_CHILD_ENV, BenchError, emit, isolated_env, result, run_bench, run_child  # noqa: E402

ENGINES = {
    "spark": {"master": "local[2]", "ui_enabled": False},
    "dask": {"n_workers": 2, "threads_per_worker": 1, "memory_limit": "3GiB", "dashboard": False},
    "ray": {"num_cpus": 2, "object_store_memory": "1GB"},
}


def child(rows: int) -> None:
    import resource

    from zenml.client import Client
    from zenml.enums import StackComponentType

    from zenml_compute_engines.flavors.registration import register_flavors

    client = Client()
    kind = StackComponentType.FEATURE_STORE
    register_flavors()
    for flavor, config in ENGINES.items():
        client.create_stack_component(name=flavor, flavor=flavor, component_type=kind, configuration=config)
    client.create_stack_component(name="all", flavor="engines", component_type=kind,
                                  configuration={"engines": list(ENGINES)})
    client.create_stack(name="all", components={StackComponentType.ORCHESTRATOR: "default",
                                                StackComponentType.ARTIFACT_STORE: "default", kind: "all"})
    client.activate_stack("all")

    from bench.pipelines_memory import memory_pipeline

    run = client.get_pipeline_run(memory_pipeline(rows=rows).id)
    counts = [run.steps[s].outputs["rows"][0].load() for s in ("dask_rows", "ray_rows")]
    if counts != [rows, rows]:
        raise BenchError(f"the pipeline counted {counts} rows, expected {rows}")
    emit({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})


def run(scratch: Path, args: Any) -> None:
    peaks = {}
    for index, rows in enumerate((args.small, args.large)):
        # Short paths: Ray's session sockets live below TMPDIR (AF_UNIX allows 107 bytes).
        env = {**isolated_env(scratch / str(index)), **RAY_CHILD_ENV}
        payload = run_child([str(Path(__file__).resolve()), "--child", str(rows)], env, scratch / f"rows-{rows}.log", 1800)
        peaks[rows] = payload["peak_rss_mb"]
        print(f"  {rows:>12,} rows: peak RSS of the pipeline process {peaks[rows]:.0f} MB", flush=True)
    result("driver_rss_growth_mb", value=peaks[args.large] - peaks[args.small])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=1_000_000)
    parser.add_argument("--large", type=int, default=20_000_000)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return 0
    return run_bench("bench-mem-", lambda scratch: run(scratch, args), isolated=False)


if __name__ == "__main__":
    sys.exit(main())
