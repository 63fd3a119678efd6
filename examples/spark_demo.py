"""Demo: a Spark pipeline on the embedded local engine, with no session code in the steps.

Run from the repository root:  python examples/spark_demo.py
It registers the `spark` flavor, a `spark_local` component and a `spark_local` stack once
(idempotently), runs the pipeline, and prints the result and where the artifacts are.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a plain script

from pyspark.sql import DataFrame  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402
from zenml import pipeline, step  # noqa: E402

from zenml_compute_engines import spark_session  # noqa: E402


@step
def generate_orders(n: int) -> DataFrame:
    """Synthetic orders; the DataFrame is written to the artifact store by the executors."""
    spark = spark_session()  # before building columns: they need a running SparkContext
    regions = F.element_at(F.array(*[F.lit(r) for r in ("emea", "amer", "apac")]), (F.col("id") % 3 + 1).cast("int"))
    return (
        spark.range(n)
        .withColumn("region", regions)
        .withColumn("amount", (F.col("id") * 7919 % 1000) / 10.0)
    )


@step
def revenue_by_region(orders: DataFrame) -> DataFrame:
    """Returned lazily: Spark computes it while ZenML saves the artifact."""
    return orders.groupBy("region").agg(F.count("*").alias("orders"), F.round(F.sum("amount"), 2).alias("revenue"))


@step
def report(revenue: DataFrame) -> dict:
    return {row["region"]: (row["orders"], row["revenue"]) for row in revenue.collect()}


@pipeline(enable_cache=False)
def sales_pipeline(n: int = 100_000) -> None:
    report(revenue_by_region(generate_orders(n)))


def main() -> None:
    from examples._setup import use_engine_stack

    stack = use_engine_stack("spark", "spark_local", {"master": "local[2]"})
    run = sales_pipeline()
    result = run.steps["report"].outputs["output"][0].load()
    print(f"\nStack '{stack}': revenue by region (orders, revenue):")
    for region, (orders, revenue) in sorted(result.items()):
        print(f"  {region:5s} {orders:>8,d} {revenue:>14,.2f}")
    print("Artifacts:")
    for name in ("generate_orders", "revenue_by_region"):
        artifact = run.steps[name].outputs["output"][0]
        print(f"  {name}: {artifact.uri}  ({artifact.run_metadata.get('num_rows')} rows, parquet + _manifest.json)")


if __name__ == "__main__":
    main()
