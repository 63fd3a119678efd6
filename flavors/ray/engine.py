"""The Ray engine: starts, attaches to and shuts down Ray drivers (ray imported lazily)."""

from __future__ import annotations

import functools
import logging
import os
import queue
import shutil
import socket
import sys
import tempfile
import threading
import time
from contextlib import contextmanager, nullcontext
from dataclasses import replace
from types import MappingProxyType
from typing import Any, Callable, Dict, Iterator, List, Optional, Set
from uuid import UUID

from zenml_compute_engines.flavors.engine import BaseEngine, EngineError, LiveEngine, current_step_context, live_engines
from zenml_compute_engines.flavors.ray import reaper, usage
from zenml_compute_engines.flavors.ray.flavor import RayEngineConfig, RayEngineSettings, RayRuntime, _canonical, parse_address
from zenml_compute_engines.flavors.usage import StepRecord, StepUsage, UsageLater
from zenml_compute_engines.materializers.engine_record import EngineRecordFile

_LOOPBACK = ("127.0.0.1", "localhost", "::1")
# Ray replaces 127.0.0.1/localhost by the machine's routable IP (so that other nodes can
# reach it) unless "clusters" are disabled, which it reads from this variable at import
# time into `ray._private.ray_constants.ENABLE_RAY_CLUSTER`.
_CLUSTER_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
_RAY_DAEMONS = ("raylet", "gcs_server")
# A Ray Client server starts a "specific server" process per driver, and now and then that
# start fails on the server's side: the child dies at birth when forked from a process busy
# in gRPC (ray-project/ray#63202), or the server trips over an exited child while it looks
# it up (psutil.ZombieProcess). The driver gets this message; a second connection usually
# gets a healthy session.
_CLIENT_SPAWN_FAILED = "Initialization failure from server"
_CLIENT_SPAWN_ATTEMPTS = 3

logger = logging.getLogger(__name__)


@contextmanager
def _loopback_node_ip(enabled: bool) -> Iterator[None]:
    """Keep Ray on 127.0.0.1 while a driver starts or connects (and in what it spawns).

    The processes `ray.init` starts inherit the environment of that moment, and after
    init the driver reads its node IP from the node it joined, so both are restored.
    """
    if not enabled:
        yield
        return
    from ray._private import ray_constants

    previous_env = os.environ.get(_CLUSTER_ENV)
    previous = getattr(ray_constants, "ENABLE_RAY_CLUSTER", None)
    os.environ[_CLUSTER_ENV] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        if previous is not None:
            ray_constants.ENABLE_RAY_CLUSTER = previous
        if previous_env is None:
            os.environ.pop(_CLUSTER_ENV, None)
        else:
            os.environ[_CLUSTER_ENV] = previous_env


