"""Saving + loading a Dask DataFrame with a non-trivial lineage: our materializer vs raw parquet.

In one process with one owned `LocalCluster` (2 worker processes x 1 thread, everything on
127.0.0.1) and its `Client`, and an isolated ZenML store in a temp dir (its default local
artifact store holds the artifacts), the same lazy DataFrame definition is built fresh for
every measurement (never persisted): `dd.from_map` generates `--rows` rows (seeded numpy) in
`--partitions` partitions on the workers, then a few column transforms (trig, hashing-like
integer mixing, a string column, a filter) through `map_partitions`-free column
expressions; no shuffle or groupby, so partitions stay independent. It is written to a
fresh directory by:

  ours   zenml_compute_engines.materializers.dask_dataframe.DaskDataFrameMaterializer, driven the way ZenML
         stores a step output (zenml/artifacts/utils.py): artifact_store.makedirs(uri),
         save() + save_visualizations() + extract_full_metadata() + compute_content_hash()
         + get_item_count(); then a new materializer's load(dd.DataFrame) and the reduction.
         Outside a step the materializer's engine lookup (zenml_compute_engines.flavors.dask.engine.step_client)
         finds no Dask engine on the bench's stack and uses Dask's default scheduler,
         which is the bench's Client, as for raw.
  raw    ddf.to_parquet(p) (defaults); dd.read_parquet(p); the reduction. Dask's default
         write_index=True stores the unnamed RangeIndex as a `__null_dask_index__`
         column, which ours does not (materializers/dask_dataframe.py), so raw writes
         and reads one int64 column more.
  noidx  (informational, no RESULT) raw with `to_parquet(p, write_index=False)`: the same
         columns as ours, so ours/noidx is the materializer's own overhead.

The reduction (the "load" that reads data): `dask.compute(df.z.sum(), df.id.count())` on
the loaded frame, checked against the values of an untimed warm-up. Each timing covers
save and load. One untimed warm-up per variant (worker imports, first-time paths), then
the variants interleave (rotated each repeat); medians. Every timing is split into
phases from perf_counter stamps (ours: to_parquet / footers+manifest (dataset.commit) /
preview html / metadata / manifest read / read_parquet / reduction; raw, noidx:
to_parquet / read_parquet / reduction), so a gap can be attributed. Prints absolute times and

    RESULT dask_artifacts ratio=<ours/raw>        (target <= 1.15)

Run from the repository root:

    /work/venv/bin/python bench/dask_artifacts.py [--rows 4000000] [--partitions 16] [--repeats 3]

The temp dir (store, artifacts, Dask worker dirs) is removed, the cluster closed and its
worker processes checked gone at the end; exit status is non-zero when anything fails.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import (  # noqa: E402
    BenchError,
    dask_cluster_kwargs,
    print_medians,
    result,
    rotated,
    run_bench,
    wait_no_dask_workers,
)

VARIANTS = ("ours", "raw", "noidx")
N_WORKERS = 2


def make_part(index: int, rows: int) -> Any:
    """One partition, generated on a worker (seeded: the same data every time)."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(index)
    start = index * rows
    return pd.DataFrame(
        {
            "id": np.arange(start, start + rows, dtype="int64"),
            "x": rng.random(rows),
            "g": rng.integers(0, 1_000, rows, dtype="int64"),
        }
    )


def lineage(rows: int, partitions: int) -> Any:
    """The DataFrame under test: lazy, a few column transforms per row, partitions independent."""
    import dask.dataframe as dd
    import numpy as np

    per_part = rows // partitions
    df = dd.from_map(
        make_part, range(partitions), rows=per_part, meta=make_part(0, 0), enforce_metadata=False
    )
    df = df.assign(y=np.sin(df.x * 6.283) * np.cos(df.id * 0.001) + np.log1p(df.g))
    mixed = (df.id * 2654435761 + df.g * 40503) % 1_000_003  # integer mixing, like a hash
    df = df.assign(z=mixed % 9973, w=(df.y * 1000).round(0).astype("int64") ^ mixed)
    df = df.assign(label=df.g.astype(str) + "-" + (mixed % 97).astype(str))
    df = df[df.x > 0.05]  # drops ~5% of the rows: row counts are not known in advance
    return df[["id", "x", "g", "y", "z", "w", "label"]]


def reduce_loaded(df: Any) -> Tuple[int, int]:
    """What "load" means here: read the data back and reduce it."""
    import dask

    z_sum, rows = dask.compute(df.z.sum(), df.id.count())
    return int(z_sum), int(rows)


class PhaseClock:
    """perf_counter stamps; `lap(name)` adds the time since the previous stamp to `name`."""

    def __init__(self) -> None:
        self.start = self.last = time.perf_counter()
        self.phases: Dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.phases[name] = self.phases.get(name, 0.0) + now - self.last
        self.last = now

    def total(self) -> float:
        return self.last - self.start


