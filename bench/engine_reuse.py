"""Engine reuse across the steps of a run, and the hook overhead of an engine component.

What it measures, per row of the ENGINES table (Spark, Dask, Ray):

1. A 5-step pipeline whose every step runs a small Spark job (range + groupBy + count,
   small ints passed between steps), in three variants, each in a FRESH child process
   with the local orchestrator and an isolated ZenML store:
     seed  - no engine on the stack; every step `getOrCreate()` ... `stop()`
     floor - no engine on the stack; one session built by hand before the pipeline call,
             reused by the steps, never stopped during the run (its build is timed)
     ours  - a stack with our Spark engine component (master=local[2], ui_enabled=False,
             prestart=never: the engine starts when the first step asks); steps call
             `zenml_compute_engines.spark_session()`; the component stops the engine (and its driver
             JVM) when the run ends, inside the pipeline call; its driver JVM maps
             Spark's classes from the class archive (jvm_class_cache, on by default,
             recorded by the warm stack's untimed run below if missing), which the
             hand-built seed and floor do not use
     warm  - the same with prestart=auto on a stack of its own whose
             pipeline ran once before the repeats (untimed): the run's history says the
             steps use the engine, so it starts while ZenML prepares the run
             (flavors/prestart.py)
   Timed: (session build +) the pipeline call, inside the child. Imports happen before the
   clock starts; the pipeline call loads the active stack (ZenML's client, its store, the
   stack's components), as in a script that calls its pipeline (`python run.py`), the same
   in every variant, and the child times that load. The reuse ratios leave it out (what the
   engine's lifecycle costs, the stack loaded); the warm-start ratio keeps it, since a
   warm start overlaps it. Variants are
   interleaved (rotated each repeat); medians over the repeats. A table splits each
   variant's time into the stack load, session build/start, Spark jobs, stop() in steps,
   our hooks, the engine stop at the end of the run, ZenML's publishing of step metadata
   and the rest (ZenML's own step overhead), from perf_counter wrappers installed in the
   children.
     RESULT spark_reuse ratio=<ours/seed, without the stack load>
     RESULT spark_vs_floor ratio=<ours/floor, without the stack load>  (target <= 1.10)
     RESULT spark_warmstart_vs_floor ratio=<warm/floor>                (target <= 0.85)
   The Dask row (bench/pipelines_dask.py) is timed and split the same way: every step
   builds a pandas frame, `from_pandas` + a column transform + a groupby count, computed
   through the client (small ints between steps); every cluster is a
   LocalCluster(n_workers=1, threads_per_worker=1, processes=True) on 127.0.0.1:
     seed  - every step builds `LocalCluster(...)` + `Client(cluster)` and ends with
             `client.close(); cluster.close()` (the per-step pattern users write by hand)
     floor - one cluster + client built by hand before the pipeline call (timed), reused,
             closed after the clock stops
     ours  - a stack with our Dask engine component (same sizing); steps call
             `zenml_compute_engines.dask_client()`; the engine stops its cluster when the run ends,
             inside the pipeline call
     RESULT dask_reuse ratio=<ours/seed>               (target <= 0.50)
     RESULT dask_vs_floor ratio=<ours/floor>           (informational)
     RESULT dask_warmstart_vs_floor ratio=<warm/floor> (target <= 0.95)
   The Ray row (bench/pipelines_ray.py) likewise: every step `ray.put`s 4 partitions of
   `np.arange(rows)` and counts rows per key with one `@ray.remote` task each (`ray.get`,
   small ints between steps); every Ray is a local one with num_cpus=1, a 100 MiB object
   store, no dashboard, on 127.0.0.1, started with the `ray.init` arguments our engine
   passes (bench/_common.py `ray_init_kwargs`), RAY_AUTH_MODE=disabled in every variant:
     seed  - every step `ray.init(address="local", ...)` ... `ray.shutdown()`
     floor - one `ray.init` by hand before the pipeline call (timed), reused, shut down
             after the clock stops
     ours  - a stack with our Ray engine component (same sizing); steps call
             `zenml_compute_engines.ray_runtime()`; the engine shuts Ray down when the run ends,
             inside the pipeline call
     RESULT ray_reuse ratio=<ours/seed>                (target <= 0.50)
     RESULT ray_vs_floor ratio=<ours/floor>            (informational)
     RESULT ray_warmstart_vs_floor ratio=<warm/floor>  (target <= 0.95)
2. Hook overhead (rows with a hook_result: Spark; the hooks are the shared core's,
   flavors/engine.py): a child with the Spark engine on the stack (prestart=auto)
   runs a pipeline of engine-free steps; the component class's `prepare_step_run`,
   `get_step_run_metadata`, `cleanup_step_run` and the deferred `_end_of_step` are wrapped
   with perf_counter (in the bench process only) -> total hook time / steps; and
   `zenml_compute_engines.flavors.prestart.consider` (deciding, on the pipeline's thread, whether to begin the
   engine; the history lookup it may hand to a background thread is in the wall clock
   below only) -> time per run. The engine must not start.
     RESULT hook_overhead_ms value=<ms per engine-less step>   (target <= 5)
     RESULT wasted_prestart_ms value=<ms per engine-free run>   (target <= 5)
   The same child also runs the pipeline on a stack without the engine, interleaved, and
   prints the per-step wall-clock difference (informational; noisy).

Run from the repository root:

    .venv/bin/python bench/engine_reuse.py [--repeats 3] [--engines spark,dask,ray] [--server]

(default: every row of ENGINES; --server: every child is a client of a local ZenML server,
`zenml login --local` on 127.0.0.1, instead of the SQLite store, and the RESULT names gain
`_server`, e.g. hook_overhead_server_ms). Everything (ZenML store, artifacts, Spark scratch dirs,
Dask worker dirs, Ray session dirs) lives in one temp dir that is removed at the end; inside
each child the engine's processes (driver JVMs, Dask worker processes, raylet/gcs_server/Ray
workers and helpers) must be gone after cleanup, and every child's process group is checked
for leftover processes after it exits.
Exit status is non-zero when anything fails.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import (  # noqa: E402
    RAY_CHILD_ENV,
    BenchError,
    emit,
    fmt_s,
    isolated_env,
    median,
    result,
    rotated,
    run_bench,
    run_child,
)

VARIANTS = ("seed", "floor", "ours", "warm")


@dataclass(frozen=True)
class EngineBench:
    """One engine's row in the variant table.

    `module` is a module under the source root that provides the steps and helpers the
    children call (see bench/pipelines_spark.py for the interface).
    """

    flavor: str  # flavor name of our engine component
    module: str
    reuse_result: str  # RESULT name of ours/seed
    floor_result: str  # RESULT name of ours/floor
    warm_result: str  # RESULT name of warm/floor
    hook_result: Optional[str]  # RESULT name of the hook overhead, None to skip
    steps: int = 5
    rows: int = 200_000
    component_config: Dict[str, Any] = field(default_factory=dict)  # overrides module.COMPONENT_CONFIG
    child_env: Dict[str, str] = field(default_factory=dict)  # added to the env of its reuse/hooks children


ENGINES: Dict[str, EngineBench] = {
    "spark": EngineBench(
        flavor="spark",
        module="bench.pipelines_spark",
        reuse_result="spark_reuse",
        floor_result="spark_vs_floor",
        warm_result="spark_warmstart_vs_floor",
        hook_result="hook_overhead_ms",
    ),
    # The hooks are the shared core's (flavors/engine.py); the Spark row measures them.
    "dask": EngineBench(
        flavor="dask",
        module="bench.pipelines_dask",
        reuse_result="dask_reuse",
        floor_result="dask_vs_floor",
        warm_result="dask_warmstart_vs_floor",
        hook_result=None,
    ),
    "ray": EngineBench(
        flavor="ray",
        module="bench.pipelines_ray",
        reuse_result="ray_reuse",
        floor_result="ray_vs_floor",
        warm_result="ray_warmstart_vs_floor",
        hook_result=None,
        child_env=RAY_CHILD_ENV,
    ),
}

HOOKS = ("prepare_step_run", "get_step_run_metadata", "cleanup_step_run", "_end_of_step")
PLAIN_STACK = "plain"  # key of the engine-less stack in the setup payload


# =====================================================================================
# children (fresh processes; zenml and the engine library are imported only here)
# =====================================================================================


def _import_module(name: str) -> Any:
    import importlib

    return importlib.import_module(name)


def child_setup(engines: List[str]) -> None:
    """Create the store, register flavors, components and stacks; print the stack ids."""
    from zenml.client import Client
    from zenml.enums import StackComponentType

    from zenml_compute_engines.flavors.registration import register_flavors

    client = Client()
    kind = StackComponentType.FEATURE_STORE
    stacks = {PLAIN_STACK: str(client.get_stack("default").id)}
    register_flavors()
    for name in engines:
        bench = ENGINES[name]
        module = _import_module(bench.module)
        config = {**getattr(module, "COMPONENT_CONFIG", {}), **bench.component_config}
        for key, prestart in ((name, "never"), (f"{name}-warm", "auto")):
            component = f"bench-{key}"
            client.create_stack_component(
                name=component, flavor=bench.flavor, component_type=kind, configuration={**config, "prestart": prestart}
            )
            stack = client.create_stack(
                name=component,
                components={
                    StackComponentType.ORCHESTRATOR: "default",
                    StackComponentType.ARTIFACT_STORE: "default",
                    kind: component,
                },
            )
            stacks[key] = str(stack.id)
    emit({"stacks": stacks})


class Timers:
    """perf_counter wrappers around methods of a class, installed in a child only.

    Methods in `group` are hooks: only the outermost of nested hook calls is added to
    `group_total`, so a hook calling another is not counted twice. Every wrapped name also
    gets its own inclusive total, call count and worst call.
    """

    def __init__(self) -> None:
        self.total: Dict[str, float] = defaultdict(float)
        self.calls: Counter = Counter()
        self.worst: Dict[str, float] = defaultdict(float)
        self.group_total = 0.0
        self._depth = 0

    def reset(self) -> None:
        self.total.clear()
        self.calls.clear()
        self.worst.clear()
        self.group_total = 0.0

    def wrap(self, owner: Any, name: str, group: bool = False, label: Optional[str] = None) -> None:
        original = getattr(owner, name)
        timers = self
        key = label or name

        def timed(*args: Any, **kwargs: Any) -> Any:
            outer = group and timers._depth == 0
            if group:
                timers._depth += 1
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                spent = time.perf_counter() - start
                if group:
                    timers._depth -= 1
                timers.total[key] += spent
                timers.calls[key] += 1
                timers.worst[key] = max(timers.worst[key], spent)
                if outer:
                    timers.group_total += spent

        timed.__wrapped__ = original  # type: ignore[attr-defined]
        setattr(owner, name, timed)

    def wrap_property(self, owner: type, name: str) -> None:
        """Time a property's getter (e.g. `settings_class`, read by ZenML's compiler)."""
        import inspect
        import types

        prop = inspect.getattr_static(owner, name)
        holder = types.SimpleNamespace(fget=prop.fget)
        self.wrap(holder, "fget", label=name)
        setattr(owner, name, property(holder.fget))

    def snapshot(self) -> Dict[str, Any]:
        return {
            "hooks_total_s": self.group_total,
            "total_s": dict(self.total),
            "calls": dict(self.calls),
            "worst_s": dict(self.worst),
        }


def _install_zenml_timers(timers: Timers) -> Timers:
    """Time ZenML's publishing of step run metadata (what `get_step_run_metadata` returns)."""
    import zenml.orchestrators.step_runner as step_runner

    timers.wrap(step_runner, "publish_step_run_metadata")
    return timers


