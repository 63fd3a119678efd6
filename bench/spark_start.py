"""A Spark driver's start with our class archive vs a plain `getOrCreate()`.

Each run is a fresh process that starts a `local[2]` SparkSession (the conf our engine
uses for an embedded engine, UI off), runs a first small job (a sum and a group-by) and
stops the session and its driver JVM:

  archive   with the java options our engine adds (flavors/spark/class_cache.py): the
            driver JVM maps Spark's classes from the archive recorded for this Spark and
            Java (recorded before the clock if missing, as `python -m
            zenml_compute_engines.flavors.spark.class_cache` does)
  raw       SparkSession.builder...getOrCreate() as written by hand

Interleaved, rotated each repeat, medians.

    RESULT spark_start_vs_raw ratio=<archive / raw>, start + first job + stop

    .venv/bin/python bench/spark_start.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import (  # noqa: E402
    BenchError,
    emit,
    print_medians,
    result,
    rotated,
    run_bench,
    run_child,
    spark_base_conf,
    stop_spark_completely,
    wait_no_java,
)

VARIANTS = ("archive", "raw")


def child(variant: str) -> None:
    from pyspark.sql import SparkSession

    from zenml_compute_engines.flavors.spark import class_cache

    builder = SparkSession.builder.master("local[2]").appName("bench-start")
    for key, value in spark_base_conf().items():
        builder = builder.config(key, value)
    if variant == "archive":
        cache, why_not = class_cache.plan()
        if cache is None or cache.recording:
            raise SystemExit(f"no class archive to map: {why_not or 'this start would record it'}")
        builder = builder.config("spark.driver.extraJavaOptions", cache.java_options())
    began = time.perf_counter()
    session = builder.getOrCreate()
    started = time.perf_counter()
    session.range(0, 100_000, numPartitions=4).selectExpr("id % 10 AS k", "id").groupBy("k").sum("id").collect()
    ran = time.perf_counter()
    stop_spark_completely(session)
    stopped = time.perf_counter()
    jvm = resource.getrusage(resource.RUSAGE_CHILDREN)
    emit({
        "total": stopped - began,
        "phases": {"start": started - began, "first_job": ran - started, "stop": stopped - ran,
                   "jvm_cpu": jvm.ru_utime + jvm.ru_stime},
    })


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--child", choices=VARIANTS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return 0

    def body(scratch: Path) -> None:
        recorded = subprocess.run([sys.executable, "-m", "zenml_compute_engines.flavors.spark.class_cache"], capture_output=True, text=True)
        print(recorded.stdout.strip().splitlines()[-1] if recorded.stdout.strip() else recorded.stderr[-500:])
        if recorded.returncode != 0:
            raise BenchError("could not record the class archive")
        times: Dict[str, List[float]] = {v: [] for v in VARIANTS}
        phases: Dict[str, List[Dict[str, float]]] = {v: [] for v in VARIANTS}
        for repeat in range(args.repeats):
            for variant in rotated(VARIANTS, repeat):
                out = run_child([__file__, "--child", variant], {}, scratch / f"{variant}-{repeat}.log", timeout_s=300)
                times[variant].append(out["total"])
                phases[variant].append(out["phases"])
                if wait_no_java():
                    raise BenchError("a driver JVM outlived its run")
        medians = print_medians(times, phases)
        result("spark_start_vs_raw", ratio=medians["archive"] / medians["raw"])

    return run_bench("spark-start", body, leftovers=wait_no_java, leftover_label="java processes")


if __name__ == "__main__":
    sys.exit(main())
