"""What recording a step's usage and keeping the engine's record of it cost, per engine.

Three variants of the same engine component (bench/pipelines_soak.py's sizing, with
`reuse: process` so that no engine start is in the figures), each in fresh processes of its
own, in alternating rounds so that the machine's drift hits all of them alike:

  off      record_usage=false, keep_step_record=false
  usage    record_usage=true,  keep_step_record=false
  record   record_usage=true,  keep_step_record=true

Each child runs the soak pipeline (`STEPS` steps with a small job on the engine) `--runs`
times and reports each run's wall time (the first run of a child, which pays warm-up, is
dropped), the time the core's recording took per step (`BaseEngine._record_step` at the
end of each step, plus `_take_later_usage`, where a step left its usage for the next
step's end, timed directly), and the bytes of the records kept in the artifact store. Per engine:

  RESULT usage_cost_<engine>_<variant>_ms_per_step value=<median run time - off's, per step>
  RESULT usage_cost_<engine>_<variant>_hook_ms value=<median time in those hooks per step>
  RESULT usage_cost_<engine>_<variant>_vs_off ratio=<median run time / off's>
  RESULT usage_cost_<engine>_record_bytes_per_step value=<bytes of the kept record per step>

Target (issue 26): at most max(3% of a step's time, 50 ms) per step for what is on by
default. The run-time difference includes what recording costs inside the engine while
the step runs (Spark's event log writer, say); the hook time is the end-of-step part alone.

Run from the repository root:

    .venv/bin/python bench/usage_cost.py [--engines spark,dask,ray] [--runs 8] [--rounds 2]

With `--ray-address HOST:PORT` the Ray component attaches to that cluster (started by
hand, e.g. `ray start --head --node-ip-address=127.0.0.1 --num-cpus=1`) instead of owning
one: what a step waits there for the task events of the cluster's processes. Its results
are named `usage_cost_ray_attached_*`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import RAY_CHILD_ENV, BenchError, emit, isolated_env, result, run_bench, run_child  # noqa: E402

ENGINES = ("spark", "dask", "ray")
_RAY_ADDRESS_ENV = "USAGE_COST_RAY_ADDRESS"
VARIANTS = {
    "off": {"record_usage": False, "keep_step_record": False},
    "usage": {"record_usage": True, "keep_step_record": False},
    "record": {"record_usage": True, "keep_step_record": True},
}


# =====================================================================================
# the child: N runs of the soak pipeline with one variant
# =====================================================================================


def _activate_stack(engine: str, options: Dict[str, Any]) -> None:
    from zenml.client import Client
    from zenml.enums import StackComponentType

    from bench.pipelines_soak import COMPONENT_CONFIG
    from zenml_compute_engines.flavors.registration import register_flavors

    client = Client()
    kind = StackComponentType.FEATURE_STORE
    register_flavors()
    address = os.environ.get(_RAY_ADDRESS_ENV)
    base = {"address": address} if engine == "ray" and address else COMPONENT_CONFIG[engine]
    config = {**base, "reuse": "process", **options}
    client.create_stack_component(name=engine, flavor=engine, component_type=kind, configuration=config)
    client.create_stack(
        name=engine,
        components={StackComponentType.ORCHESTRATOR: "default", StackComponentType.ARTIFACT_STORE: "default", kind: engine},
    )
    client.activate_stack(engine)


def _record_bytes(run: Any) -> List[int]:
    """Bytes of each step's kept record (the files in its artifact's folder)."""
    import os

    sizes = []
    for step in run.steps.values():
        record = (step.run_metadata.get("compute_engine") or {}).get("record") or {}
        uri = record.get("uri")
        if uri:
            sizes.append(sum(os.path.getsize(os.path.join(uri, name)) for name in os.listdir(uri)))
    return sizes


def child(variant: str, engine: str, runs: int) -> None:
    from zenml.client import Client

    from bench.pipelines_soak import STEPS, soak_pipeline
    from zenml_compute_engines import shutdown_engines
    from zenml_compute_engines.flavors.engine import BaseEngine

    _activate_stack(engine, VARIANTS[variant])
    in_hooks = [0.0]

    def timed(hook: Any) -> Any:
        def timed_hook(self: Any, *args: Any) -> None:
            started = time.perf_counter()
            try:
                hook(self, *args)
            finally:
                in_hooks[0] += time.perf_counter() - started

        return timed_hook

    # A step's part: at its end, and what it left for the next step's end (Ray's wait for
    # its last task events).
    BaseEngine._record_step = timed(BaseEngine._record_step)  # type: ignore[method-assign]
    BaseEngine._take_later_usage = timed(BaseEngine._take_later_usage)  # type: ignore[method-assign]
    run_s, hook_s, sizes = [], [], []
    for _ in range(runs):
        in_hooks[0] = 0.0
        started = time.perf_counter()
        run = soak_pipeline(engine=engine)
        run_s.append(time.perf_counter() - started)
        hook_s.append(in_hooks[0] / STEPS)
        if "completed" not in str(run.status).lower():
            raise BenchError(f"run ended {run.status}")
        sizes += _record_bytes(Client().get_pipeline_run(run.id))
    shutdown_engines()
    emit({"run_s": run_s, "hook_s": hook_s, "record_bytes": sizes})


# =====================================================================================
# the parent: rounds of one child per variant, medians and RESULT lines
# =====================================================================================


def _run_child(scratch: Path, engine: str, variant: str, round_: int, runs: int) -> Dict[str, Any]:
    home = scratch / f"{engine[0]}{variant[0]}{round_}"  # short: Ray's sockets live below TMPDIR
    env = {**isolated_env(home), **RAY_CHILD_ENV, "ZENML_REPOSITORY_PATH": str(home / "no-repository")}
    return run_child(
        [str(Path(__file__).resolve()), "--child", variant, engine, str(runs)],
        env, scratch / f"{engine}-{variant}-{round_}.log", timeout_s=300 + 60 * runs,
    )


def run(scratch: Path, engines: Sequence[str], runs: int, rounds: int) -> None:
    from bench.pipelines_soak import STEPS

    for engine in engines:
        run_s: Dict[str, List[float]] = {v: [] for v in VARIANTS}
        hook_s: Dict[str, List[float]] = {v: [] for v in VARIANTS}
        sizes: List[int] = []
        for round_ in range(rounds):
            for variant in VARIANTS:
                payload = _run_child(scratch, engine, variant, round_, runs)
                run_s[variant] += payload["run_s"][1:]  # the first run warms up
                hook_s[variant] += payload["hook_s"][1:]
                sizes += payload["record_bytes"]
        label = f"{engine}_attached" if engine == "ray" and os.environ.get(_RAY_ADDRESS_ENV) else engine
        off = statistics.median(run_s["off"])
        print(f"  {engine}: a run of {STEPS} steps takes {off:.3f} s with recording off "
              f"({off / STEPS * 1000:.0f} ms per step)", flush=True)
        for variant in ("usage", "record"):
            median = statistics.median(run_s[variant])
            added_ms = (median - off) / STEPS * 1000
            hook_ms = statistics.median(hook_s[variant]) * 1000
            print(f"    {variant:6s} +{added_ms:7.1f} ms per step (end-of-step hook {hook_ms:.1f} ms), "
                  f"{median / off:.3f}x the run", flush=True)
            result(f"usage_cost_{label}_{variant}_ms_per_step", value=added_ms)
            result(f"usage_cost_{label}_{variant}_hook_ms", value=hook_ms)
            result(f"usage_cost_{label}_{variant}_vs_off", ratio=median / off)
        if sizes:
            result(f"usage_cost_{label}_record_bytes_per_step", value=statistics.median(sizes))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engines", default=",".join(ENGINES), help="comma-separated: spark,dask,ray")
    parser.add_argument("--runs", type=int, default=8, help="pipeline runs per child (default 8)")
    parser.add_argument("--rounds", type=int, default=2, help="children per variant (default 2)")
    parser.add_argument("--ray-address", help="attach the Ray component to this cluster (HOST:PORT)")
    parser.add_argument("--child", nargs=3, metavar=("VARIANT", "ENGINE", "RUNS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.ray_address:
        os.environ[_RAY_ADDRESS_ENV] = args.ray_address  # the children read it
    if args.child:
        variant, engine, runs = args.child
        child(variant, engine, int(runs))
        return 0
    engines = [e for e in args.engines.split(",") if e]
    unknown = sorted(set(engines) - set(ENGINES))
    if unknown:
        parser.error(f"unknown engine(s): {', '.join(unknown)}")
    if args.runs < 2:
        parser.error("--runs must be 2 or more (the first run of each child warms up)")
    return run_bench("bench-usage-", lambda scratch: run(scratch, engines, args.runs, args.rounds), isolated=False)


if __name__ == "__main__":
    sys.exit(main())