def _install_engine_timers(module: Any, timers: Timers) -> Timers:
    import zenml_compute_engines.flavors.engine
    import zenml_compute_engines.flavors.prestart

    engine_class = module.component_class()
    for name in HOOKS:
        timers.wrap(engine_class, name, group=True)
    for name in ("session", "_start", "_stop", "_describe"):
        timers.wrap(engine_class, name)
    timers.wrap(zenml_compute_engines.flavors.engine, "_run_is_over")
    timers.wrap(zenml_compute_engines.flavors.prestart, "consider")
    timers.wrap_property(engine_class, "settings_class")
    for owner, name in getattr(module, "EXTRA_TIMERS", lambda: [])():
        timers.wrap(owner, name)
    return timers


def _warm_client() -> None:
    """Load the active stack before the clock starts."""
    from zenml.client import Client

    Client().active_stack  # noqa: B018


def _time_stack_load() -> Dict[str, float]:
    """{"at": perf_counter} once the pipeline call has first loaded the active stack (the
    client, its store, the stack's components)."""
    from zenml.client import Client

    loaded: Dict[str, float] = {}
    getter = Client.active_stack.fget

    def active_stack(self: Any) -> Any:
        stack = getter(self)
        loaded.setdefault("at", time.perf_counter())
        return stack

    Client.active_stack = property(active_stack)  # type: ignore[method-assign]
    return loaded