class Bench:
    def __init__(self, store: Any, root: str, rows: int, partitions: int) -> None:
        from zenml_compute_engines.materializers import dataset
        from zenml_compute_engines.materializers.dask_dataframe import DaskDataFrameMaterializer

        self.store, self.root, self.rows, self.partitions = store, root, rows, partitions
        self.cls = DaskDataFrameMaterializer
        self._clock: Any = None
        # Stamps inside ours' save(): to_parquet | dataset.commit (footers + manifest).
        self._wrap(dataset, "commit", before="to_parquet", after="footers+manifest")
        # Inside load(): from load()'s start to the manifest read, then dd.read_parquet.
        self._wrap(dataset, "read_manifest", before=None, after="read manifest")

    def _wrap(self, owner: Any, name: str, before: Any, after: str) -> None:
        original: Callable[..., Any] = getattr(owner, name)
        bench = self

        def stamped(*args: Any, **kwargs: Any) -> Any:
            clock = bench._clock
            if clock is not None and before is not None:
                clock.lap(before)
            try:
                return original(*args, **kwargs)
            finally:
                if clock is not None:
                    clock.lap(after)

        setattr(owner, name, stamped)

    def measure(self, variant: str) -> Tuple[float, Tuple[int, int], Dict[str, float], Dict[str, Any]]:
        """(seconds for save + load + reduction, reduction, phases, facts); output removed after."""
        import dask.dataframe as dd

        df = lineage(self.rows, self.partitions)  # lazy: defining it costs ~nothing
        uri = f"{self.root}/{variant}-{uuid.uuid4().hex[:10]}"
        facts: Dict[str, Any] = {}
        clock = self._clock = PhaseClock()
        try:
            if variant in ("raw", "noidx"):
                path = f"{uri}/data"
                if variant == "raw":
                    df.to_parquet(path)
                else:
                    df.to_parquet(path, write_index=False)
                clock.lap("to_parquet")
                loaded = dd.read_parquet(path)
                clock.lap("read_parquet")
            else:
                self.store.makedirs(uri)
                writer = self.cls(uri=uri, artifact_store=self.store)
                writer.save(df)  # laps: to_parquet, footers+manifest
                writer.save_visualizations(df)
                clock.lap("preview html")
                meta = writer.extract_full_metadata(df)
                writer.compute_content_hash(df)
                writer.get_item_count(df)
                clock.lap("metadata")
                loaded = self.cls(uri=uri, artifact_store=self.store).load(dd.DataFrame)
                clock.lap("read_parquet")  # after the "read manifest" lap inside load()
                facts = {"num_rows": meta.get("num_rows"), "num_files": meta.get("num_files")}
            reduced = reduce_loaded(loaded)
            clock.lap("reduce")
            facts["files"] = sum(1 for p in Path(uri).rglob("*.parquet"))
            facts["bytes"] = sum(p.stat().st_size for p in Path(uri).rglob("*") if p.is_file())
            return clock.total(), reduced, clock.phases, facts
        finally:
            self._clock = None
            shutil.rmtree(uri, ignore_errors=True)


def run(args: Any) -> None:
    from distributed import Client, LocalCluster
    from zenml.client import Client as ZenmlClient

    for name in ("distributed", "zenml"):
        logging.getLogger(name).setLevel(logging.WARNING)
    store = ZenmlClient().active_stack.artifact_store
    root = f"{store.path.rstrip('/')}/bench-dask-artifacts"
    cluster = LocalCluster(**dask_cluster_kwargs(n_workers=N_WORKERS))
    try:
        client = Client(cluster)
        try:
            bench = Bench(store, root, args.rows, args.partitions)
            expected = None
            for variant in VARIANTS:
                seconds, reduced, _, facts = bench.measure(variant)
                if expected is None:
                    expected = reduced
                elif reduced != expected:
                    raise BenchError(f"warm-up {variant} reduced to {reduced}, raw/ours disagree: {expected}")
                print(f"warm-up {variant} (untimed): {seconds:.2f} s, {reduced[1]:,} rows, "
                      f"{facts['files']} parquet files, {facts['bytes'] / 1e6:.1f} MB", flush=True)
            assert expected is not None
            times: Dict[str, List[float]] = {v: [] for v in VARIANTS}
            phases: Dict[str, List[Dict[str, float]]] = {v: [] for v in VARIANTS}
            for repeat in range(args.repeats):
                for variant in rotated(VARIANTS, repeat):
                    seconds, reduced, parts, facts = bench.measure(variant)
                    if reduced != expected:
                        raise BenchError(f"{variant} reduced to {reduced}, expected {expected}")
                    if variant == "ours" and facts.get("num_rows") != expected[1]:
                        raise BenchError(f"ours' metadata says {facts.get('num_rows')} rows, expected {expected[1]}")
                    times[variant].append(seconds)
                    phases[variant].append(parts)
                    detail = ", ".join(f"{k} {v:.2f}" for k, v in parts.items())
                    print(f"  {variant:5s} repeat {repeat + 1}: {seconds:.2f} s ({detail})", flush=True)
        finally:
            client.close()
    finally:
        cluster.close()

    print(f"save + load + reduction of {expected[1]:,} rows in {args.partitions} partitions "
          f"({N_WORKERS} workers x 1 thread), median of {args.repeats}:")
    med = print_medians(times, phases, digits=3)
    print(f"  ours - raw = {med['ours'] - med['raw']:+.2f} s; informational: ours/noidx = "
          f"{med['ours'] / med['noidx']:.3f} (ours - noidx = {med['ours'] - med['noidx']:+.2f} s)")
    result("dask_artifacts", ratio=med["ours"] / med["raw"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=4_000_000)
    parser.add_argument("--partitions", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.rows < args.partitions or args.partitions < 1 or args.repeats < 1:
        parser.error("need rows >= partitions >= 1 and repeats >= 1")
    return run_bench(
        "bench-dask-artifacts-", lambda scratch: run(args), leftovers=wait_no_dask_workers,
        leftover_label="Dask worker processes",
    )


if __name__ == "__main__":
    sys.exit(main())
