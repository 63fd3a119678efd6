"""Spark save + load of a dataset artifact on an S3 artifact store, vs the same data written
and read with pyarrow + s3fs directly, side by side.

An S3 server (moto, `moto_server` on 127.0.0.1, its own process) holds a bucket; ZenML's
own S3 artifact store points at it (endpoint URL, keys in a ZenML secret), in an isolated
ZenML store. In one process with a `local[2]` SparkSession (no Hadoop S3 connector: the
pyspark wheel has none, so the executors write and read with pyarrow + fsspec):

  ours  SparkDataFrameMaterializer.save(df) to a fresh artifact URI, then a fresh
        materializer's load(pyspark DataFrame) and count()
  raw   the same rows as an Arrow table (built before the clock starts) written with
        pq.write_table to an s3fs file and read back with pq.read_table, same server
  cross what neither pays for storage: Spark hands the rows to Python tasks that only
        count them (the crossing ours makes on the way out, without the connector);
        printed for reference, not part of the ratio

Interleaved, rotated each repeat, medians.

    RESULT s3_vs_raw ratio=<ours / raw>     (target <= 1.3)

    .venv/bin/python bench/s3_artifacts.py [--rows 10000000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import urllib.request
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

VARIANTS = ("ours", "raw", "cross")
KEY, SECRET = "AKIABENCHKEY000001", "bench-secret"


def start_s3(scratch: Path) -> Any:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    moto = str(Path(sys.executable).with_name("moto_server"))
    log = open(scratch / "moto.log", "wb")
    server = subprocess.Popen([moto, "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(f"{url}/moto-api/", timeout=1)
            return server, url
        except OSError:
            time.sleep(0.1)
    server.kill()
    raise BenchError("moto_server did not start")


def use_s3_stack(url: str, bucket: str) -> Any:
    import boto3
    from zenml.client import Client
    from zenml.enums import StackComponentType

    boto3.client("s3", endpoint_url=url, aws_access_key_id=KEY, aws_secret_access_key=SECRET,
                 region_name="us-east-1").create_bucket(Bucket=bucket)
    client = Client()
    client.create_secret("s3_keys", values={"key": KEY, "secret": SECRET})
    client.create_stack_component(
        name="s3_store", flavor="s3", component_type=StackComponentType.ARTIFACT_STORE,
        configuration={"path": f"s3://{bucket}/zenml", "key": "{{s3_keys.key}}", "secret": "{{s3_keys.secret}}",
                       "client_kwargs": {"endpoint_url": url}},
    )
    client.create_stack(name="s3", components={StackComponentType.ORCHESTRATOR: "default",
                                               StackComponentType.ARTIFACT_STORE: "s3_store"})
    client.activate_stack("s3")
    return client.active_stack.artifact_store


def _count_rows(batches: Any) -> Any:
    import pyarrow as pa

    yield pa.RecordBatch.from_pydict({"rows": [sum(batch.num_rows for batch in batches)]})


def measure(variant: str, spark: Any, store: Any, table: Any, s3: Any, bucket: str) -> float:
    import pyarrow.parquet as pq
    from pyspark.sql import DataFrame

    from materializers.spark_dataframe import SparkDataFrameMaterializer

    rows = table.num_rows
    df = spark.range(0, rows, numPartitions=8).selectExpr("id", "id % 100 AS k", "CAST(id AS DOUBLE) * 0.5 AS x")
    start = time.perf_counter()
    if variant == "ours":
        uri = f"{store.path}/bench-{uuid.uuid4().hex[:10]}"
        SparkDataFrameMaterializer(uri, artifact_store=store).save(df)
        count = SparkDataFrameMaterializer(uri, artifact_store=store).load(DataFrame).count()
    elif variant == "cross":
        count = df.mapInArrow(_count_rows, "rows long").groupBy().sum("rows").first()[0]
    else:
        path = f"{bucket}/raw-{uuid.uuid4().hex[:10]}.parquet"
        with s3.open(path, "wb") as handle:
            pq.write_table(table, handle)
        with s3.open(path, "rb") as handle:
            count = pq.read_table(handle).num_rows
    seconds = time.perf_counter() - start
    if count != rows:
        raise BenchError(f"{variant} read {count} rows, expected {rows}")
    return seconds


def run(scratch: Path, args: Any) -> None:
    import pyarrow as pa
    import pyarrow.compute as pc
    import s3fs
    from pyspark.sql import SparkSession

    server, url = start_s3(scratch)
    try:
        bucket = f"bench-{uuid.uuid4().hex[:8]}"
        store = use_s3_stack(url, bucket)
        s3 = s3fs.S3FileSystem(key=KEY, secret=SECRET, client_kwargs={"endpoint_url": url})
        ids = pa.array(range(args.rows), pa.int64())
        table = pa.table({"id": ids, "k": pc.remainder(ids, 100), "x": pc.multiply(ids.cast(pa.float64()), 0.5)})
        builder = SparkSession.builder.master("local[2]").appName("bench-s3")
        for key, value in {**spark_base_conf(), "spark.ui.showConsoleProgress": "false"}.items():
            builder = builder.config(key, value)
        spark = builder.getOrCreate()
        spark.sparkContext.setLogLevel("ERROR")
        times: Dict[str, List[float]] = {v: [] for v in VARIANTS}
        try:
            for variant in VARIANTS:  # warm-up: Python workers, JIT, s3fs sessions
                measure(variant, spark, store, table.slice(0, 1000), s3, bucket)
            for repeat in range(args.repeats):
                for variant in rotated(VARIANTS, repeat):
                    times[variant].append(measure(variant, spark, store, table, s3, bucket))
                    print(f"  {variant:5s} repeat {repeat + 1}: {times[variant][-1]:.2f} s", flush=True)
        finally:
            spark.stop()
            stop_spark_completely()
    finally:
        server.terminate()
        server.wait(timeout=15)
    print(f"save + load of {args.rows:,} rows on S3 (moto), median of {args.repeats}:")
    med = print_medians(times, {v: [] for v in VARIANTS})
    result("s3_vs_raw", ratio=med["ours"] / med["raw"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    return run_bench(
        "bench-s3-artifacts-", lambda scratch: run(scratch, args), leftovers=wait_no_java, leftover_label="java processes"
    )


if __name__ == "__main__":
    sys.exit(main())
