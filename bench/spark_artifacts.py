"""Saving + loading a Spark DataFrame with an expensive lineage, three ways, side by side.

In one process with one `local[2]` SparkSession (UI off) and an isolated ZenML store in a
temp dir (its default local artifact store holds the artifacts), the same DataFrame
definition (sha2 chain -> hash-derived key and filter -> groupBy stats joined back; a
few seconds to compute) is built fresh for every measurement, never cached, and written
to a fresh directory by:

  ours   zenml_compute_engines.materializers.spark_dataframe.SparkDataFrameMaterializer, driven the way ZenML
         stores a step output: save() + save_visualizations() + extract_full_metadata();
         then a new materializer's load() + count() on the loaded frame
  raw    df.write.parquet(p); spark.read.parquet(p).count()
  zenml  zenml.integrations.spark.materializers.spark_dataframe_materializer
         .SparkDataFrameMaterializer (imported explicitly: ZenML leaves it inactive with
         pyspark 4), driven the same way as ours. Its extract_metadata() calls df.count(),
         which recomputes the lineage's row-determining part (Spark prunes the columns a
         count does not need; here the hashes feed the key, the filter and the join, so
         the count recomputes them all).

Each timing covers save and load. One untimed warm-up write (JIT, codegen), then the
variants interleave (rotated each repeat); medians. Prints absolute times and

    RESULT spark_artifacts_vs_raw ratio=<ours/raw>        (target <= 1.10)
    RESULT spark_artifacts_vs_zenml ratio=<ours/zenml>    (target <= 0.60)

Run from the repository root:

    /work/venv/bin/python bench/spark_artifacts.py [--rows 1000000] [--repeats 3]

The temp dir (store, artifacts, Spark scratch) is removed and the driver JVM stopped at
the end; exit status is non-zero when anything fails.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Dict, List, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import (  # noqa: E402
    BenchError,
    print_medians,
    result,
    rotated,
    run_bench,
    spark_base_conf,
    wait_no_java,
)

VARIANTS = ("ours", "raw", "zenml")


def expensive_frame(spark: Any, rows: int) -> Any:
    """The DataFrame under test: a lazy lineage whose every row costs several sha2 calls."""
    from pyspark.sql import functions as F

    df = spark.range(0, rows, numPartitions=8)
    df = df.withColumn("h1", F.sha2(F.col("id").cast("string"), 256))
    df = df.withColumn("h2", F.sha2(F.concat(F.col("h1"), F.lit("|2")), 256))
    df = df.withColumn("h3", F.sha2(F.concat(F.col("h2"), F.lit("|3")), 512))
    df = df.withColumn("h4", F.sha2(F.concat(F.col("h3"), F.col("h1")), 384))
    df = df.withColumn("k", F.conv(F.substring("h4", 1, 5), 16, 10).cast("long") % 5000)
    df = df.withColumn("score", F.crc32(F.col("h3")) % 1000)
    df = df.filter(F.substring("h2", 1, 1) != "0")  # drops ~1/16 of the rows
    stats = df.groupBy("k").agg(
        F.count("*").alias("k_rows"),
        F.avg("score").alias("k_score"),
        F.max("h1").alias("k_max"),
    )
    return df.join(stats, "k").select(
        "id", "k", F.substring("h4", 1, 16).alias("digest"), "score", "k_rows", "k_score"
    )


class Bench:
    def __init__(self, spark: Any, store: Any, root: str, rows: int) -> None:
        from zenml_compute_engines.materializers.spark_dataframe import SparkDataFrameMaterializer as Ours
        from zenml.integrations.spark.materializers.spark_dataframe_materializer import (
            SparkDataFrameMaterializer as Zenml,
        )

        self.spark, self.store, self.root, self.rows = spark, store, root, rows
        self.classes = {"ours": Ours, "zenml": Zenml}

    def _fresh_uri(self, variant: str) -> str:
        return f"{self.root}/{variant}-{uuid.uuid4().hex[:10]}"

    def measure(self, variant: str) -> Tuple[float, int, Dict[str, float]]:
        """(seconds for save + load + count, rows loaded, phase seconds); output removed after."""
        from pyspark.sql import DataFrame

        df = expensive_frame(self.spark, self.rows)  # lazy: defining it costs ~nothing
        uri = self._fresh_uri(variant)
        phases: Dict[str, float] = {}
        start = time.perf_counter()
        try:
            if variant == "raw":
                path = f"{uri}/data"
                df.write.parquet(path)
                phases["save"] = time.perf_counter() - start
                loaded = self.spark.read.parquet(path)
            else:
                cls = self.classes[variant]
                writer = cls(uri=uri, artifact_store=self.store)
                writer.save(df)
                phases["save"] = time.perf_counter() - start
                writer.save_visualizations(df)
                phases["visualize"] = time.perf_counter() - start - sum(phases.values())
                writer.extract_full_metadata(df)
                phases["metadata"] = time.perf_counter() - start - sum(phases.values())
                loaded = cls(uri=uri, artifact_store=self.store).load(DataFrame)
            count = loaded.count()
            phases["load+count"] = time.perf_counter() - start - sum(phases.values())
            return time.perf_counter() - start, count, phases
        finally:
            shutil.rmtree(uri, ignore_errors=True)


def run(scratch: Path, args: Any) -> None:
    from pyspark.sql import SparkSession
    from zenml.client import Client

    store = Client().active_stack.artifact_store
    root = f"{store.path.rstrip('/')}/bench-spark-artifacts"
    builder = SparkSession.builder.master("local[2]").appName("bench-spark-artifacts")
    for key, value in {**spark_base_conf(), "spark.ui.showConsoleProgress": "false"}.items():
        builder = builder.config(key, value)
    logging.getLogger("py4j").setLevel(logging.WARNING)  # one INFO line per closed connection
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    try:
        bench = Bench(spark, store, root, args.rows)
        warm_s, expected, _ = bench.measure("raw")
        print(f"warm-up (raw, untimed): {warm_s:.2f} s, {expected:,} rows", flush=True)
        times: Dict[str, List[float]] = {v: [] for v in VARIANTS}
        phases: Dict[str, List[Dict[str, float]]] = {v: [] for v in VARIANTS}
        for repeat in range(args.repeats):
            for variant in rotated(VARIANTS, repeat):
                seconds, count, parts = bench.measure(variant)
                if count != expected:
                    raise BenchError(f"{variant} loaded {count} rows, expected {expected}")
                times[variant].append(seconds)
                phases[variant].append(parts)
                detail = ", ".join(f"{k} {v:.2f}" for k, v in parts.items())
                print(f"  {variant:5s} repeat {repeat + 1}: {seconds:.2f} s ({detail})", flush=True)
    finally:
        spark.stop()
        from bench._common import stop_spark_completely

        stop_spark_completely()

    print(f"save + load + count of {expected:,} rows, median of {args.repeats}:")
    med = print_medians(times, phases)
    result("spark_artifacts_vs_raw", ratio=med["ours"] / med["raw"])
    result("spark_artifacts_vs_zenml", ratio=med["ours"] / med["zenml"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    return run_bench(
        "bench-spark-artifacts-", lambda scratch: run(scratch, args), leftovers=wait_no_java, leftover_label="java processes"
    )


if __name__ == "__main__":
    sys.exit(main())