def _last_output(run: Any, step_name: str) -> Any:
    return run.steps[step_name].outputs["output"][0].load()


def _process_check(module: Any) -> Any:
    """(label, finder) of the processes an engine module's variants must not leave behind."""
    from bench._common import java_descendants

    return getattr(module, "PROCESS_LABEL", "java"), getattr(module, "engine_processes", java_descendants)


def child_reuse(engine: str, variant: str) -> None:
    from bench._common import wait_none_left

    bench = ENGINES[engine]
    module = _import_module(bench.module)
    label, engine_processes = _process_check(module)
    timers = _install_zenml_timers(Timers())
    ours = variant in ("ours", "warm")  # our component, lazy or begun while ZenML prepares
    if ours:
        _install_engine_timers(module, timers)

    stack_loaded = _time_stack_load()
    build_s = 0.0
    start = time.perf_counter()
    if variant == "floor":
        module.build_floor()
        build_s = time.perf_counter() - start
    call = time.perf_counter()
    run = module.reuse_pipeline(mode="ours" if ours else variant, steps=bench.steps, rows=bench.rows)
    wall_s = time.perf_counter() - start
    stack_load_s = stack_loaded["at"] - call

    # ---- checks and cleanup, off the clock ----
    procs_after_run = len(wait_none_left(engine_processes, 3.0)) if ours else None
    if variant == "floor":
        module.release_floor()
    else:
        from zenml_compute_engines import shutdown_engines

        shutdown_engines()
        module.release_leftovers()
    left = wait_none_left(engine_processes, 15.0)
    if left:
        raise BenchError(f"{label} processes left after cleanup: {[p.pid for p in left]}")
    status = str(run.status)
    if "completed" not in status.lower():
        raise BenchError(f"pipeline run ended {status}")
    got = _last_output(run, f"job_{bench.steps - 1}")
    expected = module.expected_total(bench.steps, bench.rows)
    if got != expected:
        raise BenchError(f"pipeline computed {got}, expected {expected}")

    first_step = run.steps["job_0"].run_metadata.get("compute_engine", {})
    if variant == "warm" and not first_step.get("prestarted"):
        raise BenchError(f"the warm variant's engine was not begun ahead of its first step: {first_step}")
    step_times = module.STEP_TIMES
    payload: Dict[str, Any] = {
        "variant": variant,
        "prestart_waited_s": first_step.get("prestart_waited_s"),
        "prestart_start_s": first_step.get("prestart_start_s"),
        "wall_s": wall_s,
        "build_s": build_s,
        "stack_load_s": stack_load_s,
        "steps_run": len(step_times),
        "acquire_s": sum(t["acquire"] for t in step_times),
        "job_s": sum(t["job"] for t in step_times),
        "release_s": sum(t["release"] for t in step_times),
        "procs_after_run": procs_after_run,
        "labels": {
            "process": label,
            "breakdown": getattr(module, "BREAKDOWN_LABELS", {}),
            "detail": [list(pair) for pair in getattr(module, "DETAIL_TIMERS", ())],
        },
    }
    payload["timers"] = timers.snapshot()
    emit(payload)


