"""Spark -> Dask through our dataset artifact vs the usual `toPandas()` -> `dd.from_pandas`.

In one process (a `local[2]` SparkSession, Dask's threaded scheduler with 2 threads, an
isolated ZenML store whose local artifact store holds the artifacts), the same
lazy DataFrame (`id`, `k`, `x` = rand()) of `--rows` rows reaches Dask and is reduced
(`x.sum()` by `k`, computed), by

  ours         SparkDataFrameMaterializer.save() (the executors write parquet) and a
               fresh materializer's load(dask.dataframe.DataFrame)
  topandas     dd.from_pandas(df.toPandas()) with Spark's defaults (Arrow transfer off),
               what the Spark docs' first example does
  arrow        the same with spark.sql.execution.arrow.pyspark.enabled=true (informational)

Interleaved, rotated each repeat, medians.

    RESULT handoff ratio=<ours / topandas>            (target <= 0.5)

    .venv/bin/python bench/dataset_handoff.py [--rows 10000000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import (  # noqa: E402
    BenchError,
    print_medians,
    result,
    rotated,
    run_bench,
    spark_base_conf,
    stop_spark_completely,
    wait_no_java,
)

VARIANTS = ("ours", "topandas", "arrow")


def frame(spark: Any, rows: int) -> Any:
    return spark.range(0, rows, numPartitions=8).selectExpr("id", "id % 100 AS k", "rand(42) AS x")


def measure(spark: Any, store: Any, variant: str, rows: int) -> float:
    import dask
    import dask.dataframe as dd

    from zenml_compute_engines.materializers.spark_dataframe import SparkDataFrameMaterializer

    df = frame(spark, rows)
    start = time.perf_counter()
    if variant == "ours":
        uri = f"{store.path}/handoff-{uuid.uuid4().hex[:10]}"
        SparkDataFrameMaterializer(uri, artifact_store=store).save(df)
        loaded = SparkDataFrameMaterializer(uri, artifact_store=store).load(dd.DataFrame)
    else:
        spark.conf.set("spark.sql.execution.arrow.pyspark.enabled", str(variant == "arrow").lower())
        loaded = dd.from_pandas(df.toPandas(), npartitions=8)
    with dask.config.set(scheduler="threads", num_workers=2):
        sums = loaded.groupby("k").x.sum().compute()
    seconds = time.perf_counter() - start
    if len(sums) != 100:
        raise BenchError(f"{variant}: {len(sums)} groups, expected 100")
    return seconds


def run_handoff(args: Any) -> float:
    from pyspark.sql import SparkSession
    from zenml.client import Client

    store = Client().active_stack.artifact_store
    builder = SparkSession.builder.master("local[2]").appName("bench-handoff")
    # The driver collects every row for toPandas(): give it room (Spark's 1g fails at 10M rows).
    conf = {**spark_base_conf(), "spark.ui.showConsoleProgress": "false", "spark.driver.memory": "6g",
            "spark.driver.maxResultSize": "4g"}
    for key, value in conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    times: Dict[str, List[float]] = {v: [] for v in VARIANTS}
    try:
        measure(spark, store, "ours", min(args.rows, 1_000_000))  # warm-up: JIT, codegen
        for repeat in range(args.repeats):
            for variant in rotated(VARIANTS, repeat):
                times[variant].append(measure(spark, store, variant, args.rows))
                print(f"  {variant:8s} repeat {repeat + 1}: {times[variant][-1]:.2f} s", flush=True)
    finally:
        spark.stop()
        stop_spark_completely()
    print(f"Spark -> Dask handoff of {args.rows:,} rows + a group-by sum, median of {args.repeats}:")
    med = print_medians(times, {v: [] for v in VARIANTS})
    print(f"  informational: ours / toPandas with Arrow = {med['ours'] / med['arrow']:.3f}")
    return med["ours"] / med["topandas"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    return run_bench(
        "bench-dataset-handoff-", lambda scratch: result("handoff", ratio=run_handoff(args)),
        leftovers=wait_no_java, leftover_label="java processes",
    )


if __name__ == "__main__":
    sys.exit(main())
