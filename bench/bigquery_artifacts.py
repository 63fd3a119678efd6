"""Passing a 1M-row BigQuery table between two steps: by reference (ours) vs the naive
`to_dataframe()` -> `load_table_from_dataframe()` round trip, side by side.

Runs against the local BigQuery emulator (bqemulator, .venv-bqemu; started and stopped
here), behind a recording HTTP proxy (REST) and a byte-counting TCP relay (the Storage
Read API's gRPC), both on 127.0.0.1. One setup child registers the `bigquery` flavor and
a stack in an isolated ZenML store and creates the table; then each variant's two-step
pipeline runs in a fresh process, interleaved (rotated each repeat); medians.
See bench/pipelines_bigquery.py for the two pipelines.

Prints absolute times and

    RESULT bq_reference_bytes value=<bytes of the table's rows read to pass it on (ours)>   (target 0)
    RESULT bq_vs_pandas ratio=<ours / naive, time the two steps take>                       (target <= 0.10)

"Bytes read" counts every row of the table that left BigQuery: REST `tabledata.list`
responses for it and all Storage Read API traffic. Not counted: the artifact's 10-row
preview (its dashboard visualization; constant in the table's size), printed apart.
The step times are ZenML's own start/end of both steps (inputs loaded, body, outputs
saved), so the pipeline's compile time, identical for both, does not dilute the ratio;
whole-pipeline wall times are printed too.

    .venv/bin/python bench/bigquery_artifacts.py [--rows 1000000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import (  # noqa: E402
    ROOT,
    BenchError,
    ByteCountingRelay,
    emit,
    isolated_env,
    print_medians,
    result,
    rotated,
    run_bench,
    run_child,
)

VARIANTS = ("ours", "naive")
PIPELINES = {"ours": "reference_pipeline", "naive": "dataframe_pipeline"}
STEPS = {"ours": ("hand_over_reference", "count_reference"), "naive": ("hand_over_dataframe", "count_reloaded")}
TABLE = "test.bench.big"
COMPONENT = "bq_bench"


def child_setup(rows: int) -> None:
    from zenml.client import Client
    from zenml.enums import StackComponentType

    from zenml_compute_engines import compute_engine
    from zenml_compute_engines.flavors.registration import register_flavors

    client = Client()
    kind = StackComponentType.FEATURE_STORE
    register_flavors()
    config = {
        "project": "test",
        "api_endpoint": os.environ["BENCH_BQ_API"],
        "storage_api_endpoint": os.environ["BENCH_BQ_GRPC"],
    }
    client.create_stack_component(name=COMPONENT, flavor="bigquery", component_type=kind, configuration=config)
    client.create_stack(
        name=COMPONENT,
        components={StackComponentType.ORCHESTRATOR: "default", StackComponentType.ARTIFACT_STORE: "default", kind: COMPONENT},
    )
    client.activate_stack(COMPONENT)
    bq = compute_engine("bigquery").session()
    bq.create_dataset("test.bench", exists_ok=True)
    bq.query(
        f"CREATE OR REPLACE TABLE `{TABLE}` AS SELECT x AS id, MOD(x, 100) AS k, x * 0.5 AS v, "
        f"CONCAT('name', CAST(x AS STRING)) AS s FROM UNNEST(GENERATE_ARRAY(1, {rows})) AS x"
    ).result()
    emit({"rows": bq.get_table(TABLE).num_rows})


def child_run(variant: str) -> None:
    import time

    from zenml.client import Client

    import bench.pipelines_bigquery as pipelines

    start = time.perf_counter()
    run = Client().get_pipeline_run(getattr(pipelines, PIPELINES[variant])(table_id=TABLE).id)
    wall = time.perf_counter() - start
    first, second = (run.steps[name] for name in STEPS[variant])
    store = Client().active_stack.artifact_store
    artifact = first.outputs["table"][0]
    stored = sum(
        store.size(os.path.join(directory, name)) or 0
        for directory, _, names in store.walk(artifact.uri)
        for name in names
    )
    emit({
        "steps_s": sum((s.end_time - s.start_time).total_seconds() for s in (first, second)),
        "wall_s": wall,
        "count": second.outputs["rows"][0].load(),
        "artifact_bytes": stored,
    })


def _table_row_bytes(proxy: Any, previews: bool) -> int:
    """REST bytes of the benchmark table's rows (tabledata.list on it)."""
    from tests.support.bigquery_proxy import is_preview

    table_path = f"/datasets/bench/tables/{TABLE.rsplit('.', 1)[1]}/data"
    return sum(
        getattr(r, "response_bytes", 0)
        for r in list(proxy.requests)
        if r.path.split("?")[0].endswith(table_path) and is_preview(r.path) == previews
    )


