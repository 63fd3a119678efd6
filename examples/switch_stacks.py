"""One pipeline, two stacks: embedded engines on a laptop (`dev`), attached clusters in
production (`prod`). The step code is the same; only `zenml stack set` changes.

The pipeline prepares orders with Spark and summarizes them with Dask; the Spark
DataFrame reaches the Dask step as a dataset artifact. Each stack's feature_store is an
engine bundle of a Spark and a Dask component:

    dev:   spark_dev  (local[2], owned)        +  dask_dev  (LocalCluster, owned)
    prod:  spark_prod (spark://127.0.0.1:...)  +  dask_prod (tcp://127.0.0.1:...)

For `prod` this script starts a Spark standalone master + worker and a Dask scheduler +
worker on 127.0.0.1 (stand-ins for your clusters) and stops them at the end. It runs the
pipeline on both stacks, checks that the results are identical and prints where each step
ran. The commands a user types for the two stacks are in docs/stacks.md.

    python examples/switch_stacks.py
"""

import sys
from pathlib import Path
from typing import Annotated, Any, Dict

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a plain script

import dask.dataframe as dd  # noqa: E402
from pyspark.sql import DataFrame  # noqa: E402
from zenml import pipeline, step  # noqa: E402

from zenml_compute_engines import dask_client, spark_session  # noqa: E402

REGIONS = ["north", "south", "east", "west"]


@step
def prepare_orders(n_orders: int = 10_000) -> Annotated[DataFrame, "orders"]:
    spark = spark_session()
    regions = "array(" + ", ".join(f"'{r}'" for r in REGIONS) + ")"
    return spark.range(n_orders).selectExpr(
        "id AS order_id", f"element_at({regions}, CAST(id % 4 AS INT) + 1) AS region", "(id * 37) % 1000 AS amount"
    )


@step
def summarize(orders: dd.DataFrame) -> Annotated[Dict[str, Any], "revenue"]:
    revenue = dask_client().compute(orders.groupby("region").amount.sum()).result()
    return {region: int(total) for region, total in sorted(revenue.items())}


@pipeline(enable_cache=False)
def switch_demo(n_orders: int = 10_000) -> None:
    summarize(prepare_orders(n_orders=n_orders))


def register(components: Dict[str, Any], stack: str) -> None:
    """Register (or update) the engine components, a bundle of them and a stack; activate it."""
    from zenml.client import Client
    from zenml.enums import StackComponentType

    from examples._setup import ensure_repository_and_flavors, upsert_component

    client = Client()
    kind = StackComponentType.FEATURE_STORE
    ensure_repository_and_flavors()
    for name, (flavor, config) in components.items():
        upsert_component(name, flavor, config)
    bundle = f"{stack}_engines"
    upsert_component(bundle, "engines", {"engines": list(components)})
    if stack not in {s.name for s in client.list_stacks(size=1000).items}:
        client.create_stack(
            name=stack,
            components={StackComponentType.ORCHESTRATOR: "default", StackComponentType.ARTIFACT_STORE: "default",
                        kind: bundle},
        )
    client.activate_stack(stack)


def run_on(stack: str) -> Dict[str, Any]:
    from zenml.client import Client

    run = Client().get_pipeline_run(switch_demo().id)
    print(f"\nStack '{stack}':")
    for step_name in ("prepare_orders", "summarize"):
        for kind, facts in run.steps[step_name].run_metadata.get("compute_engine", {}).items():
            print(f"  {step_name:15s} ran on {kind} {facts.get('mode')} at {facts.get('address') or facts.get('master')}")
    return run.steps["summarize"].outputs["revenue"][0].load()


def main() -> None:
    from tests.support.dask_cluster import SchedulerAndWorker
    from tests.support.spark_cluster import StandaloneCluster

    register(
        {
            "spark_dev": ("spark", {"master": "local[2]", "ui_enabled": False}),
            "dask_dev": ("dask", {"n_workers": 1, "threads_per_worker": 2, "memory_limit": "1GiB"}),
        },
        stack="dev",
    )
    dev = run_on("dev")

    print("\nStarting the production stand-ins on 127.0.0.1: a Spark master + worker, a Dask scheduler + worker ...")
    spark_cluster, dask_cluster = StandaloneCluster.start(), SchedulerAndWorker.start()
    try:
        register(
            {
                "spark_prod": ("spark", {"master": spark_cluster.master_url, "ui_enabled": False}),
                "dask_prod": ("dask", {"scheduler_address": dask_cluster.address}),
            },
            stack="prod",
        )
        prod = run_on("prod")
        print(f"  the clusters kept running after the run: {spark_cluster.alive() and dask_cluster.alive()}")
    finally:
        spark_cluster.stop()
        dask_cluster.stop()

    print(f"\nRevenue per region: {dev}")
    print("Identical on both stacks." if dev == prod else f"DIFFERENT on prod: {prod}")
    if dev != prod:
        sys.exit(1)


if __name__ == "__main__":
    main()
