"""Long-lived processes: many pipeline runs in one process, per engine and reuse mode.

What a notebook kernel or a script that calls its pipeline in a loop sees. Each variant
runs in a fresh process of its own (an isolated ZenML store, its own TMPDIR, Spark local
dirs and Ray temp dir below the bench's scratch dir) and is sampled after every run:
resident memory (RSS), native threads, open file descriptors, and the files and folders
in its temp dirs. Per engine (bench/pipelines_soak.py has the job and the sizing):

  bare     the engine started and stopped by hand, N times, without ZenML (the engine
           library's own cycle: SparkSession getOrCreate/stop + the gateway JVM's
           shutdown, LocalCluster + Client open/close, ray.init/ray.shutdown)
  default  N runs of a 3-step pipeline on a stack with our engine component, default
           options (reuse=pipeline_run: the engine starts and stops once per run)
  process  the same with reuse=process (one engine for all runs, stopped at the end)
and once per invocation:
  zenml    N runs of the pipeline with engine-free steps on the default stack (ZenML's
           own share of a run)

The figures are least-squares slopes per run over the second half of the runs (the first
half pays imports, caches and warm-up):

  RESULT soak_<engine>_<variant>_rss_mb_per_run value=<MB per run>
  RESULT soak_<engine>_<variant>_threads_per_run value=<threads per run>
  RESULT soak_<engine>_<variant>_fds_per_run value=<fds per run>
  RESULT soak_<engine>_<variant>_tmp_entries_per_run value=<files and folders per run>
  RESULT soak_<engine>_<mode>_rss_ours_mb_per_run value=<mode - bare - zenml (default),
         process - zenml (process): what our component adds per run; target <= 0.5>

Targets on default reuse: threads and fds slope 0 for Spark and Dask; our RSS share at
most 0.5 MB per run; no temp entries left per run by an engine we own. Every variant must
leave no engine process behind (checked inside the child and on its process group).

Run from the repository root:

    .venv/bin/python bench/soak.py [--engines spark,dask,ray] [--modes default,process] [--runs 24]
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import RAY_CHILD_ENV, BenchError, emit, isolated_env, result, run_bench, run_child  # noqa: E402

ENGINES = ("spark", "dask", "ray")
MODES = {"default": "pipeline_run", "process": "process"}
MEASURES = ("rss_mb", "threads", "fds", "tmp_entries")


# =====================================================================================
# the child: N runs (or bare cycles) in this one process, a sample after each
# =====================================================================================


def _temp_dirs() -> List[Path]:
    """The temp dirs of this process: TMPDIR (Python's and Ray's temp files, Dask's worker
    dirs, the driver JVM's java.io.tmpdir) and Spark's local dirs."""
    return [Path(os.environ["TMPDIR"]), Path(os.environ["SPARK_LOCAL_DIRS"])]


def _temp_entries() -> List[str]:
    """Every file and folder below the temp dirs, as paths relative to them."""
    found = []
    for top in _temp_dirs():
        for folder, dirs, files in os.walk(top):
            for name in dirs + files:
                found.append(os.path.relpath(os.path.join(folder, name), top.parent))
    return found


def _sample(started: float) -> Dict[str, Any]:
    """What the process holds after a run. Threads and fds are the fewest of a few readings
    over half a second: what is left, not a thread still on its way out."""
    import psutil

    run_s = time.perf_counter() - started
    gc.collect()
    process = psutil.Process()
    readings = []
    for _ in range(5):
        readings.append((process.num_threads(), process.num_fds()))  # native threads, the engines' too
        time.sleep(0.1)
    return {
        "rss_mb": process.memory_info().rss / 2**20,
        "threads": min(threads for threads, _ in readings),
        "fds": min(fds for _, fds in readings),
        "tmp_entries": len(_temp_entries()),
        "run_s": run_s,
    }


def _engine_processes(engine: str) -> List[Any]:
    from bench import _common

    finders = {"spark": _common.java_descendants, "dask": _common.dask_worker_descendants, "ray": _common.ray_descendants}
    return finders[engine]() if engine in finders else []


def _activate_stack(engine: str, reuse: str) -> None:
    """Register our flavors, a component of `engine` with `reuse`, a stack with it; activate."""
    from zenml.client import Client
    from zenml.enums import StackComponentType

    from bench.pipelines_soak import COMPONENT_CONFIG
    from zenml_compute_engines.flavors.registration import register_flavors

    client = Client()
    kind = StackComponentType.FEATURE_STORE
    register_flavors()
    config = {**COMPONENT_CONFIG[engine], "reuse": reuse}
    client.create_stack_component(name=engine, flavor=engine, component_type=kind, configuration=config)
    client.create_stack(
        name=engine,
        components={StackComponentType.ORCHESTRATOR: "default", StackComponentType.ARTIFACT_STORE: "default", kind: engine},
    )
    client.activate_stack(engine)


def child(variant: str, engine: str, runs: int) -> None:
    from bench._common import wait_none_left

    if variant == "bare":
        from bench.pipelines_soak import BARE_CYCLE

        one_run = BARE_CYCLE[engine]
    else:
        if variant != "zenml":
            _activate_stack(engine, MODES[variant])
        from bench.pipelines_soak import STEPS, soak_pipeline

        def one_run() -> None:
            run = soak_pipeline(engine=engine if variant != "zenml" else "zenml")
            if "completed" not in str(run.status).lower():
                raise BenchError(f"run ended {run.status}")
            total = run.steps[f"step_{STEPS - 1}"].outputs["output"][0].load()
            if total <= 0:
                raise BenchError(f"the pipeline computed {total}")

    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        one_run()
        if variant in ("bare", "default"):  # the engine must be gone after every run
            left = wait_none_left(lambda: _engine_processes(engine), 15.0)
            if left:
                raise BenchError(f"{engine} processes left after a run: {[p.pid for p in left]}")
        samples.append(_sample(started))
    live = _summarize(_temp_entries())  # a reuse=process engine is still running here
    from zenml_compute_engines import shutdown_engines

    shutdown_engines()
    left = wait_none_left(lambda: _engine_processes(engine), 15.0)
    if left:
        raise BenchError(f"{engine} processes left at the end: {[p.pid for p in left]}")
    emit({"samples": samples, "live": live, "left": _summarize(_temp_entries())})


def _summarize(entries: Sequence[str], depth: int = 3) -> Dict[str, int]:
    """Entries counted by their first `depth` path parts, digits folded (`ray/session_N`)."""
    import re

    counts: Dict[str, int] = {}
    for entry in entries:
        key = re.sub(r"\d+", "N", "/".join(entry.split(os.sep)[:depth]))
        counts[key] = counts.get(key, 0) + 1
    return counts


# =====================================================================================
# the parent: one child per variant, slopes and RESULT lines
# =====================================================================================


def slope(values: Sequence[float]) -> float:
    """Least-squares slope per run of the second half of `values`."""
    tail = list(values)[len(values) // 2:]
    n = len(tail)
    if n < 2:
        raise BenchError("too few runs for a slope (use --runs 4 or more)")
    mean_x, mean_y = (n - 1) / 2, sum(tail) / n
    return sum((x - mean_x) * (y - mean_y) for x, y in enumerate(tail)) / sum((x - mean_x) ** 2 for x in range(n))


def _run_variant(scratch: Path, variant: str, engine: str, runs: int) -> Dict[str, Any]:
    # Short paths: Ray's session sockets live below TMPDIR (AF_UNIX allows 107 bytes).
    home = scratch / f"{engine[0]}{variant[0]}"
    env = {**isolated_env(home), **RAY_CHILD_ENV, "ZENML_REPOSITORY_PATH": str(home / "no-repository")}
    started = time.perf_counter()
    payload = run_child(
        [str(Path(__file__).resolve()), "--child", variant, engine, str(runs)],
        env, scratch / f"{engine}-{variant}.log", timeout_s=300 + 120 * runs,
    )
    samples = payload["samples"]
    slopes = {measure: slope([s[measure] for s in samples]) for measure in MEASURES}
    first, last = samples[0], samples[-1]
    print(
        f"  {engine:5s} {variant:8s} " + "  ".join(f"{slopes[m]:+9.3f}" for m in MEASURES)
        + f"   rss {first['rss_mb']:.0f}->{last['rss_mb']:.0f} MB, threads {first['threads']}->{last['threads']},"
        f" fds {first['fds']}->{last['fds']}, tmp {first['tmp_entries']}->{last['tmp_entries']},"
        f" {sum(s['run_s'] for s in samples) / len(samples):.1f} s/run ({time.perf_counter() - started:.0f} s)",
        flush=True,
    )
    if variant == "process":
        print(f"      in temp dirs after the last run: {payload['live']}", flush=True)
    if payload["left"]:
        print(f"      left in temp dirs at the end: {payload['left']}", flush=True)
    return slopes


def run(scratch: Path, engines: Sequence[str], modes: Sequence[str], runs: int) -> None:
    header = "  ".join(f"{m + '/run':>9s}" for m in MEASURES)
    print(f"slopes per run over runs {runs // 2 + 1}-{runs} of {runs} (second half):")
    print(f"  {'':5s} {'variant':8s} {header}")
    figures: Dict[str, Dict[str, float]] = {"zenml": _run_variant(scratch, "zenml", "zenml", runs)}
    for measure in MEASURES:
        result(f"soak_zenml_{measure}_per_run", value=figures["zenml"][measure])
    for engine in engines:
        for variant in ("bare", *modes):
            slopes = figures[f"{engine}_{variant}"] = _run_variant(scratch, variant, engine, runs)
            for measure in MEASURES:
                result(f"soak_{engine}_{variant}_{measure}_per_run", value=slopes[measure])
        for mode in modes:
            # What our component adds: a run of ours is a run of ZenML plus (default) one
            # engine cycle; with reuse=process, no engine cycle at all.
            others = figures["zenml"]["rss_mb"] + (figures[f"{engine}_bare"]["rss_mb"] if mode == "default" else 0.0)
            result(f"soak_{engine}_{mode}_rss_ours_mb_per_run", value=figures[f"{engine}_{mode}"]["rss_mb"] - others)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engines", default=",".join(ENGINES), help="comma-separated: spark,dask,ray")
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated: default,process")
    parser.add_argument("--runs", type=int, default=24, help="runs per variant (default 24)")
    parser.add_argument("--child", nargs=3, metavar=("VARIANT", "ENGINE", "RUNS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        variant, engine, runs = args.child
        child(variant, engine, int(runs))
        return 0
    engines = [e for e in args.engines.split(",") if e]
    modes = [m for m in args.modes.split(",") if m]
    unknown = sorted(set(engines) - set(ENGINES)) + sorted(set(modes) - set(MODES))
    if unknown:
        parser.error(f"unknown engine(s) or mode(s): {', '.join(unknown)}")
    return run_bench("bench-soak-", lambda scratch: run(scratch, engines, modes, args.runs), isolated=False)


if __name__ == "__main__":
    sys.exit(main())
