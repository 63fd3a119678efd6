"""Warm start: begin an engine's start while ZenML prepares a run that will use it.

Under the local orchestrator ZenML loads the stack, compiles a run, registers its snapshot
and creates the run (seconds, in a fresh process) in the process that then runs the steps.
`consider()` is called at two moments of that (DESIGN.md §4): when `Pipeline._run` loads
the stack and constructs the component (the earliest, in a process that had not loaded
the stack yet), and when ZenML validates the stack right after the run compiled, reading
every component's `validator` (for a stack loaded before the pipeline call). If a run is
being prepared here, its steps will run here and the run will use the engine, the engine
starts on a background thread; the first step that asks for it takes it (`take()`),
waiting only for what is left of the start. The engine warms up on that thread before a
step can take it (`BaseEngine._warm_up`: an owned Dask cluster's workers import its
DataFrame modules, which the first job would otherwise wait for). An engine no step took
is stopped when the run is over, or when the call that prepared the run returns or fails
without running a step (its compilation failed, say, on a misspelled setting, or every
step was cached).

"Will use" (`prestart: auto`): a step's signature holds the engine's data type, a step
carries settings for the engine's slot, or the latest run of the same pipeline on the same
stack recorded this component in a step's `compute_engine` metadata (looked up on the background thread,
so an engine-free pipeline pays nothing for it). `prestart: always` starts it for every
run prepared here; `never` leaves the start to the first step. Spark and Dask components
default to `auto`, the others to `never` (the measurements behind that: docs/performance.md
and bench/README.md).
"""

from __future__ import annotations

import sys
import threading
import time
import typing
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional, Tuple

from zenml.enums import StackComponentType
from zenml.logger import get_logger

if TYPE_CHECKING:
    from zenml_compute_engines.flavors.engine import BaseEngine, LiveEngine

logger = get_logger(__name__)

# How deep below ZenML's `Pipeline._run` a component's construction or `validator` read may be.
_MAX_FRAMES = 40
_PIPELINE_FILE = "/zenml/pipelines/pipeline_definition.py"
_STACK_FILE = "/zenml/stack/stack.py"
_WATCH_INTERVAL_S = 0.25
_WARM_UP_TIMEOUT_S = 30.0

_PENDING: Dict[Any, "Prestart"] = {}  # by component id
_LOCK = threading.Lock()
# The run being prepared (the frame of its pipeline call) and the components already
# considered for it: ZenML constructs them, then validates the stack more than once.
_CONSIDERED: List[Any] = [None, set()]