def run(scratch: Path, args: Any) -> None:
    from examples._bqemulator import Emulator
    from tests.support.bigquery_proxy import RecordingProxy

    emulator = Emulator.start()
    proxy = RecordingProxy(emulator.rest_url)
    relay = ByteCountingRelay(emulator.grpc_port)
    try:
        env = {**isolated_env(scratch), "BENCH_BQ_API": proxy.url, "BENCH_BQ_GRPC": relay.endpoint}
        script = str(Path(__file__).relative_to(ROOT))
        setup = run_child([script, "--child", "setup", "--rows", str(args.rows)], env, scratch / "setup.log", 300)
        if setup["rows"] != args.rows:
            raise BenchError(f"the table has {setup['rows']} rows, expected {args.rows}")
        times: Dict[str, List[float]] = {v: [] for v in VARIANTS}
        walls: Dict[str, List[float]] = {v: [] for v in VARIANTS}
        moved: Dict[str, List[int]] = {v: [] for v in VARIANTS}
        previews: Dict[str, List[int]] = {v: [] for v in VARIANTS}
        stored: Dict[str, int] = {}
        for repeat in range(args.repeats):
            for variant in rotated(VARIANTS, repeat):
                proxy.clear()
                grpc_before = relay.received
                log = scratch / f"{variant}-{repeat}.log"
                payload = run_child([script, "--child", "run", "--variant", variant], env, log, 600)
                if payload["count"] != args.rows:
                    raise BenchError(f"{variant} counted {payload['count']} rows, expected {args.rows}")
                times[variant].append(payload["steps_s"])
                walls[variant].append(payload["wall_s"])
                moved[variant].append(_table_row_bytes(proxy, previews=False) + relay.received - grpc_before)
                previews[variant].append(_table_row_bytes(proxy, previews=True))
                stored[variant] = payload["artifact_bytes"]
                print(f"  {variant:5s} repeat {repeat + 1}: steps {payload['steps_s']:.2f} s, pipeline "
                      f"{payload['wall_s']:.2f} s, table bytes read {moved[variant][-1]:,}", flush=True)
    finally:
        relay.close()
        proxy.stop()
        emulator.stop()

    print(f"pass a {args.rows:,}-row table between two steps, median of {args.repeats} (time of both steps):")
    med = print_medians(times, {v: [{"pipeline": w} for w in walls[v]] for v in VARIANTS})
    for variant in VARIANTS:
        print(f"  {variant:5s} table bytes read {moved[variant]}, artifact in the store {stored[variant]:,} bytes, "
              f"10-row preview {previews[variant][0]:,} bytes")
    result("bq_reference_bytes", value=float(max(moved["ours"])))
    result("bq_vs_pandas", ratio=med["ours"] / med["naive"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", choices=("setup", "run"), help=argparse.SUPPRESS)
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "setup":
        child_setup(args.rows)
        return 0
    if args.child == "run":
        child_run(args.variant)
        return 0
    return run_bench("bench-bigquery-", lambda scratch: run(scratch, args), isolated=False)


if __name__ == "__main__":
    sys.exit(main())