def child_hooks(engine: str, steps: int, repeats: int, plain_stack: str, engine_stack: str) -> None:
    bench = ENGINES[engine]
    module = _import_module(bench.module)
    timers = _install_engine_timers(module, Timers())
    from zenml_compute_engines.flavors.engine import live_engines

    def run_on(stack_id: str) -> float:
        os.environ["ZENML_ACTIVE_STACK_ID"] = stack_id
        _warm_client()
        start = time.perf_counter()
        run = module.idle_pipeline(steps=steps)
        spent = time.perf_counter() - start
        if "completed" not in str(run.status).lower():
            raise BenchError(f"engine-free pipeline ended {run.status}")
        return spent

    # Warm-up: one run per stack (ZenML's one-time costs; our component's instantiation).
    # Hook time counts from the engine stack's warm-up on: the first run is what a user
    # running a pipeline script in a fresh process gets.
    run_on(plain_stack)
    first_engine = run_on(engine_stack)
    first_hooks = timers.group_total
    plain: List[float] = []
    with_engine: List[float] = []
    for _ in range(repeats):
        plain.append(run_on(plain_stack))
        with_engine.append(run_on(engine_stack))
    from zenml_compute_engines.flavors import prestart

    if live_engines() or prestart._PENDING:
        raise BenchError(f"an engine-free pipeline started an engine: {live_engines()} {prestart._PENDING}")
    engine_steps = (repeats + 1) * steps
    calls = timers.calls
    if calls["prepare_step_run"] != engine_steps:
        raise BenchError(
            f"expected {engine_steps} prepare_step_run calls on the engine stack, saw "
            f"{calls['prepare_step_run']}: the hooks were not wrapped or did not fire"
        )
    for forbidden in ("session", "_start"):
        if calls[forbidden]:
            raise BenchError(f"engine-free steps called {forbidden} {calls[forbidden]} times")
    emit(
        {
            "steps_per_run": steps,
            "engine_steps": engine_steps,
            "first_run_hooks_s": first_hooks,
            "first_engine_run_s": first_engine,
            "timers": timers.snapshot(),
            "plain_s": plain,
            "engine_s": with_engine,
        }
    )