class Prestart:
    """One engine start begun while a run was being prepared."""

    def __init__(
        self, engine: "BaseEngine", reason: Optional[str], pipeline_name: str, stack_id: Any, run_call: Any
    ) -> None:
        self.engine = engine
        self.reason = reason  # None: decided on the thread, from the pipeline's last run
        self.pipeline_name = pipeline_name
        self.stack_id = stack_id
        # The frame of the call that prepares and runs the pipeline, and its thread.
        self._run_call = run_call
        self._run_thread = threading.get_ident()
        self.requested_at = time.time()
        self.ready_at: Optional[float] = None  # when the start was done, before the warm-up
        self.warm_up_s = 0.0
        self.live: Optional["LiveEngine"] = None
        self.error: Optional[BaseException] = None
        self.done = threading.Event()
        self._lock = threading.Lock()
        self._abandoned = False
        self._thread = threading.Thread(target=self._run, name=f"{engine.kind}-prestart", daemon=True)

    def __repr__(self) -> str:
        state = "failed" if self.error else "ready" if self.live else "starting" if not self.done.is_set() else "skipped"
        return f"<Prestart {self.engine.kind} '{self.engine.name}' {state} ({self.reason or 'deciding'})>"

    def _run(self) -> None:
        live = None
        try:
            if self.reason is None:
                self.reason = _used_by_last_run(self.pipeline_name, self.stack_id, self.engine)
                if self.reason is None:
                    return
            logger.info(
                "Starting the %s engine of '%s' while ZenML prepares the run (%s).",
                self.engine.kind, self.engine.name, self.reason,
            )
            live = self.engine._open_live(self.engine.config, run_id=None)
            self.ready_at = time.time()
            self._warm_up(live)
        except BaseException as e:  # reported by the first step that asks for the engine
            self.error = e
        finally:
            self.ready_at = self.ready_at or time.time()
            with self._lock:
                abandoned = self._abandoned
                if not abandoned:
                    self.live = live
            if live is None and self.error is None:
                _forget(self)  # nothing was started: a step starts the engine as usual
            self.done.set()
        if live is None:
            return
        if abandoned:
            self.engine._close(live, reason="no step of its run used it")
            return
        self._watch_run_call()

    def _warm_up(self, live: "LiveEngine") -> None:
        """Before a step can take the engine, so that none of the step's work runs beside
        it (Dask: two threads importing the same package can break each other's import).
        Bounded: a warm-up is an optimisation, the step goes on without it."""
        from zenml_compute_engines.flavors.engine import _call_within

        begun = time.time()
        try:
            _call_within(_WARM_UP_TIMEOUT_S, f"{self.engine.kind}-warm-up", self.engine._warm_up, live.handle)
        except Exception as e:
            logger.debug("Warming up the %s engine of '%s' failed: %s", self.engine.kind, self.engine.name, e)
        self.warm_up_s = time.time() - begun

    def _watch_run_call(self) -> None:
        """Until a step takes the engine: stop it if the call that prepared the run is
        over (it failed before its first step, or every step was cached)."""
        while True:
            with self._lock:
                if self.live is None:  # taken or abandoned
                    return
            if not _frame_running(self._run_call, self._run_thread):
                _forget(self)
                self.abandon(wait=False)
                return
            time.sleep(_WATCH_INTERVAL_S)

    def take(self) -> Tuple[Optional["LiveEngine"], float]:
        """Wait for the start; the live engine (None if nothing was started) and the
        seconds waited. Raises what the start raised."""
        asked = time.time()
        limit = self.engine.config.startup_timeout_s + 60  # the start itself gives up before
        if not self.done.wait(limit):
            from zenml_compute_engines.flavors.engine import EngineError

            self.abandon(wait=False)
            raise EngineError(
                f"The {self.engine.kind} engine of '{self.engine.name}' begun while ZenML prepared the "
                f"run did not come up within {limit:g}s."
            )
        waited = time.time() - asked
        if self.error is not None:
            raise self.error
        with self._lock:
            live, self.live = self.live, None
        self._run_call = None
        return live, waited

    def abandon(self, wait: bool = True) -> None:
        """No step will take this engine: stop it now, or once its start is over (waited
        for, bounded by the start's own timeout, unless `wait` is off)."""
        with self._lock:
            self._abandoned = True
            live, self.live = self.live, None
        if live is not None:
            self.engine._close(live, reason="no step of its run used it")
        elif wait and threading.current_thread() is not self._thread:
            self._thread.join(self.engine.config.startup_timeout_s + 10)


def _forget(prestart: Prestart) -> None:
    with _LOCK:
        if _PENDING.get(prestart.engine.id) is prestart:
            del _PENDING[prestart.engine.id]


def pending(engine: "BaseEngine") -> Optional[Prestart]:
    """The start begun for `engine` that no step has taken yet."""
    return _PENDING.get(engine.id)


def take(engine: "BaseEngine") -> Tuple[Optional["LiveEngine"], float, Optional[Prestart]]:
    """For a step asking for `engine`: the pre-started engine (or None), seconds waited, and
    the prestart it came from."""
    prestart = _PENDING.get(engine.id)
    if prestart is None:
        return None, 0.0, None
    try:
        live, waited = prestart.take()
    except Exception:
        _forget(prestart)
        raise
    # (Interrupted while waiting, it stays pending: the exit handlers stop what it started.)
    _forget(prestart)
    return live, waited, prestart