class _NotMainThreadFilter(logging.Filter):
    """Drop Ray's warning that `ray.init` outside the main thread sets no SIGTERM handler:
    the engine core owns SIGTERM handling (it shuts the engine down)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "SIGTERM handler is not set" not in record.getMessage()


@contextmanager
def _quiet_thread_warning() -> Iterator[None]:
    worker_logger = logging.getLogger("ray._private.worker")
    quiet = _NotMainThreadFilter()
    worker_logger.addFilter(quiet)
    try:
        yield
    finally:
        worker_logger.removeFilter(quiet)


def _probe(host: str, port: int, address: str, timeout: float) -> None:
    """Fail fast, naming the address, unless a gRPC server (Ray's GCS or Ray Client
    server) answers there: `ray.init` retries an unreachable head for a long time and
    hangs forever on a port that accepts TCP but never speaks gRPC."""
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as e:
        raise EngineError(f"Ray head {address} is unreachable ({host}:{port}: {e})") from e
    import grpc

    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    channel = grpc.insecure_channel(target)
    try:
        grpc.channel_ready_future(channel).result(timeout=max(0.1, deadline - time.monotonic()))
    except grpc.FutureTimeoutError:
        kind = "Ray Client server (--ray-client-server-port)" if address.startswith("ray://") else "head's GCS port (ray start --port)"
        raise EngineError(
            f"{address} accepts TCP connections but does not answer as a Ray gRPC endpoint "
            f"within {timeout:g}s; is it the {kind}?"
        ) from None
    finally:
        channel.close()


def _ray_children() -> Set[int]:
    """Pids of Ray daemons and workers below this process (psutil is a ZenML dependency)."""
    try:
        import psutil
    except ImportError:
        return set()
    pids = set()
    for proc in psutil.Process().children(recursive=True):
        try:
            name = proc.name()
            if name in _RAY_DAEMONS or name.startswith("ray::"):
                pids.add(proc.pid)
        except psutil.Error:
            pass
    return pids


def _kill(pids: Set[int]) -> None:
    try:
        import psutil
    except ImportError:
        return
    procs = []
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            proc.kill()
            procs.append(proc)
        except psutil.Error:
            pass
    psutil.wait_procs(procs, timeout=5)


def _same_cluster(address: str) -> bool:
    """Whether the GCS at `address` is the one this driver joined, not a new head that
    came up on the same port (the old driver's calls there fail as WrongClusterID)."""
    try:
        import ray
        from ray._raylet import GcsClient

        joined = ray._private.worker.global_worker.node.cluster_id
    except (ImportError, AttributeError):  # Ray internals moved: the port probe must do
        return True
    try:
        return GcsClient(address=address).cluster_id == joined
    except Exception:
        return False


def _owned_daemons() -> List[Any]:
    """An owned Ray's GCS and raylet processes (children of ours) that Ray keeps track of."""
    return [process for name in _RAY_DAEMONS for process in _owned_node_processes(name) or []]


def _forget_gcs_reader() -> None:
    """Drop the GCS reader Ray's global state may keep from an earlier connection: it is
    made on first use and dropped by `ray.shutdown()` only after the driver's own shutdown,
    so a shutdown given up at its bound (a lost cluster) leaves it pointing at the old
    cluster, and its first read of the new one would end the process (WrongClusterID).
    The next read makes a new one (Ray 2.40: `global_state_accessor`; later: with an
    underscore)."""
    from ray._private.state import state

    with getattr(state, "_init_lock", nullcontext()):
        for name in ("_global_state_accessor", "global_state_accessor"):
            if name in vars(state):  # an attribute, not Ray 2.60's property of the same name
                setattr(state, name, None)
                return


def _is_client_mode() -> bool:
    try:
        from ray.util.client import ray as client_ray

        return bool(client_ray.is_connected())
    except Exception:
        return False


def _http(url: Optional[str]) -> Optional[str]:
    if not url:
        return None
    return url if "://" in url else f"http://{url}"


_REFS_BEFORE_STEP = "refs_before_step"
# A step's task events, taken once for its usage and its timeline (`RayEngine._step_tasks`).
_STEP_TASKS = "step_tasks"
_TIMELINE_FILE = "ray_timeline.json"


def _driver_refs() -> Optional[Set[bytes]]:
    """The object ids (hex) this driver references, or None where it cannot tell (a Ray
    Client driver, or Ray's internals moved)."""
    if _is_client_mode():
        return None
    try:
        import ray

        return set(ray._private.worker.global_worker.core_worker.get_all_reference_counts())
    except AttributeError:
        return None


class _DriverThread:
    """Runs `ray.init` on a thread that lives until the engine stops.

    Ray ties the daemons it starts (gcs_server, raylet, ...) to the *thread* that spawned
    them (`prctl(PR_SET_PDEATHSIG, SIGKILL)`): had `ray.init` run on the short-lived
    thread the core starts engines on (`BaseEngine._within_timeout`), the kernel would
    kill Ray the moment that thread returned. This thread then waits for work that must
    run on the driver's own thread (`call`) until `release()`; as a daemon it also dies
    with the process, taking an owned Ray's daemons with it.
    """

    def __init__(self, init: Any) -> None:
        self._init = init
        self._ready = threading.Event()
        self._jobs: "queue.SimpleQueue[Optional[Any]]" = queue.SimpleQueue()
        self._result: Any = None
        self._error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._run, name="ray-driver", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._result = self._init()
        except BaseException as e:  # handed to the starting thread
            self._error = e
            self._ready.set()
            return
        self._ready.set()
        while (job := self._jobs.get()) is not None:
            job()

    def wait(self) -> Any:
        self._ready.wait()
        if self._error is not None:
            raise self._error
        return self._result

    def call(self, function: Any, timeout_s: float) -> bool:
        """Run `function` on the driver's thread: Ray files what a driver records (its
        profile spans) under the driver only from the thread that ran `ray.init`. Whether
        it ran, without error, within `timeout_s`."""
        if self._error is not None or not self._thread.is_alive():
            return False
        done = threading.Event()
        outcome: List[bool] = []

        def job() -> None:
            try:
                function()
                outcome.append(True)
            except Exception as e:
                logger.debug("Running %s on the Ray driver's thread failed: %s", function, e)
            finally:
                done.set()

        self._jobs.put(job)
        return done.wait(timeout_s) and bool(outcome)

    def release(self) -> None:
        self._jobs.put(None)
        self._thread.join(timeout=5)


# The thread holding this process's Ray driver (Ray allows one per process).
_DRIVER: Optional[_DriverThread] = None
# Owned Rays this process started (`_note_owned_start`).
_owned_starts = 0


def _note_owned_start(reuse: str) -> None:
    """Count an owned start; at the second, tell a process that starts a Ray per run (a
    notebook, a loop of pipeline calls) what that costs it and how to avoid it, once."""
    global _owned_starts
    _owned_starts += 1
    if _owned_starts == 2 and reuse != "process":
        logger.info(
            "This process has started its own Ray a second time. Every ray.init/ray.shutdown "
            "leaves about one native thread and 0.2 MB in the process (Ray's own, measured with "
            "Ray 2.60); to run many pipelines in one process (a notebook, a loop), keep one Ray "
            "for all of them with the component option `reuse: process`."
        )


def _init_on_driver_thread(init: Any) -> Any:
    global _DRIVER
    driver = _DriverThread(init)
    context = driver.wait()
    _DRIVER = driver
    return context


def _init_retrying_client_spawn(init: Any, address: str, attempt: "_Attempt") -> Any:
    """`_init_on_driver_thread(init)` for a Ray Client address, tried again when the
    server failed to start our driver's session (a race inside Ray's client server),
    unless the core gave up on this connect already (`startup_timeout_s` bounds it all)."""
    number = 0
    while True:
        number += 1
        try:
            return _init_on_driver_thread(init)
        except Exception as e:
            if _CLIENT_SPAWN_FAILED not in str(e) or attempt.abandoned or number == _CLIENT_SPAWN_ATTEMPTS:
                raise
            logger.warning(
                "The Ray Client server at %s failed to start a session for this driver "
                "(attempt %d of %d, a known Ray race: ray-project/ray#63202); connecting again.",
                address, number, _CLIENT_SPAWN_ATTEMPTS,
            )
            _shutdown_ray()  # drop what the failed connect left in ray.util.client


def _owned_node_processes(process_type: str) -> Optional[List[Any]]:
    """The `subprocess.Popen`s of one type of daemon (ray_constants.PROCESS_TYPE_*) that this
    driver's `ray.init` started; None when it started none (attached) or Ray's internals moved."""
    try:
        import ray

        node = ray._private.worker._global_node
        if node is None or not node.head:
            return None
        return [info.process for info in node.all_processes.get(process_type, [])]
    except AttributeError:
        return None


def _end_autoscaler_monitor() -> None:
    """Kill an owned Ray's autoscaler monitor before `ray.shutdown()` stops it.

    Ray stops its daemons one at a time with SIGTERM, each given a second to exit. The
    monitor's SIGTERM handler reports its own death to the GCS, which Ray has stopped just
    before, so it always uses up its second (measured with Ray 2.60: 1.0 of a 1.3 s
    shutdown). A single-node Ray that is ending needs neither the monitor nor that report.
    """
    from ray._private import ray_constants

    for process in _owned_node_processes(ray_constants.PROCESS_TYPE_MONITOR) or []:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=5)


