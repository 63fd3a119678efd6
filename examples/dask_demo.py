"""The seed's Dask example as a ZenML pipeline: create a Dask DataFrame -> map_partitions -> pandas.

No `Client()` or `LocalCluster` here: each step asks `zenml_compute_engines.dask_client()` for the
engine of the active stack. With this script's stack that is an embedded LocalCluster
(2 worker processes on 127.0.0.1), started by the first step, shared by the whole run
and stopped after the last step's outputs are saved. The Dask DataFrames passed between
steps are written by the workers as parquet artifacts (see materializers/dask_dataframe.py).

Run it from the repository after `zenml init`:

    python examples/dask_demo.py

It registers, once, the `dask` flavor and a `dask_local` engine component on a
`dask_local` stack (examples/_setup.py), activates that stack, runs the pipeline and
prints the result, the engine it used and where the artifacts are. On a cluster:
`zenml feature-store register dask_prod --flavor=dask --scheduler_address=tcp://host:8786`
and a stack with `-f dask_prod`; the steps stay the same.
"""

import sys
from pathlib import Path
from typing import Annotated

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a plain script

import dask.dataframe as dd  # noqa: E402
import pandas as pd  # noqa: E402
from zenml import pipeline, step  # noqa: E402

from zenml_compute_engines import dask_client  # noqa: E402

COMPONENT = "dask_local"  # also the name of the demo's stack
# keep_step_record: Dask's performance report of each step, kept as an artifact of the run
# (off by default: it adds a few hundred ms per step; docs/usage.md).
ENGINE_CONFIG = {"n_workers": 2, "threads_per_worker": 1, "memory_limit": "1GiB", "keep_step_record": True}


def add_features(part: pd.DataFrame) -> pd.DataFrame:
    """Runs on the workers, one partition at a time."""
    return part.assign(amount_eur=part.amount * 0.92, large=part.amount >= 500)


@step
def create_orders(n_rows: int = 20_000, npartitions: int = 4) -> Annotated[dd.DataFrame, "orders"]:
    dask_client()  # the engine runs the graph below when the artifact is written
    orders = pd.DataFrame(
        {
            "order_id": range(n_rows),
            "customer": [i % 250 for i in range(n_rows)],
            "amount": [(i * 37) % 1000 for i in range(n_rows)],
        }
    )
    return dd.from_pandas(orders, npartitions=npartitions)


@step
def enrich(orders: dd.DataFrame) -> Annotated[dd.DataFrame, "enriched"]:
    return orders.map_partitions(add_features)


@step
def summarize(enriched: dd.DataFrame) -> Annotated[pd.DataFrame, "summary"]:
    client = dask_client()
    by_size = enriched.groupby("large").agg(
        orders=("order_id", "count"), total_eur=("amount_eur", "sum"), mean_eur=("amount_eur", "mean")
    )
    return client.compute(by_size).result().sort_index()  # the only pandas result


@pipeline(enable_cache=False)
def dask_demo(n_rows: int = 20_000) -> None:
    summarize(enrich(create_orders(n_rows=n_rows)))


def engine_facts(run, step_name: str) -> dict:
    """What the step recorded of its engine (its usage too)."""
    return run.steps[step_name].run_metadata.get("compute_engine", {})


def main() -> None:
    from zenml.client import Client

    from examples._setup import use_engine_stack

    stack = use_engine_stack("dask", COMPONENT, ENGINE_CONFIG)
    run = Client().get_pipeline_run(dask_demo().id)

    summary = run.steps["summarize"].outputs["summary"][0].load()
    print(f"\nStack '{stack}': orders by size, computed on the Dask workers:")
    print(summary.to_string())
    engine = engine_facts(run, "create_orders")
    print(
        f"Engine: {engine.get('mode')} Dask {engine.get('dask_version')} at {engine.get('address')}, "
        f"{engine.get('n_workers')} worker(s) x {engine.get('threads_per_worker')} thread(s), "
        f"{engine.get('memory_limit_per_worker')} each; started {engine.get('engine_starts_in_process')}x "
        "for the whole run and stopped after it."
    )
    usage = engine_facts(run, "enrich").get("usage", {})
    print(
        f"The enrich step ran {usage.get('tasks')} Dask tasks, {usage.get('busy_s')} s of task time "
        f"(compute_engine.usage); Dask's report of it: {engine_facts(run, 'enrich').get('record', {}).get('uri')}"
    )
    print("Artifacts:")
    for step_name, output in (("create_orders", "orders"), ("enrich", "enriched"), ("summarize", "summary")):
        artifact = run.steps[step_name].outputs[output][0]
        rows = artifact.run_metadata.get("num_rows")
        print(f"  {output:9s} {artifact.uri}" + (f"  ({rows} rows, parquet + _manifest.json)" if rows else ""))


if __name__ == "__main__":
    main()