# =====================================================================================
# parent
# =====================================================================================


def _child(args: List[str]) -> List[str]:
    return ["-m", "bench.engine_reuse", "--child", *args]


BREAKDOWN = (
    ("stack_load", "stack load (in the call)"),
    ("session", "build/get session"),
    ("jobs", "spark jobs"),
    ("step_stop", "stop() in steps"),
    ("hooks", "our hooks excl. stop"),
    ("engine_stop", "engine stop"),
    ("jvm_exit", "  of which JVM exit"),
    ("metadata", "publish step metadata"),
    ("other", "ZenML + other"),
)


def _parts(payload: Dict[str, Any]) -> Dict[str, float]:
    """Where one run's wall time went (seconds); `other` is the remainder."""
    total = payload["timers"]["total_s"]
    engine_stop = total.get("_stop", 0.0)
    parts = {
        "stack_load": payload["stack_load_s"],
        "session": payload["build_s"] + payload["acquire_s"],
        "jobs": payload["job_s"],
        "step_stop": payload["release_s"],
        "hooks": payload["timers"]["hooks_total_s"] - engine_stop,
        "engine_stop": engine_stop,
        "metadata": total.get("publish_step_run_metadata", 0.0),
    }
    parts["other"] = payload["wall_s"] - sum(parts.values())
    parts["jvm_exit"] = total.get("shutdown_driver_jvm", 0.0)
    return parts


def _print_breakdown(
    runs: Dict[str, List[Dict[str, Any]]], labels: Dict[str, Optional[str]], detail: Sequence[Sequence[str]] = ()
) -> None:
    """A table of medians per part, and ours - floor per part.

    `labels` (an engine module's BREAKDOWN_LABELS) renames rows; None omits a row.
    `detail` (its DETAIL_TIMERS: timer name, label) adds a line of ours' extra timers.
    """
    parts = {v: [_parts(p) for p in runs[v]] for v in VARIANTS}
    med = {v: {k: median(x[k] for x in parts[v]) for k, _ in BREAKDOWN} for v in VARIANTS}
    print("  where the time goes (medians, s):")
    print("    " + f"{'':24s}" + "".join(f"{v:>8s}" for v in VARIANTS) + f"{'ours-floor':>12s}")
    for key, default_label in BREAKDOWN:
        label = labels.get(key, default_label)
        if label is None:
            continue
        row = "".join(f"{med[v][key]:8.3f}" for v in VARIANTS)
        print(f"    {label:24s}{row}{med['ours'][key] - med['floor'][key]:+12.3f}")
    ours = runs["ours"]
    t = lambda key: median(x["timers"]["total_s"].get(key, 0.0) for x in ours)  # noqa: E731
    c = lambda key: median(x["timers"]["calls"].get(key, 0) for x in ours)  # noqa: E731
    print(
        f"  ours detail (medians): _start={t('_start'):.3f} s, session() x{c('session'):.0f}={t('session'):.3f} s, "
        f"_run_is_over x{c('_run_is_over'):.0f}={t('_run_is_over'):.3f} s, "
        f"_describe x{c('_describe'):.0f}={t('_describe'):.3f} s, "
        f"publish_step_run_metadata x{c('publish_step_run_metadata'):.0f}={t('publish_step_run_metadata'):.3f} s"
    )
    if detail:
        print("  ours detail, inside _start/_stop (medians): "
              + ", ".join(f"{label} x{c(key):.0f}={t(key):.3f} s" for key, label in detail))