def _owned_session_dir() -> Optional[str]:
    """The session folder of the Ray this driver's `ray.init` started (logs, sockets, runtime
    resources; ~0.6 MB in ~120 files per session), or None when it joined one (attached)."""
    try:
        import ray

        node = ray._private.worker._global_node
        return node.get_session_dir_path() if node is not None and node.head else None
    except AttributeError:  # Ray's internals moved: leave the folder
        return None


def _remove_session_dir(path: str) -> None:
    """Remove an owned Ray's session folder, and Ray's `session_latest` link if it points there.

    Ray keeps every session's folder in its temp dir, so a process that starts a Ray per
    run (a notebook, a loop of pipeline calls) would leave one per run."""
    shutil.rmtree(path, ignore_errors=True)
    latest = os.path.join(os.path.dirname(path), "session_latest")
    if os.path.islink(latest) and os.path.realpath(latest) == os.path.realpath(path):
        try:
            os.unlink(latest)
        except OSError:
            pass


def _shutdown_ray() -> None:
    """`ray.shutdown()`, then let the driver thread go (after Ray's daemons are stopped);
    an owned Ray's session folder goes too, once every process of it has exited."""
    global _DRIVER
    import ray

    session_dir = _owned_session_dir()
    try:
        _end_autoscaler_monitor()
        ray.shutdown()
    finally:
        driver, _DRIVER = _DRIVER, None
        if driver is not None:
            driver.release()
        reaper.release()
        if session_dir is not None:
            _remove_session_dir(session_dir)


