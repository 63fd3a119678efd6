"""Helpers shared by the bench scripts: scratch dirs, isolated ZenML env, child processes, output.

Import-light on purpose (no zenml, no pyspark): the parent of `engine_reuse.py` only
spawns children and prints figures.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parent.parent  # the ZenML source root (pipeline modules live below it)
MARKER = "BENCH_JSON "


class BenchError(RuntimeError):
    """A benchmark could not produce a valid figure."""


# ---- scratch space and environment ---------------------------------------------------


class Scratch:
    """A temp dir holding everything a bench writes (ZenML store, artifacts, Spark dirs).

    Removed on exit, also on SIGTERM (turned into SystemExit so `finally` blocks run).
    """

    def __init__(self, prefix: str) -> None:
        self.path = Path(tempfile.mkdtemp(prefix=prefix))
        self._previous_sigterm: Any = None

    def __enter__(self) -> "Scratch":
        if _in_main_thread():
            self._previous_sigterm = signal.signal(signal.SIGTERM, _raise_system_exit)
        return self

    def __exit__(self, *exc: Any) -> None:
        if _in_main_thread() and self._previous_sigterm is not None:
            signal.signal(signal.SIGTERM, self._previous_sigterm)
        shutil.rmtree(self.path, ignore_errors=True)


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _raise_system_exit(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def isolated_env(home: Path) -> Dict[str, str]:
    """Environment for a private ZenML store and Spark scratch dirs under `home`.

    Must be in place before `zenml` or the Spark JVM start in the process that uses it.
    """
    tmp = home / "tmp"
    spark_local = home / "spark-local"
    tmp.mkdir(parents=True, exist_ok=True)
    spark_local.mkdir(parents=True, exist_ok=True)
    return {
        "ZENML_CONFIG_PATH": str(home / "zenml-config"),
        "ZENML_CUSTOM_SOURCE_ROOT": str(ROOT),
        "ZENML_ANALYTICS_OPT_IN": "false",
        "ZENML_ENABLE_RICH_TRACEBACK": "false",
        "AUTO_OPEN_DASHBOARD": "false",
        "ZENML_LOGGING_COLORS_DISABLED": "true",
        "SPARK_LOCAL_IP": "127.0.0.1",
        "SPARK_LOCAL_DIRS": str(spark_local),  # blockmgr-*, spark-* dirs of every variant
        "SPARK_SUBMIT_OPTS": f"-Djava.io.tmpdir={tmp}",  # the driver JVM's own temp files
        "TMPDIR": str(tmp),  # PySpark's gateway handshake files, Python temp files
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
        # Sessions built by hand start Python workers with PYSPARK_PYTHON (default: `python3`
        # on PATH, possibly another environment).
        "PYSPARK_PYTHON": sys.executable,
    }


def apply_isolated_env(home: Path) -> None:
    """Set `isolated_env(home)` in this process (call before importing zenml or pyspark)."""
    if "zenml" in sys.modules or "pyspark" in sys.modules:
        raise BenchError("apply_isolated_env() must run before zenml or pyspark are imported")
    os.environ.update(isolated_env(home))
    tempfile.tempdir = None  # re-read TMPDIR
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))


def run_bench(
    prefix: str,
    body: Callable[[Path], None],
    *,
    isolated: bool = True,
    leftovers: Optional[Callable[[float], List[Any]]] = None,
    leftover_label: str = "processes",
) -> int:
    """What every bench script's main does: a scratch dir (its ZenML store and artifacts,
    set in this process unless `isolated=False`), the body, a check that no engine
    process outlived it, the total time. Returns the exit status."""
    started = time.perf_counter()
    try:
        with Scratch(prefix) as scratch:
            if isolated:
                apply_isolated_env(scratch.path)
            body(scratch.path)
            left = leftovers(15.0) if leftovers is not None else []
            if left:
                raise BenchError(f"{leftover_label} left: {[p.pid for p in left]}")
    except BenchError as e:
        print(f"bench failed: {e}", file=sys.stderr)
        return 1
    print(f"total bench time {time.perf_counter() - started:.0f} s")
    return 0


# ---- child processes -------------------------------------------------------------------


def emit(payload: Dict[str, Any]) -> None:
    """Print a child's result on its marker line (the parent parses the last one)."""
    print(MARKER + json.dumps(payload), flush=True)


