"""The Dask engine: owns a loopback LocalCluster or attaches a Client to a scheduler.

`dask` and `distributed` are imported inside the methods only, so that registering or
loading the component never imports them (DESIGN.md §3).
"""

from __future__ import annotations

import ast
import importlib.util
import socket
import sys
import threading
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Set, Tuple
from uuid import UUID

from zenml.logger import get_logger

from zenml_compute_engines.flavors.engine import BaseEngine, EngineError, LiveEngine, current_step_context, live_engines
from zenml_compute_engines.flavors.dask import usage
from zenml_compute_engines.flavors.dask.flavor import DaskEngineConfig, DaskEngineSettings
from zenml_compute_engines.flavors.usage import StepRecord, StepUsage

if TYPE_CHECKING:
    from distributed import Client, LocalCluster

logger = get_logger(__name__)

LOOPBACK = "127.0.0.1"
# Set on every Client this module creates, so it is never mistaken for a user's client.
_OURS = "_zenml_compute_engine"
_ANNOTATION_WARNING = r"Dask annotations .* detected"
# How long a scheduler kept from an earlier step may take to answer before it counts as gone.
_ALIVE_TIMEOUT_S = 2.0


_KEYS_BEFORE_STEP = "keys_before_step"
# The Dask span each step's work goes into (flavors/dask/usage.py), by step run id.
_STEP_SPANS = "step_spans"
# A worker preload (Dask takes a text with spaces as the script itself): owned workers
# ignore SIGINT. Jupyter's interrupt and a terminal's Ctrl-C signal the whole process
# group, which holds the worker processes we spawned; one that took the KeyboardInterrupt
# died, and the next run on the kept cluster waited forever for a worker. The step's own
# work is cancelled by the engine instead (`_cancel_step_work`).
_IGNORE_INTERRUPTS = "import signal\n\ndef dask_setup(worker):\n    signal.signal(signal.SIGINT, signal.SIG_IGN)\n"


def _held_keys(client: "Client") -> Set[Any]:
    """The keys of the futures `client` holds, read on its event loop (which changes them)."""

    async def read() -> Set[Any]:
        return set(client.futures)

    return client.sync(read)


def _refuse_an_unguarded_script() -> None:
    """Fail before any worker process starts when the script running the pipeline calls it
    at module level, outside `if __name__ == "__main__":`. Dask starts its workers with
    multiprocessing's spawn (or forkserver), which imports that script again in each new
    process, where the unguarded call would begin a pipeline run of its own."""
    import dask

    method = dask.config.get("distributed.worker.multiprocessing-method", "spawn")
    found = _unguarded_main_call() if method in ("spawn", "forkserver") else None
    if found is not None:
        path, line = found
        raise EngineError(
            f"{path}, line {line}, runs the pipeline when the script is imported: Dask's worker "
            f"processes ({method}) import your script again and would each run the pipeline too. "
            "Wrap the pipeline call in `if __name__ == \"__main__\":`."
        )


def _unguarded_main_call() -> Optional[Tuple[str, int]]:
    """(file, line) of the statement of the script (`__main__`, a file) that the main thread
    is executing, when it is module-level code outside an `if __name__ == "__main__":`
    block; None otherwise (a notebook, `python -c`, a guarded call)."""
    path = getattr(sys.modules.get("__main__"), "__file__", None)
    frame = sys._current_frames().get(threading.main_thread().ident)
    while frame is not None and not (frame.f_code.co_name == "<module>" and frame.f_globals.get("__name__") == "__main__"):
        frame = frame.f_back
    if frame is None or not path:
        return None
    line = frame.f_lineno
    try:
        with open(path, encoding="utf-8") as source:
            tree = ast.parse(source.read())
    except (OSError, SyntaxError, ValueError):
        return None
    guarded = any(
        isinstance(node, ast.If) and _is_main_guard(node.test) and node.lineno <= line <= (node.end_lineno or line)
        for node in tree.body
    )
    return None if guarded else (path, line)