class _Attempt:
    """One start/connect; abandoned when the core's timeout gave up on it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.abandoned = False
        self.ray_children_before = _ray_children()


class RayEngine(BaseEngine):
    """Owns a local Ray (`ray.init` on 127.0.0.1) or attaches to a Ray cluster."""

    kind = "ray"
    pip_extra = "ray"
    data_type_modules = ("ray.data",)
    engine_settings_class = RayEngineSettings

    _attempt: Optional[_Attempt] = None

    @property
    def config(self) -> RayEngineConfig:
        return self._config  # type: ignore[return-value]

    # ---- start / connect / stop ----------------------------------------------------

    def _find_user_engine(self) -> Optional[RayRuntime]:
        if "ray" not in sys.modules:
            return None  # nobody in this process can have initialized Ray
        import ray

        # Ray is one driver per process: a Ray another of our components still holds
        # (reuse=process, or a run that ended without teardown) is released first.
        for other in live_engines().values():
            if isinstance(other.engine, RayEngine) and other.engine.id != self.id:
                other.engine._close(other, reason=f"'{self.name}' needs this process's Ray driver")
        if not ray.is_initialized():
            return None
        return self._runtime(None, mode="adopted", runtime_env=self._current_runtime_env())

    def _start(self, settings: RayEngineSettings) -> RayRuntime:
        attempt = self._attempt = _Attempt()
        import ray

        config = self.config
        if config.include_dashboard:
            self._check_dashboard_dependencies()

        system_config = {}
        if (config.record_usage or config.keep_step_record) and f"RAY_{usage.REPORT_INTERVAL_KEY}" not in os.environ:
            # A step's usage waits for its last task events: have them sent sooner.
            system_config[usage.REPORT_INTERVAL_KEY] = usage.OWNED_REPORT_INTERVAL_MS

        def init() -> Any:
            with _loopback_node_ip(True), _quiet_thread_warning():
                return ray.init(
                    # "local" always starts a new Ray: None would join RAY_ADDRESS or the
                    # latest `ray start` cluster on this machine.
                    address="local",
                    _system_config=system_config or None,
                    num_cpus=config.num_cpus,
                    num_gpus=config.num_gpus,
                    resources=dict(config.resources) or None,
                    object_store_memory=config.object_store_memory,
                    include_dashboard=config.include_dashboard,
                    dashboard_host="127.0.0.1",
                    dashboard_port=config.dashboard_port,
                    namespace=config.namespace,
                    runtime_env=settings.runtime_env,
                    log_to_driver=config.log_to_driver,
                )

        began = time.time()
        context = _init_on_driver_thread(init)
        reaper.watch(os.getpid(), since=began)  # ends Ray's agents should this process die unannounced
        runtime = self._finish(attempt, context, "owned", settings)
        _note_owned_start(config.reuse)
        return runtime

    def _connect(self, settings: RayEngineSettings) -> RayRuntime:
        attempt = self._attempt = _Attempt()
        address = self.config.address
        assert address is not None
        is_client, host, port = parse_address(address)
        _probe(host, port, address, timeout=min(10.0, self.config.startup_timeout_s))
        import ray

        # A step's usage waits for its last task events: have this driver and its job's
        # workers send them sooner than the cluster's default (a Ray Client records none).
        records = (self.config.record_usage or self.config.keep_step_record) and not is_client

        def init() -> Any:
            with _loopback_node_ip(host in _LOOPBACK and not is_client), _quiet_thread_warning():
                with usage.reporting_often(settings.runtime_env) if records else nullcontext(
                    settings.runtime_env
                ) as runtime_env:
                    return ray.init(
                        address=address,
                        namespace=self.config.namespace,
                        runtime_env=runtime_env,
                        log_to_driver=self.config.log_to_driver,
                    )

        try:
            context = _init_retrying_client_spawn(init, address, attempt) if is_client else _init_on_driver_thread(init)
        except Exception as e:
            if "InvalidAuthToken" in str(e) or "uthentication" in type(e).__name__:
                raise EngineError(
                    f"Ray cluster {address} requires token authentication: start the pipeline with "
                    "RAY_AUTH_MODE=token and the cluster's token (RAY_AUTH_TOKEN or "
                    f"~/.ray/auth_token) in its environment. Cause: {e}"
                ) from e
            raise
        return self._finish(attempt, context, "attached", settings)

    def _finish(self, attempt: _Attempt, context: Any, mode: str, settings: RayEngineSettings) -> RayRuntime:
        with attempt.lock:
            if attempt.abandoned:
                # The core gave up waiting (startup_timeout_s) and raised already.
                _shutdown_ray()
                raise EngineError("Ray came up after startup_timeout_s; shut it down again")
            _forget_gcs_reader()
            runtime = self._runtime(context, mode=mode, runtime_env=settings.runtime_env)
            self._attempt = None
            return runtime

    def _abort_start(self) -> None:
        """Release a start/connect that failed or outlived `startup_timeout_s`."""
        attempt = self._attempt
        self._attempt = None
        if attempt is None or "ray" not in sys.modules:
            return
        import ray

        with attempt.lock:
            attempt.abandoned = True
            if ray.is_initialized():  # came up just as we gave up; nobody else owns it
                _shutdown_ray()
        if self.config.owns_engine:
            # A start still inside ray.init may have spawned daemons: kill what is new.
            _kill(_ray_children() - attempt.ray_children_before)

    def _stop(self, handle: RayRuntime, owned: bool) -> None:
        # Owned: stops the raylet, GCS and workers this driver started. Attached: ends our
        # driver's job and connection; the cluster keeps running.
        _shutdown_ray()

    def _is_alive(self, live: LiveEngine) -> bool:
        # A driver whose cluster went away must not touch Ray again: its first task or
        # `ray.put` finds the raylet gone and Ray ends the whole process (exit code 1, no
        # traceback, no cleanup). Ask the head's gRPC port instead; `ray.shutdown()` is safe.
        import ray

        if not ray.is_initialized():
            return False  # step code called ray.shutdown()
        if live.owned:
            # Our own GCS and raylet are our child processes: ask them, not the network
            # (a gRPC probe costs 0.2 s per step).
            daemons = _owned_daemons()
            if len(daemons) == len(_RAY_DAEMONS):
                return all(process.poll() is None for process in daemons)
        address = self.config.address if not live.owned else live.handle.address
        try:
            _, host, port = parse_address(address or "")
        except ValueError:
            return True  # no address to ask (an owned Ray that did not report one)
        try:
            _probe(host, port, address, timeout=2.0)
        except EngineError:
            return False
        return _is_client_mode() or _same_cluster(address)

    def _gcs_is_ours(self, live: LiveEngine) -> bool:
        """Whether the GCS this driver joined still answers (cheaper than `_is_alive`: no
        gRPC probe, which costs 0.2 s a step): its processes, for an owned Ray; its port
        and cluster id, for an attached one."""
        if live.owned:
            return all(process.poll() is None for process in _owned_daemons())
        address = self.config.address or ""
        try:
            _, host, port = parse_address(address)
            with socket.create_connection((host, port), timeout=1.0):
                pass
        except (ValueError, OSError):
            return False
        return _same_cluster(address)

    def _check_dashboard_dependencies(self) -> None:
        import importlib.util

        missing = [m for m in ("aiohttp", "aiohttp_cors", "opencensus") if importlib.util.find_spec(m) is None]
        if missing:
            raise EngineError(
                f"include_dashboard=True needs ray[default] (missing: {', '.join(missing)}); "
                "pip install 'ray[default]' or set include_dashboard=false"
            )

    # ---- the handle ----------------------------------------------------------------

    def _current_runtime_env(self) -> Dict[str, Any]:
        import ray

        try:
            return dict(ray.get_runtime_context().runtime_env or {})
        except Exception:
            return {}

    def _runtime(self, context: Any, mode: str, runtime_env: Optional[Dict[str, Any]]) -> RayRuntime:
        import ray

        runtime_context = ray.get_runtime_context()
        client = _is_client_mode()
        address: Optional[str] = None
        if mode == "attached":
            address = self.config.address
        elif context is not None and getattr(context, "address_info", None):
            address = context.address_info.get("address") or context.address_info.get("gcs_address")
        if address is None:
            try:
                address = runtime_context.gcs_address
            except Exception:
                address = "ray-client" if client else "unknown"
        dashboard = getattr(context, "dashboard_url", None) if context is not None else None
        if not dashboard and not client:
            try:
                from ray._private.worker import get_dashboard_url

                dashboard = get_dashboard_url()
            except Exception:
                dashboard = None
        session_name = None
        if not client:
            try:
                session_name = ray._private.worker.global_worker.node.session_name
            except Exception:
                session_name = None
        return RayRuntime(
            address=str(address),
            dashboard_url=_http(dashboard),
            job_id=str(runtime_context.get_job_id()),
            namespace=str(runtime_context.namespace),
            mode=mode,
            session_name=session_name,
            runtime_env=MappingProxyType(dict(runtime_env)) if runtime_env else None,
        )

    # ---- observability -------------------------------------------------------------

    def _describe(self, handle: RayRuntime) -> Dict[str, Any]:
        import ray

        facts: Dict[str, Any] = {
            "ray_version": ray.__version__,
            "address": handle.address,
            "job_id": handle.job_id,
            "namespace": handle.namespace,
            "client_mode": self.config.is_client and handle.mode == "attached",
        }
        if handle.session_name:
            facts["ray_session"] = handle.session_name
        if handle.dashboard_url:
            facts["dashboard_url"] = handle.dashboard_url
        if handle.runtime_env:
            facts["runtime_env_fields"] = sorted(handle.runtime_env)  # values may hold secrets
        if not ray.is_initialized():
            return facts
        try:
            resources = ray.cluster_resources()
            facts["node_count"] = sum(1 for node in ray.nodes() if node.get("Alive"))
            facts["cluster_resources"] = {
                "CPU": float(resources.get("CPU", 0)),
                "GPU": float(resources.get("GPU", 0)),
                "memory_bytes": int(resources.get("memory", 0)),
                "object_store_memory_bytes": int(resources.get("object_store_memory", 0)),
            }
        except Exception as e:  # metadata must never fail a step
            facts["cluster_resources_error"] = str(e)[:200]
        return facts

    # ---- per-step settings ---------------------------------------------------------

    def _restart_reason(self, live: LiveEngine, settings: RayEngineSettings) -> Optional[str]:
        wanted = settings.runtime_env
        if live.adopted and wanted is None:
            return None  # the user's Ray, and this step asks for nothing specific
        running = live.handle.runtime_env
        if _canonical(wanted) == _canonical(running):
            return None
        fields = sorted(set(wanted or {}) | set(running or {}))
        return (
            "the step's runtime_env differs from the job-level runtime_env Ray was initialized "
            f"with (fields: {', '.join(fields) or 'none'}); Ray fixes it at ray.init, so use "
            "fn.options(runtime_env=...) for single tasks instead"
        )

    def _step_view(self, live: LiveEngine, settings: RayEngineSettings) -> RayRuntime:
        handle: RayRuntime = live.handle
        context = current_step_context()
        if context is not None:
            # What the driver references already: whatever it references beyond that at
            # the step's end, the step submitted (steps of one process run one after another).
            live.notes.setdefault(_REFS_BEFORE_STEP, {})[context.step_run.id] = _driver_refs()
        if dict(settings.remote_args) == dict(handle.remote_args):
            return handle
        return replace(handle, remote_args=MappingProxyType(dict(settings.remote_args)))

    def _cancel_step_work(self, live: LiveEngine, view: RayRuntime, step_run_id: UUID) -> List[str]:
        import ray
        from ray._raylet import ObjectRef

        before = live.notes.get(_REFS_BEFORE_STEP, {}).get(step_run_id)
        now = _driver_refs()
        if before is None or now is None or not ray.is_initialized():
            return []
        # A ref the interrupted step still holds (its traceback keeps the frame alive)
        # keeps its task queued or running; cancelling a ref of a finished task or of a
        # `ray.put` does nothing.
        cancelled = 0
        for object_id in now - before:
            try:
                ray.cancel(ObjectRef(bytes.fromhex(object_id.decode())), recursive=True)
                cancelled += 1
            except Exception:  # not a task's output, or already gone
                continue
        return [f"the tasks behind {cancelled} object ref(s)"] if cancelled else []

    def _release_step_view(self, live: LiveEngine, view: RayRuntime, step_run_id: UUID, step_failed: bool) -> None:
        live.notes.get(_REFS_BEFORE_STEP, {}).pop(step_run_id, None)
        taken = live.notes.get(_STEP_TASKS, {}).pop(step_run_id, None)
        if taken is not None and taken[1] is not None:  # the timeline is saved by now
            shutil.rmtree(taken[1], ignore_errors=True)

    # ---- usage and timeline --------------------------------------------------------

    def _mark_step_start(self, live: LiveEngine, view: RayRuntime, step_run_id: UUID) -> int:
        return time.time_ns()

    def _step_usage(self, live: LiveEngine, view: RayRuntime, step_run_id: UUID, mark: Any) -> Optional[UsageLater]:
        collect = self._step_tasks(live, view, step_run_id, mark)
        if collect is None:
            return None

        def step_usage() -> Optional[StepUsage]:
            tasks = collect()
            return usage.step_usage(tasks) if tasks is not None else None

        return step_usage  # its wait for the last task events need not hold up the run

    def _step_record(self, live: LiveEngine, view: RayRuntime, step_run_id: UUID, mark: Any) -> Optional[StepRecord]:
        collect = self._step_tasks(live, view, step_run_id, mark)
        tasks = collect() if collect is not None else None
        if tasks is None:
            return None
        folder = tempfile.mkdtemp(prefix="zenml-ray-timeline-")
        live.notes[_STEP_TASKS][step_run_id] = (collect, folder)  # removed once the artifact is saved
        path = os.path.join(folder, _TIMELINE_FILE)
        if not usage.write_timeline(tasks, path):
            return None  # the step ran no task
        return StepRecord(
            name="ray_timeline",
            data=EngineRecordFile(path, "ray timeline"),
            facts={"open": f"Perfetto UI (ui.perfetto.dev) or chrome://tracing: load {{uri}}/{_TIMELINE_FILE}"},
        )

    def _step_tasks(
        self, live: LiveEngine, view: RayRuntime, step_run_id: UUID, mark: Any
    ) -> Optional[Callable[[], Optional[usage.StepTasks]]]:
        """Stamp the end of the step; a function that takes its task events from the GCS once
        they arrived (once, for its usage and its timeline; None if the cluster went away
        meanwhile). None for a Ray Client driver (the GCS is the cluster's, out of its
        reach) or a step that shut Ray down."""
        import ray

        taken = live.notes.setdefault(_STEP_TASKS, {})
        if step_run_id in taken:
            return taken[step_run_id][0]
        if mark is None or _is_client_mode() or not ray.is_initialized() or not self._gcs_answers(live):
            return None
        if "report_interval_s" not in live.notes:
            live.notes["report_interval_s"] = usage.report_interval_s()
        end_ns = time.time_ns()
        step_key = str(step_run_id)
        # Stamped on the driver's thread, the end of the step shows when the driver has
        # reported its last tasks (a Ray the user initialized has no such thread of ours).
        driver = _DRIVER
        if driver is not None:
            driver.call(lambda: usage.stamp_end(step_key), timeout_s=2.0)
        interval_s = live.notes["report_interval_s"]

        @functools.cache
        def collect() -> Optional[usage.StepTasks]:
            if not ray.is_initialized() or not self._gcs_answers(live):  # taken after a later step
                return None
            return usage.collect(view.job_id, mark, end_ns, step_key, interval_s)

        taken[step_run_id] = (collect, None)
        return collect

    def _gcs_answers(self, live: LiveEngine) -> bool:
        if self._gcs_is_ours(live):
            return True
        # Ray ends the whole process when a GCS read fails (a RAY_CHECK), so a cluster that
        # went away is not asked.
        logger.info("The Ray cluster of '%s' no longer answers: no usage for this step.", self.name)
        return False