def run_child(
    args: Sequence[str], env: Dict[str, str], log_path: Path, timeout_s: float
) -> Dict[str, Any]:
    """Run `python <args>` in a fresh process (own process group) and return its marker JSON.

    Its output goes to `log_path`; the tail is shown when it fails. Whatever is left
    in its process group afterwards (a driver JVM that outlived it) is killed and
    reported as an error.
    """
    full_env = {**os.environ, **env}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, *args],
            cwd=str(ROOT),
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            code = proc.wait(timeout=timeout_s)
        except BaseException:
            _kill_group(proc.pid)
            proc.wait()
            raise BenchError(f"child {' '.join(args)} timed out or was interrupted; log:\n{tail(log_path)}")
    leaked = _kill_group(proc.pid)
    text = log_path.read_text(errors="replace")
    if code != 0:
        raise BenchError(f"child {' '.join(args)} exited with {code}; log:\n{tail(log_path)}")
    if leaked:
        raise BenchError(f"child {' '.join(args)} left processes behind (killed): {leaked}")
    payloads = [line[len(MARKER):] for line in text.splitlines() if line.startswith(MARKER)]
    if not payloads:
        raise BenchError(f"child {' '.join(args)} printed no {MARKER.strip()} line; log:\n{tail(log_path)}")
    return json.loads(payloads[-1])


def _kill_group(pgid: int, settle_s: float = 5.0) -> List[str]:
    """Kill what is left of the process group `pgid` (ours: the child and what it started)."""
    import psutil

    deadline = time.time() + settle_s
    while True:
        left = []
        for proc in psutil.process_iter(["pid", "name"]):
            try:
                if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                    left.append(proc)
            except (ProcessLookupError, psutil.Error, OSError):
                pass
        if not left or time.time() >= deadline:
            break
        time.sleep(0.2)  # give a JVM on its way out the chance to exit by itself
    described = []
    for proc in left:
        try:
            described.append(f"{proc.pid} {proc.name()}")
            proc.kill()
        except psutil.Error:
            pass
    return described


def tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# ---- processes and Spark -----------------------------------------------------------------


def java_descendants() -> List[Any]:
    """Live `java` processes below this one."""
    import psutil

    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if proc.name() == "java" and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except psutil.NoSuchProcess:
            pass
    return found


def dask_worker_descendants() -> List[Any]:
    """Live Dask worker/nanny processes below this one.

    A `LocalCluster(processes=True)` starts its workers as `multiprocessing` spawn
    children (`python -c "from multiprocessing.spawn import spawn_main; ..."`). The
    multiprocessing resource tracker (also a python child, exiting with its parent) is
    not Dask's and is not counted.
    """
    import psutil

    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if proc.status() == psutil.STATUS_ZOMBIE or not proc.name().startswith("python"):
                continue
            cmdline = " ".join(proc.cmdline())
            if "resource_tracker" in cmdline:
                continue
            if "multiprocessing" in cmdline or "distributed" in cmdline or " dask " in f" {cmdline} ":
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
            pass
    return found


def wait_none_left(find: Any, timeout_s: float = 15.0) -> List[Any]:
    """Wait until `find()` returns no processes; returns those still alive after `timeout_s`."""
    deadline = time.time() + timeout_s
    while True:
        left = find()
        if not left or time.time() >= deadline:
            return left
        time.sleep(0.1)


def wait_no_java(timeout_s: float = 15.0) -> List[Any]:
    """Wait for java children to exit; returns those still alive after `timeout_s`."""
    return wait_none_left(java_descendants, timeout_s)


def wait_no_dask_workers(timeout_s: float = 15.0) -> List[Any]:
    """Wait for Dask worker processes below this one to exit; returns those still alive."""
    return wait_none_left(dask_worker_descendants, timeout_s)


def spark_base_conf() -> Dict[str, str]:
    """The start-up conf our Spark engine uses for an embedded `local[N]` engine with the UI off.

    Hand-built sessions (seed, floor, raw) use the same so only the lifecycle differs.
    """
    return {
        "spark.ui.enabled": "false",
        "spark.driver.host": "127.0.0.1",
        "spark.driver.bindAddress": "127.0.0.1",
        "spark.pyspark.python": sys.executable,
    }


def stop_spark_completely(session: Any = None) -> None:
    """Stop a hand-built session and the driver JVM PySpark keeps after `stop()`."""
    from zenml_compute_engines.flavors.spark.engine import shutdown_driver_jvm

    if session is not None:
        session.stop()
    shutdown_driver_jvm()


# ---- Dask ------------------------------------------------------------------------------------


def dask_cluster_kwargs(n_workers: int = 1) -> Dict[str, Any]:
    """`LocalCluster` kwargs for hand-built clusters (seed, floor, raw), sized like the
    engine component the benches configure (1 thread per worker, worker processes) and
    bound to loopback like our engine's, so only the lifecycle differs. The dashboard
    port is `127.0.0.1:0`: what `dashboard_address=":0"` does, without listening on
    every interface (the dashboard itself needs bokeh, absent here: only the scheduler's
    small HTTP endpoint starts, for seed and ours alike).
    """
    return {
        "n_workers": n_workers,
        "threads_per_worker": 1,
        "processes": True,
        "host": "127.0.0.1",
        "dashboard_address": "127.0.0.1:0",
    }


# ---- Ray ---------------------------------------------------------------------------------------