def _named(result_name: str, args: Any) -> str:
    """The RESULT name for this store: hook_overhead_ms -> hook_overhead_server_ms with --server."""
    if not args.server:
        return result_name
    if result_name.endswith("_ms"):
        return result_name[: -len("_ms")] + "_server_ms"
    return result_name + "_server"


def bench_engine(name: str, scratch: Path, env: Dict[str, str], stacks: Dict[str, str], args: Any) -> None:
    bench = ENGINES[name]
    runs: Dict[str, List[Dict[str, Any]]] = {v: [] for v in VARIANTS}
    stack_of = {"ours": stacks[name], "warm": stacks[f"{name}-warm"]}
    # The warm stack's earlier run (untimed): its history is what tells prestart=auto
    # that this pipeline's steps use the engine (nothing in their signatures does).
    run_child(_child(["reuse", "--engine", name, "--variant", "ours"]),
              {**env, **bench.child_env, "ZENML_ACTIVE_STACK_ID": stack_of["warm"]},
              scratch / f"{name}-warm-history.log", timeout_s=args.child_timeout)
    for repeat in range(args.repeats):
        for variant in rotated(VARIANTS, repeat):
            stack = stack_of.get(variant, stacks[PLAIN_STACK])
            log = scratch / f"{name}-{variant}-{repeat}.log"
            payload = run_child(
                _child(["reuse", "--engine", name, "--variant", variant]),
                {**env, **bench.child_env, "ZENML_ACTIVE_STACK_ID": stack},
                log,
                timeout_s=args.child_timeout,
            )
            runs[variant].append(payload)
            print(f"  {name} {variant:5s} repeat {repeat + 1}: {payload['wall_s']:.2f} s", flush=True)

    walls = {v: [p["wall_s"] for p in runs[v]] for v in VARIANTS}
    med = {v: median(walls[v]) for v in VARIANTS}
    # Without ZenML's loading of the stack: what the engine's lifecycle costs (the reuse rows).
    loaded = {v: median(p["wall_s"] - p["stack_load_s"] for p in runs[v]) for v in VARIANTS}
    print(f"{name}: {bench.steps}-step pipeline, wall time of (session build +) pipeline call, "
          f"median of {args.repeats} fresh processes (and without the call's stack load):")
    for variant in VARIANTS:
        print(f"  {variant:5s} {med[variant]:6.2f} s ({loaded[variant]:6.2f} s)  runs={fmt_s(walls[variant])}")
    labels = runs["ours"][0]["labels"]  # declared by the engine module (the parent never imports it)
    _print_breakdown(runs, labels["breakdown"], labels.get("detail", ()))
    ours = runs["ours"] + runs["warm"]
    print(f"  {labels['process']} processes left when ours' and warm's pipeline calls returned: "
          f"{sorted(set(x['procs_after_run'] for x in ours))} (the engine stops inside the call)")
    print(f"  ours - floor = {med['ours'] - med['floor']:+.2f} s; ours - seed = {med['ours'] - med['seed']:+.2f} s; "
          f"warm - floor = {med['warm'] - med['floor']:+.2f} s")
    warm = runs["warm"]
    print(f"  warm: the first step waited {median(x['prestart_waited_s'] for x in warm):.2f} s of a "
          f"{median(x['prestart_start_s'] for x in warm):.2f} s start begun while ZenML prepared the run (medians)")
    result(_named(bench.reuse_result, args), ratio=loaded["ours"] / loaded["seed"])
    result(_named(bench.floor_result, args), ratio=loaded["ours"] / loaded["floor"])
    result(_named(bench.warm_result, args), ratio=med["warm"] / med["floor"])

    if bench.hook_result is None:
        return
    payload = run_child(
        _child(
            [
                "hooks",
                "--engine", name,
                "--hook-steps", str(args.hook_steps),
                "--repeats", str(args.repeats),
                "--plain-stack", stacks[PLAIN_STACK],
                "--engine-stack", stacks[f"{name}-warm"],
            ]
        ),
        {**env, **bench.child_env},
        scratch / f"{name}-hooks.log",
        timeout_s=args.child_timeout,
    )
    steps = payload["engine_steps"]
    per_step_ms = payload["timers"]["hooks_total_s"] / steps * 1000
    first_ms = payload["first_run_hooks_s"] / payload["steps_per_run"] * 1000
    calls = payload["timers"]["calls"]
    totals = payload["timers"]["total_s"]
    worst = payload["timers"]["worst_s"]
    print(f"{name}: hook time per engine-less step with the engine on the stack "
          f"({steps} steps over {args.repeats + 1} runs of {payload['steps_per_run']} steps):")
    for hook in HOOKS:
        n = calls.get(hook, 0)
        print(
            f"  {hook:22s} calls={n:3d}  mean={totals.get(hook, 0.0) / max(n, 1) * 1e3:7.3f} ms  "
            f"worst={worst.get(hook, 0.0) * 1e3:7.3f} ms"
        )
    print(f"  first run (fresh component in the process): {first_ms:.4f} ms/step")
    runs = args.repeats + 1
    print(
        f"  not per step but per pipeline compile: settings_class read "
        f"{calls.get('settings_class', 0) / runs:.0f}x per run, "
        f"{totals.get('settings_class', 0.0) / runs * 1e3:.3f} ms per run"
    )
    plain_med, engine_med = median(payload["plain_s"]), median(payload["engine_s"])
    diff_ms = (engine_med - plain_med) / payload["steps_per_run"] * 1000
    print(
        f"  informational wall clock, {payload['steps_per_run']}-step engine-free pipeline, median of "
        f"{args.repeats}: without engine {plain_med:.2f} s, with engine {engine_med:.2f} s -> "
        f"{diff_ms:+.1f} ms/step (noisy)"
    )
    result(_named(bench.hook_result, args), value=per_step_ms)
    result(_named("wasted_prestart_ms", args), value=totals.get("consider", 0.0) / runs * 1e3)