def discard(engine: "BaseEngine") -> None:
    """The run is over and no step took the engine begun for it: stop it."""
    with _LOCK:
        prestart = _PENDING.pop(engine.id, None)
    if prestart is not None:
        prestart.abandon()


def discard_all() -> None:
    """Process exit or SIGTERM: stop every engine begun here that no step took."""
    with _LOCK:
        prestarts = list(_PENDING.values())
        _PENDING.clear()
    for prestart in prestarts:
        prestart.abandon()


# ---- deciding -------------------------------------------------------------------------


def consider(engine: "BaseEngine", loading: bool = False) -> None:
    """Called when ZenML constructs the component (`loading`) and whenever it reads the
    component's `validator`; begins the engine's start if a run that will use it is being
    prepared in this process. Never raises: a warm start is an optimisation, and the step
    starts the engine otherwise."""
    try:
        _consider(engine, loading)
    except Exception as e:
        logger.debug("Not pre-starting the %s engine of '%s': %s", engine.kind, engine.name, e)


def _consider(engine: "BaseEngine", loading: bool) -> None:
    from zenml_compute_engines.flavors.engine import _install_exit_handlers, current_step_context, live_engines

    mode = engine.config.prestart
    if mode == "never" or engine.id in _PENDING:
        return
    preparing = _run_being_prepared(loading)
    if preparing is None:
        return
    run_call, pipeline, stack_id, orchestrator_flavor, step_level = preparing
    if _CONSIDERED[0] is not run_call:
        _CONSIDERED[:] = [run_call, set()]
    if engine.id in _CONSIDERED[1]:
        return
    _CONSIDERED[1].add(engine.id)
    if engine.id in live_engines() or current_step_context() is not None:
        return
    if orchestrator_flavor != "local" or step_level:
        return  # the steps run elsewhere: an engine started here would serve nobody
    reason = "prestart=always" if mode == "always" else _used_by_signature(pipeline, engine)
    _install_exit_handlers()  # from this (main) thread: the start's thread cannot install SIGTERM's
    prestart = Prestart(engine, reason, pipeline_name=pipeline.name, stack_id=stack_id, run_call=run_call)
    with _LOCK:
        _PENDING[engine.id] = prestart
    _let_store_sessions_straddle_log_level_changes()
    prestart._thread.start()


def _let_store_sessions_straddle_log_level_changes() -> None:
    """ZenML's SQL store session sets `start_time` and `caller_method` (0.90: also
    `log_request_id` and `log_request`) on entry only if DEBUG logging is on then, and
    reads them on exit if DEBUG is on then. ZenML 0.90's log capture lowers the root logger's
    level while it prepares a run (to that of the lowest handler: NOTSET after a bare
    `logging.basicConfig()`) and restores it, so a store query on the prestart thread that
    straddled the change failed with AttributeError. Class defaults keep it working; only
    that session's debug line is then meaningless."""
    store = sys.modules.get("zenml.zen_stores.sql_zen_store")  # a REST store has no such sessions
    session = getattr(store, "Session", None)
    if session is None:
        return
    defaults = {"start_time": time.time(), "log_request_id": "N/A", "log_request": "", "caller_method": "unknown"}
    for name, value in defaults.items():
        if not hasattr(session, name):
            setattr(session, name, value)


def _in_file(frame: Any, file: str) -> bool:
    return frame.f_code.co_filename.replace("\\", "/").endswith(file)


def _is_frame_of(frame: Any, file: str, function: str) -> bool:
    return frame.f_code.co_name == function and _in_file(frame, file)