# Environment of the processes that start a Ray (the Ray rows' children), on top of
# `isolated_env`. Ray 2.60 switches a process to token auth at its first local `ray.init`
# when RAY_AUTH_MODE is unset (and writes ~/.ray/auth_token if none exists): the bench runs
# every variant without token auth, as the tests do (tests/support/ray_cluster.py), and
# without usage-stats reporting. Ray's session dirs go below TMPDIR (the scratch dir).
RAY_CHILD_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}

RAY_DAEMONS = ("raylet", "gcs_server")
# Ray's Python helpers (dashboard agent, runtime-env agent, log monitor), by the script they run.
_RAY_SCRIPTS = ("ray/dashboard/", "ray/autoscaler/", "ray/_private/log_monitor", "ray/_private/runtime_env")


def ray_descendants() -> List[Any]:
    """Live Ray processes below this one: raylet, gcs_server, workers (`ray::...`) and
    Ray's Python helper processes."""
    import psutil

    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            name = proc.name()
            if name in RAY_DAEMONS or name.startswith("ray::"):
                found.append(proc)
                continue
            cmdline = " ".join(proc.cmdline())
            if cmdline.startswith("ray::") or any(script in cmdline for script in _RAY_SCRIPTS):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
            pass
    return found


def ray_init_kwargs(num_cpus: int, object_store_memory: int) -> Dict[str, Any]:
    """`ray.init` kwargs for hand-started Rays (seed, floor): what our engine passes for an
    owned Ray with this sizing and the dashboard off (flavors/ray/engine.py `_start`; the
    options it passes as None are Ray's defaults and left out). Call it inside
    `zenml_compute_engines.flavors.ray.engine._loopback_node_ip(True)`, as our engine does, so that every Ray
    socket binds to 127.0.0.1.
    """
    return {
        "address": "local",  # always a new Ray, never RAY_ADDRESS or a `ray start` cluster
        "num_cpus": num_cpus,
        "object_store_memory": object_store_memory,
        "include_dashboard": False,
        "dashboard_host": "127.0.0.1",
        "log_to_driver": True,
    }


# ---- traffic ------------------------------------------------------------------------------


class ByteCountingRelay:
    """A TCP relay on 127.0.0.1 to `target_port` that counts the bytes the target sends
    back (for protocols a bench cannot proxy at the HTTP level, e.g. gRPC)."""

    def __init__(self, target_port: int) -> None:
        import socket
        import threading

        self.target_port = target_port
        self.received = 0
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        threading.Thread(target=self._accept, name="byte-relay", daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _accept(self) -> None:
        import socket
        import threading

        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            threading.Thread(target=self._pipe, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, True), daemon=True).start()

    def _pipe(self, source: Any, sink: Any, count: bool) -> None:
        try:
            while True:
                chunk = source.recv(65536)
                if not chunk:
                    break
                if count:
                    with self._lock:
                        self.received += len(chunk)
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.close()
                except OSError:
                    pass

    def close(self) -> None:
        self._server.close()


# ---- numbers and output --------------------------------------------------------------------


def median(values: Iterable[float]) -> float:
    values = list(values)
    if not values:
        raise BenchError("no measurements")
    return statistics.median(values)


def result(name: str, *, ratio: Optional[float] = None, value: Optional[float] = None) -> None:
    """Print one figure: exactly `RESULT <name> ratio=<n>` or `RESULT <name> value=<n>`."""
    if (ratio is None) == (value is None):
        raise ValueError("give exactly one of ratio/value")
    kind, number = ("ratio", ratio) if ratio is not None else ("value", value)
    assert number is not None
    if number != number or number in (float("inf"), float("-inf")):
        raise BenchError(f"{name}: not a number ({number})")
    text = f"{number:.3f}" if abs(number) >= 0.1 or number == 0 else f"{number:.6f}"
    print(f"RESULT {name} {kind}={text}", flush=True)


def fmt_s(values: Sequence[float]) -> str:
    return "[" + ", ".join(f"{v:.2f}" for v in values) + "]"


def rotated(variants: Sequence[str], repeat: int) -> Tuple[str, ...]:
    """The variants in the order of one repeat: rotated, so none always runs first."""
    shift = repeat % len(variants)
    return tuple(variants[shift:]) + tuple(variants[:shift])


def print_medians(
    times: Dict[str, List[float]], phases: Dict[str, List[Dict[str, float]]], digits: int = 2
) -> Dict[str, float]:
    """Print each variant's median, runs and median phases; return the medians."""
    medians = {variant: median(runs) for variant, runs in times.items()}
    for variant, runs in times.items():
        keys = list(phases[variant][0]) if phases.get(variant) else []
        detail = ", ".join(f"{k} {median(p.get(k, 0.0) for p in phases[variant]):.{digits}f}" for k in keys)
        print(f"  {variant:5s} {medians[variant]:6.2f} s  runs={fmt_s(runs)}  ({detail})")
    return medians