def parse_args(argv: Optional[List[str]] = None) -> Any:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engines", default=",".join(ENGINES), help="comma-separated rows of ENGINES")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--hook-steps", type=int, default=10)
    parser.add_argument("--child-timeout", type=float, default=240.0)
    parser.add_argument(
        "--server", action="store_true",
        help="run every child against a local ZenML server (REST store) instead of SQLite; "
        "RESULT names gain '_server' (hook_overhead_server_ms)",
    )
    # internal: what a child process does
    parser.add_argument("--child", choices=("setup", "reuse", "hooks"), help=argparse.SUPPRESS)
    parser.add_argument("--engine", help=argparse.SUPPRESS)
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--plain-stack", help=argparse.SUPPRESS)
    parser.add_argument("--engine-stack", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main() -> int:
    args = parse_args()
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = [e for e in engines if e not in ENGINES]
    if unknown:
        print(f"unknown engine(s) {unknown}; known: {list(ENGINES)}", file=sys.stderr)
        return 2

    if args.child == "setup":
        child_setup(engines)
        return 0
    if args.child == "reuse":
        child_reuse(args.engine, args.variant)
        return 0
    if args.child == "hooks":
        child_hooks(args.engine, args.hook_steps, args.repeats, args.plain_stack, args.engine_stack)
        return 0

    def body(scratch: Path) -> None:
        # Every variant runs in a child process of its own, in this isolated environment.
        env = isolated_env(scratch)
        server = None
        if args.server:
            from examples._zenml_server import LocalZenMLServer

            server = LocalZenMLServer.start(Path(env["ZENML_CONFIG_PATH"]), base_env={**os.environ, **env})
            env = server.env
            print(f"every child is a client of the ZenML server at {server.url} (REST store)", flush=True)
        try:
            setup = run_child(_child(["setup", "--engines", ",".join(engines)]), env,
                              scratch / "setup.log", timeout_s=args.child_timeout)
            for name in engines:
                bench_engine(name, scratch, env, setup["stacks"], args)
        finally:
            if server is not None:
                server.stop()

    return run_bench("bench-engine-reuse-", body, isolated=False)


if __name__ == "__main__":
    sys.exit(main())