def _run_being_prepared(loading: bool) -> Optional[Tuple[Any, Any, Any, str, bool]]:
    """(outermost pipeline call frame, pipeline, stack id, orchestrator flavor, whether the
    orchestrator runs each step's setup where the step runs) if a run is being prepared
    on this thread: ZenML's `Pipeline._run` is loading the run's stack (`loading`: the
    earliest moment, in a process that had not loaded that stack yet; a bundle's members
    are loaded later, by the bundle), or `Pipeline._create_snapshot` validates the stack of
    the run it just compiled."""
    frame = sys._getframe(2)
    stack_model = None
    for _ in range(_MAX_FRAMES):
        if frame is None:
            return None
        local = frame.f_locals
        if _is_frame_of(frame, _STACK_FILE, "from_model") and "stack_model" in local:
            stack_model = local["stack_model"]
        elif _is_frame_of(frame, _PIPELINE_FILE, "_run") and stack_model is not None and "self" in local:
            orchestrator = stack_model.components[StackComponentType.ORCHESTRATOR][0]
            return _outermost_pipeline_frame(frame), local["self"], stack_model.id, orchestrator.flavor_name, False
        elif _is_frame_of(frame, _PIPELINE_FILE, "_create_snapshot"):
            if loading or not all(key in local for key in ("self", "snapshot", "stack")):
                return None
            orchestrator = local["stack"].orchestrator
            return (
                _outermost_pipeline_frame(frame), local["self"], local["stack"].id,
                orchestrator.flavor, orchestrator.run_init_cleanup_at_step_level,
            )
        frame = frame.f_back
    return None


def _outermost_pipeline_frame(frame: Any) -> Any:
    """The frame of the call that prepares and runs the pipeline (e.g. `Pipeline.__call__`)."""
    while frame.f_back is not None and _in_file(frame.f_back, _PIPELINE_FILE):
        frame = frame.f_back
    return frame


def _frame_running(frame: Any, thread_id: int) -> bool:
    """Whether `frame` is still on the stack of thread `thread_id`."""
    current = sys._current_frames().get(thread_id)
    while current is not None:
        if current is frame:
            return True
        current = current.f_back
    return False


def _annotation_types(annotation: Any) -> Iterator[Any]:
    """The classes inside an annotation (Annotated, Optional, Union, List[...], ...)."""
    if isinstance(annotation, type):
        yield annotation
    for argument in typing.get_args(annotation):
        yield from _annotation_types(argument)


def _used_by_signature(pipeline: Any, engine: "BaseEngine") -> Optional[str]:
    """Why a step of `pipeline` will use `engine`, from its signature or its settings
    (a bundle's settings name no member, so only signatures count for its members)."""
    slot = str(engine.type)
    for name, invocation in pipeline.invocations.items():
        step = invocation.step
        settings = step.configuration.settings
        if engine._bundle is None and any(key == slot or key.startswith(f"{slot}.") for key in settings):
            return f"step '{name}' has {slot} settings"
        definition = step.entrypoint_definition
        annotations = [parameter.annotation for parameter in definition.inputs.values()]
        annotations += [output.resolved_annotation for output in definition.outputs.values()]
        for annotation in annotations:
            for cls in _annotation_types(annotation):
                module = getattr(cls, "__module__", "") or ""
                if module.startswith(engine.data_type_modules):
                    return f"step '{name}' passes a {module}.{cls.__qualname__}"
    return None


def _used_by_last_run(pipeline_name: str, stack_id: Any, engine: "BaseEngine") -> Optional[str]:
    """Why the engine will be used, going by the latest earlier run of this pipeline on this stack."""
    from zenml.client import Client

    client = Client()
    runs = client.list_pipeline_runs(
        pipeline_name=pipeline_name, stack_id=stack_id, sort_by="desc:created", size=5, hydrate=False
    )
    for run in runs.items:
        if not run.status.is_finished:
            continue  # the run being prepared, or another one still going
        for step in client.list_run_steps(pipeline_run_id=run.id, size=1000, hydrate=True).items:
            if _names_component(step.run_metadata.get("compute_engine"), engine.name):
                return f"step '{step.name}' of the last run, {run.name}, used it"
        return None
    return None


def _names_component(facts: Any, name: str) -> bool:
    """Whether `compute_engine` metadata (one engine's facts, or a bundle's by kind) names `name`."""
    if not isinstance(facts, dict):
        return False
    if facts.get("component") == name:
        return True
    return any(isinstance(member, dict) and member.get("component") == name for member in facts.values())