def _is_main_guard(test: ast.expr) -> bool:
    """`__name__ == "__main__"` (either way round)."""
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq)):
        return False
    sides = [test.left, test.comparators[0]]
    return any(isinstance(side, ast.Name) and side.id == "__name__" for side in sides) and any(
        isinstance(side, ast.Constant) and side.value == "__main__" for side in sides
    )


@dataclass(eq=False)
class DaskHandle:
    """What a live Dask engine holds: the client, and for an owned engine its cluster."""

    client: "Client"
    cluster: Optional["LocalCluster"] = None

    @property
    def scheduler_address(self) -> str:
        return str(self.client.scheduler.address)


class _StartAttempt:
    """Objects created by one start/connect, closed if the core gives up on it (timeout)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._aborted = False
        self._objects: List[Any] = []

    def keep(self, obj: Any) -> Any:
        with self._lock:
            if not self._aborted:
                self._objects.append(obj)
                return obj
        _close_quietly(obj)
        raise EngineError("the start was abandoned after startup_timeout_s")

    def abort(self) -> None:
        with self._lock:
            self._aborted = True
            objects, self._objects = list(reversed(self._objects)), []
        for obj in objects:
            _close_quietly(obj)


def _close_quietly(obj: Any, timeout: float = 10) -> None:
    try:
        obj.close(timeout=timeout)
    except Exception as e:  # best effort: it may be half-started or already closed
        logger.debug("Closing %r failed: %s", obj, e)


def _probe(address: str, timeout: float) -> None:
    """Fail fast, naming the address, unless a Dask server answers there.

    Plain `tcp://` servers send their handshake as soon as they accept a connection; wait
    for its first byte, because `distributed.Client` waits for it without any timeout
    (distributed/comm/core.py `connect`), so a port that accepts but never answers would
    hang the Client forever.
    """
    scheme, _, location = address.partition("://")
    if scheme not in ("tcp", "tls", "ws", "wss"):
        return
    host, _, port = location.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout) as sock:
            if scheme != "tcp":
                return  # TLS/websocket servers wait for the client to speak first
            sock.settimeout(timeout)
            if not sock.recv(1):
                raise EngineError(f"{address} closed the connection without a Dask handshake")
    except socket.timeout as e:
        raise EngineError(
            f"{address} accepted a TCP connection but sent no Dask handshake within {timeout:g}s; "
            "is a Dask scheduler listening there?"
        ) from e
    except OSError as e:
        raise EngineError(f"Dask scheduler {address} is unreachable: {e}") from e


def _dashboard_available() -> bool:
    return importlib.util.find_spec("bokeh") is not None


def _format_bytes(n: int) -> str:
    from dask.utils import format_bytes

    return format_bytes(n)


def _one_or_all(values: List[Any]) -> Any:
    unique = sorted(set(values))
    return unique[0] if len(unique) == 1 else unique


def _leave_annotations(manager: Any) -> None:
    try:
        manager.__exit__(None, None, None)
    except ValueError:  # entered in another contextvars.Context: nothing of ours is left there
        pass


class DaskEngine(BaseEngine):
    """Owns a loopback `LocalCluster` or attaches to a Dask scheduler; hands steps a `Client`."""

    kind = "dask"
    pip_extra = "dask"
    data_type_modules = ("dask.dataframe", "dask_expr")
    engine_settings_class = DaskEngineSettings

    @property
    def config(self) -> DaskEngineConfig:
        return self._config  # type: ignore[return-value]

    # ---- start / connect / stop ----------------------------------------------------

    def _find_user_engine(self) -> Optional[DaskHandle]:
        """A running, synchronous Client the user created in this process (never closed by us).

        With `scheduler_address` set, only a client of that scheduler is adopted; a client
        of another cluster is left alone and the configured scheduler is used.
        """
        if "distributed" not in sys.modules:
            return None  # nobody in this process can have created a Client
        from distributed import Client

        try:
            client = Client.current(allow_global=True)
        except ValueError:
            return None
        if getattr(client, _OURS, None) or client.asynchronous or client.status != "running":
            return None
        address = client.scheduler.address
        if self.config.address is not None and address != self.config.address:
            logger.warning(
                "Not adopting the Dask client of %s created in this process: component '%s' is "
                "configured for %s.",
                address,
                self.name,
                self.config.address,
            )
            return None
        return DaskHandle(client=client)

    def _start(self, settings: DaskEngineSettings) -> DaskHandle:
        from distributed import Client, LocalCluster

        config = self.config
        if config.processes:
            _refuse_an_unguarded_script()
        attempt = self._attempt = _StartAttempt()
        worker_kwargs: Dict[str, Any] = {"preload": [_IGNORE_INTERRUPTS]} if config.processes else {}
        if config.memory_limit != "auto":  # LocalCluster's own "auto" splits memory among workers
            worker_kwargs["memory_limit"] = config.memory_limit
        if config.worker_resources:
            worker_kwargs["resources"] = dict(config.worker_resources)
        cluster = attempt.keep(
            LocalCluster(
                n_workers=config.n_workers,
                threads_per_worker=config.threads_per_worker,
                processes=config.processes,
                # Everything on loopback: scheduler, nannies, workers and both HTTP servers.
                # An explicit port 0 for the dashboard: its default (:8787) binds every
                # interface and collides with other clusters on the machine.
                protocol="tcp://",
                host=LOOPBACK,
                scheduler_port=0,
                dashboard_address=f"{LOOPBACK}:0",
                worker_dashboard_address=None,
                scheduler_kwargs={"dashboard": config.dashboard and _dashboard_available()},
                **worker_kwargs,
            )
        )
        client = attempt.keep(Client(cluster, set_as_default=True, name=self._client_name))
        setattr(client, _OURS, self.name)
        return DaskHandle(client=client, cluster=cluster)

    def _connect(self, settings: DaskEngineSettings) -> DaskHandle:
        from distributed import Client

        address = self.config.address
        assert address is not None
        timeout = self.config.startup_timeout_s
        _probe(address, timeout=min(10.0, timeout * 0.6))
        attempt = self._attempt = _StartAttempt()
        # Dask's timeout bounds each phase of the connection (TCP + handshake, identity,
        # registration), so give it well under the core's budget: a scheduler that does not
        # answer then fails with Dask's own cause rather than with the core's timeout.
        client = attempt.keep(
            Client(address, timeout=f"{max(0.5, timeout * 0.6):.3f}s", set_as_default=True, name=self._client_name)
        )
        setattr(client, _OURS, self.name)
        return DaskHandle(client=client)

    @property
    def _client_name(self) -> str:
        return f"zenml-{self.name}"

    def _abort_start(self) -> None:
        attempt = getattr(self, "_attempt", None)
        if attempt is not None:
            attempt.abort()
        if "distributed.client" not in sys.modules:
            return
        # A Client still inside its constructor is not ours to keep yet, but it already is
        # the process's default client: close it, or `df.compute()` would go to it.
        from distributed.client import _global_clients

        prefix = f"Client-{self._client_name}-"
        for client in list(_global_clients.values()):
            if client.id.startswith(prefix) and client.status in ("newly-created", "connecting"):
                _close_quietly(client, timeout=2)

    def _stop(self, handle: DaskHandle, owned: bool) -> None:
        try:
            handle.client.close(timeout=10)
        finally:
            if owned and handle.cluster is not None:
                # Closes the nannies, which stop their worker processes.
                handle.cluster.close(timeout=30)

    def _warm_up(self, handle: DaskHandle) -> None:
        """An owned cluster's workers import `dask.dataframe` (with pandas and pyarrow):
        about 0.5 s the first DataFrame job would otherwise wait for. Attached clusters'
        workers are long-lived and run in environments of their own, so not them."""
        if handle.cluster is None:
            return

        # Defined here so that it is pickled by value: by reference, the worker would
        # import this module, and with it ZenML.
        def import_dataframe_modules() -> None:
            import importlib

            importlib.import_module("dask.dataframe")

        handle.client.run(import_dataframe_modules)

    def _is_alive(self, live: LiveEngine) -> bool:
        # A client whose scheduler died keeps trying to reconnect, and its futures wait
        # for it: ask the scheduler itself, within a bound, over the client's own pooled
        # connection. (A bare TCP probe made the scheduler log "Connection from ... closed
        # before handshake completed" at every step.)
        client = live.handle.client
        if client.status != "running" or client.scheduler is None:
            return False
        try:
            client.sync(client.scheduler.echo, callback_timeout=_ALIVE_TIMEOUT_S)
        except Exception:  # refused, closed, timed out: it does not answer
            return False
        return True

    def _restart_reason(self, live: LiveEngine, settings: DaskEngineSettings) -> Optional[str]:
        if live.handle.client.status in ("closing", "closed"):
            return "its Dask client was closed (by step code?); never close the client of dask_client()"
        return None

    # ---- per-step settings ---------------------------------------------------------

    def _step_view(self, live: LiveEngine, settings: DaskEngineSettings) -> "Client":
        """The shared client, with the step's resources/annotations active until its outputs
        are saved, and, while usage or the record is kept, the span that counts its work."""
        client = live.handle.client
        annotations = dict(settings.annotations)
        if settings.resources:
            annotations["resources"] = dict(settings.resources)
            self._check_resources(client, settings.resources)
        context = current_step_context()
        if context is not None:
            # What the client holds already: whatever it holds beyond that at the step's
            # end, the step submitted (steps of one process run one after the other).
            live.notes.setdefault(_KEYS_BEFORE_STEP, {})[context.step_run.id] = _held_keys(client)
        if context is not None and (self.config.record_usage or self.config.keep_step_record):
            # The step's span: entered and left with its other annotations (one context
            # variable: two managers left in the order they were entered would restore
            # each other's), so that its outputs' writes count too.
            pipeline = context.pipeline_run.pipeline  # (a run may have none: then the run's name)
            title = f"{pipeline.name if pipeline else context.pipeline_run.name}::{context.step_run.name}"
            span_id, annotations["span"] = usage.span_annotation(title)
            live.notes.setdefault(_STEP_SPANS, {})[context.step_run.id] = (span_id, title)
        if annotations and context is not None:
            import dask

            # dask-expr warns that annotations are ignored; that holds for annotations
            # present while a collection is built, not for these, which the Client merges
            # into every graph it submits.
            warnings.filterwarnings("ignore", message=_ANNOTATION_WARNING, category=UserWarning)
            manager = dask.annotate(**annotations)
            manager.__enter__()
            # Runs when the StepContext exits: after the step's outputs were written.
            context._cleanup_registry.register_callback(_leave_annotations, manager)
        return client

    def _cancel_step_work(self, live: LiveEngine, view: "Client", step_run_id: UUID) -> List[str]:
        from distributed import Future

        before = live.notes.get(_KEYS_BEFORE_STEP, {}).get(step_run_id)
        if before is None or view.status != "running":
            return []
        # A future the interrupted step still references (its traceback keeps the frame
        # alive) keeps its tasks queued; one it dropped is released by Dask itself.
        keys = _held_keys(view) - before
        if keys:
            view.cancel([Future(key, view) for key in keys])
        return [f"{len(keys)} future(s)"] if keys else []

    def _release_step_view(self, live: LiveEngine, view: "Client", step_run_id: UUID, step_failed: bool) -> None:
        live.notes.get(_KEYS_BEFORE_STEP, {}).pop(step_run_id, None)

    # ---- usage and the performance report (flavors/dask/usage.py) ------------------

    def _mark_step_start(self, live: LiveEngine, view: "Client", step_run_id: UUID) -> Optional[usage.StepMark]:
        span = live.notes.get(_STEP_SPANS, {}).pop(step_run_id, None)
        if span is None:
            return None
        span_id, title = span
        return usage.mark_step_start(view, span_id, title, report=self.config.keep_step_record)

    def _step_usage(
        self, live: LiveEngine, view: "Client", step_run_id: UUID, mark: Optional[usage.StepMark]
    ) -> Optional[StepUsage]:
        return usage.step_usage(view, mark) if mark is not None else None

    def _step_record(
        self, live: LiveEngine, view: "Client", step_run_id: UUID, mark: Optional[usage.StepMark]
    ) -> Optional[StepRecord]:
        if mark is None:
            return None
        from zenml_compute_engines.flavors.dask import task_stream_page
        from zenml_compute_engines.materializers.engine_record import EngineRecordPages

        report = usage.performance_report(view, mark, scheduler_here=live.handle.cluster is not None)
        stream = task_stream_page.render(mark.title, usage.task_stream(view, mark), mark.report_start)
        # The static page first: the ZenML dashboard runs no scripts in a visualization.
        pages = {usage.TASK_STREAM_FILE: stream, usage.REPORT_FILE: report}
        return StepRecord(
            name=usage.REPORT_NAME, data=EngineRecordPages(pages, "dask performance report"), facts=usage.report_facts()
        )

    def _check_resources(self, client: "Client", wanted: Dict[str, float]) -> None:
        """Fail now instead of queueing tasks no current worker can ever run."""
        workers = client.scheduler_info(n_workers=-1).get("workers", {})
        if not workers:
            return  # an adaptive cluster may still add workers that have them
        offered = [dict(w.get("resources") or {}) for w in workers.values()]
        if any(all(o.get(k, 0) >= v for k, v in wanted.items()) for o in offered):
            return
        hint = (
            "add them to the component's worker_resources"
            if self.config.owns_engine
            else "start workers with `dask worker --resources ...`"
        )
        raise EngineError(
            f"The step requests Dask resources {wanted}, but no worker of {client.scheduler.address} "
            f"offers them (workers offer {_one_or_all([str(o) for o in offered])}); {hint}."
        )

    # ---- observability -------------------------------------------------------------

    def _describe(self, handle: DaskHandle) -> Dict[str, Any]:
        import dask
        import distributed

        facts: Dict[str, Any] = {
            "dask_version": dask.__version__,
            "distributed_version": distributed.__version__,
            "address": handle.scheduler_address,
            "scheduler_address": handle.scheduler_address,
            "client_id": handle.client.id,
        }
        if handle.cluster is not None:
            facts["cluster"] = type(handle.cluster).__name__
            facts["processes"] = self.config.processes
        try:
            info = handle.client.scheduler_info(n_workers=-1)
        except Exception as e:  # the scheduler may be going away; the rest still helps
            facts["scheduler_info_error"] = str(e)
            return facts
        workers = list(info.get("workers", {}).values())
        facts["n_workers"] = int(info.get("n_workers", len(workers)))
        facts["total_threads"] = int(info.get("total_threads", sum(w["nthreads"] for w in workers)))
        if workers:
            facts["threads_per_worker"] = _one_or_all([int(w["nthreads"]) for w in workers])
            memory = [int(w.get("memory_limit") or 0) for w in workers]
            facts["memory_limit_per_worker"] = _one_or_all(
                [_format_bytes(m) if m else "unlimited" for m in memory]
            )
            resources: Dict[str, float] = {}
            for w in workers:
                for name, amount in (w.get("resources") or {}).items():
                    resources[name] = resources.get(name, 0) + amount
            if resources:
                facts["worker_resources_total"] = resources
        if "dashboard" in info.get("services", {}):
            if handle.cluster is not None and not (self.config.dashboard and _dashboard_available()):
                facts["dashboard"] = "unavailable: install bokeh>=3.1 for the Dask dashboard"
            else:
                link = handle.client.dashboard_link
                if link:
                    facts["dashboard_url"] = link
        return facts


def step_client(start: bool) -> Optional["Client"]:
    """The Dask client the materializers should use, or None for Dask's default scheduler.

    In a step whose stack has a Dask engine: the step's client (`start=True` starts the
    engine if needed; `False` only uses a live one: an engine started while outputs are
    saved would miss its end-of-step teardown). Outside a step: a live engine's client.
    """
    from zenml_compute_engines.flavors.context import compute_engine

    try:
        engine = compute_engine("dask")
    except EngineError:
        return None
    live = live_engines().get(engine.id)
    if current_step_context() is not None and (start or live is not None):
        return engine.session()
    return live.handle.client if live is not None else None
