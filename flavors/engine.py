"""The lifecycle contract every compute engine shares.

An engine component is hosted on ZenML's `feature_store` slot (DESIGN.md §2), whose hooks
fire for every step. The hooks only do bookkeeping; an engine starts lazily the first time
a step asks for it (`BaseEngine.session()`), is reused according to `reuse`, and is torn
down *after* the step's outputs are saved (a StepContext cleanup callback), because ZenML
calls `cleanup_step_run` before the materializers run.

Flavors fill in `_start` (engines we can own), `_connect`, `_stop`, `_describe` (and
optionally the per-step hooks); this module never imports an engine library.
"""

from __future__ import annotations

import atexit
import difflib
import os
import signal
import threading
import time
from abc import abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Dict, List, Literal, Optional, Set, Tuple, Type
from uuid import UUID

from pydantic import Field, model_validator
from zenml.config.base_settings import BaseSettings
from zenml.enums import ExecutionMode, ExecutionStatus, StackComponentType
from zenml.stack.stack_component import StackComponentConfig
from zenml.feature_stores.base_feature_store import (
    BaseFeatureStore,
    BaseFeatureStoreConfig,
    BaseFeatureStoreFlavor,
)
from zenml.logger import get_logger
from zenml.steps.step_context import StepContext

from zenml_compute_engines.flavors.usage import StepRecord, StepUsage, UsageLater


def current_step_context() -> Optional[StepContext]:
    """The running step's context, or None outside a step (`current_step_context()` arrived in
    ZenML 0.91; before it the singleton is asked whether it exists)."""
    if hasattr(StepContext, "get"):
        return StepContext.get()
    return StepContext() if StepContext._exists() else None  # type: ignore[call-arg]

logger = get_logger(__name__)

# The ZenML slot that hosts engines. Changing host type is this line plus the three
# base classes imported above (DESIGN.md §2).
HOST_TYPE = StackComponentType.FEATURE_STORE

Reuse = Literal["step", "pipeline_run", "process"]
Teardown = Literal["always", "on_success"]
Prestart = Literal["auto", "always", "never"]


class EngineError(RuntimeError):
    """An engine could not be started, reached or used as configured."""


def reject_unknown_options(owner: str, known: Set[str], values: Any) -> Any:
    """A "before" validator's body: refuse keys that are not options of `owner`.

    ZenML's configs accept any key (0.90's registration even validates them with
    extra="ignore"), so a typo (`--mastr=...`) would otherwise be dropped silently.
    """
    if isinstance(values, dict):
        unknown = sorted(str(key) for key in values if key not in known)
        if unknown:
            guesses = []
            for key in unknown:
                close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
                if close:
                    guesses.append(f"did you mean {close[0]!r} for {key!r}?")
            raise ValueError(
                f"unknown option(s) {', '.join(map(repr, unknown))} for {owner}; "
                f"{' '.join(guesses) + ' ' if guesses else ''}known options: {', '.join(sorted(known))}"
            )
    return values


class BaseEngineSettings(BaseSettings):
    """Per-step engine options (`@step(settings={"feature_store": ...})`).

    Flavors add their own fields; the component config inherits them so that
    `get_settings()` merges component defaults with a step's overrides.
    """

    @model_validator(mode="before")
    @classmethod
    def _reject_unknown_options(cls, values: Any) -> Any:
        return reject_unknown_options(cls.__name__, cls._known_options(), values)

    @classmethod
    def _known_options(cls) -> Set[str]:
        """This class's fields and those of the component configs built on it: ZenML
        validates a component's config, merged with a step's settings, as the settings class."""
        known = set(cls.model_fields)
        pending = [cls]
        while pending:
            for subclass in pending.pop().__subclasses__():
                if issubclass(subclass, StackComponentConfig):
                    known |= set(subclass.model_fields)
                pending.append(subclass)
        return known


class BaseEngineConfig(BaseEngineSettings, BaseFeatureStoreConfig):
    """Lifecycle options shared by every engine component.

    Attributes:
        reuse: `pipeline_run` keeps an owned engine across the steps of one run,
            `step` gives every step a fresh engine, `process` keeps it warm across
            runs until the process exits.
        teardown: `always` stops an owned engine when its run ends, also after a
            failed step; `on_success` keeps it after a failure for inspection.
        startup_timeout_s: How long starting or connecting may take before the
            step fails with the address in the message.
        prestart: Under the local orchestrator, begin the start while ZenML prepares
            the run: `auto` when the run will use the engine (a step's signature holds
            its data type, a step has settings for it, or the pipeline's last run on
            this stack used it), `always` for every run, `never` to start when the first
            step asks (flavors/prestart.py). The default is `never` here; Spark and Dask,
            where a warm start was measured to gain or to cost nothing, default to `auto`
            (see docs/lifecycle.md).
        record_usage: Record what each step ran on the engine and what it cost, counted
            by the engine, under `compute_engine.usage` in the step's metadata
            (docs/usage.md).
        keep_step_record: Keep the engine's own record of each step as an artifact of
            the run (Spark's event log, Dask's performance report, Ray's timeline),
            viewable after the engine stopped. Each flavor sets its default from the
            measured cost (bench/usage_cost.py).
    """

    reuse: Reuse = "pipeline_run"
    teardown: Teardown = "always"
    startup_timeout_s: float = Field(default=120.0, gt=0)
    prestart: Prestart = "never"
    record_usage: bool = True
    keep_step_record: bool = False

    @property
    def owns_engine(self) -> bool:
        """Whether the component starts (and stops) an embedded engine itself.

        Each flavor's config provides `address` (a field or a property): where an existing
        engine runs, or None for an embedded one. It is not declared here because a parent
        property would hide a subclass field of the same name.
        """
        return getattr(self, "address", None) is None

    @property
    def is_local(self) -> bool:
        """Owned engines run on this machine."""
        return self.owns_engine


@dataclass(eq=False)
class LiveEngine:
    """One started or connected engine and what the core knows about it."""

    engine: "BaseEngine"
    handle: Any
    owned: bool
    adopted: bool
    run_id: Optional[UUID]
    started_at: float = field(default_factory=time.time)
    steps: Set[UUID] = field(default_factory=set)
    step_views: Dict[UUID, Any] = field(default_factory=dict)
    # What `_mark_step_start` noted when each step took its view (for its usage).
    step_marks: Dict[UUID, Any] = field(default_factory=dict)
    # Usage of ended steps that the engine reports later (`UsageLater`), taken at the end
    # of the next step or before the engine stops (`BaseEngine._take_later_usage`).
    later_usage: List["_LaterUsage"] = field(default_factory=list)
    kept_for_inspection: bool = False
    # `_describe` once per engine: it may cost round trips (Spark conf over py4j), and
    # what it reports does not change while the engine lives.
    facts: Dict[str, Any] = field(default_factory=dict)
    # What a flavor remembers about this engine between steps (e.g. for `_is_alive`).
    notes: Dict[str, Any] = field(default_factory=dict)

    @property
    def dashboard_url(self) -> Optional[str]:
        return self.facts.get("dashboard_url")

    @property
    def mode(self) -> str:
        if self.adopted:
            return "adopted"
        return "owned" if self.owned else "attached"


# Live engines by component id. Module-level so that a re-instantiated component
# (ZenML caches stacks, but a notebook may reload one) finds its engine again.
_LIVE: Dict[UUID, LiveEngine] = {}
_LOCK = threading.RLock()
_START_COUNTS: Dict[UUID, int] = {}
# Runs in which a step failed in this process (see `_a_consumer_follows`).
_RUNS_WITH_A_FAILED_STEP: Set[UUID] = set()
_exit_handlers_installed = False


def live_engines() -> Dict[UUID, LiveEngine]:
    """A snapshot of the engines this process has started or connected, by component id."""
    with _LOCK:
        return dict(_LIVE)


def shutdown_engines() -> None:
    """Stop every owned engine and disconnect every attached one in this process.

    Runs at interpreter exit and on SIGTERM; call it from a notebook to release a
    `reuse: process` engine early. Engines the user started by hand are left alone.
    """
    from zenml_compute_engines.flavors import prestart

    prestart.discard_all()
    with _LOCK:
        for live in list(_LIVE.values()):
            live.engine._close(live, reason="shutdown")


def _on_sigterm_factory(previous: Any) -> Any:
    def on_sigterm(signum: int, frame: Any) -> None:
        shutdown_engines()
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
        if callable(previous):
            previous(signum, frame)
        elif previous != signal.SIG_IGN:
            os.kill(os.getpid(), signal.SIGTERM)

    return on_sigterm


def _install_exit_handlers() -> None:
    global _exit_handlers_installed
    if _exit_handlers_installed:
        return
    _exit_handlers_installed = True
    atexit.register(shutdown_engines)
    # Signal handlers can only be installed from the main thread.
    if threading.current_thread() is threading.main_thread():
        previous = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, _on_sigterm_factory(previous))


class HostedInFeatureStoreSlot(BaseFeatureStore):
    """What our components answer to BaseFeatureStore's abstract methods: they are compute
    engines in the feature_store slot (DESIGN.md §2) and serve no features."""

    kind: ClassVar[str] = "engine"

    def get_historical_features(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(self._not_a_feature_store())

    def get_online_features(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(self._not_a_feature_store())

    def _not_a_feature_store(self) -> str:
        return (
            f"'{self.name}' is a {self.kind} compute engine hosted in ZenML's feature_store "
            "slot; it serves no features. Use zenml_compute_engines.compute_engine() or the typed accessors."
        )


class BaseEngine(HostedInFeatureStoreSlot):
    """A compute engine as a stack component: lazy start, reuse, guaranteed teardown."""

    kind: ClassVar[str] = "engine"
    engine_settings_class: ClassVar[Type[BaseEngineSettings]] = BaseEngineSettings
    # The engine bundle this component is a member of, if any (set by the bundle).
    _bundle: Any = None
    # What the engine's steps need where they run (a remote orchestrator's image): the
    # pip extra of this package for the engine, and system packages.
    pip_extra: ClassVar[str] = ""
    system_packages: ClassVar[Tuple[str, ...]] = ()
    # Modules of the engine's data types: a step whose signature holds one will use the
    # engine (flavors/prestart.py).
    data_type_modules: ClassVar[Tuple[str, ...]] = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        register_engine_materializers()
        # A fresh process loads the stack as its first run begins: the earliest moment an
        # engine may begin its start (`prestart`).
        from zenml_compute_engines.flavors import prestart

        prestart.consider(self, loading=True)

    @property
    def settings_class(self) -> Type[BaseEngineSettings]:
        """The flavor's settings class.

        ZenML's compiler reads this for every stack component before it resolves step
        output materializers, so this is also where our materializers get registered
        when the stack was loaded before the user's pipeline module imported the
        engine library (a notebook, a test session).
        """
        register_engine_materializers()
        return self.engine_settings_class

    @property
    def validator(self) -> None:
        """ZenML reads this whenever it validates a stack, among others right after it
        compiled a run in this process: where the engine may begin its start (`prestart`)."""
        from zenml_compute_engines.flavors import prestart

        prestart.consider(self)
        return None

    @property
    def config(self) -> BaseEngineConfig:
        return self._config  # type: ignore[return-value]

    @property
    def requirements(self) -> Set[str]:
        """pip requirements of the engine's steps: ZenML installs them in the image of a
        remote orchestrator (this package with the engine's extra, and that extra's
        requirements pinned to the versions installed here)."""
        from zenml_compute_engines.flavors.requirements import extra_requirements, own_requirement

        ours = own_requirement(self.pip_extra)
        return set(extra_requirements(self.pip_extra)) | ({ours} if ours else set())

    @property
    def apt_packages(self) -> List[str]:
        """System packages of the engine's steps (Java for Spark)."""
        return list(self.system_packages)

    @property
    def address(self) -> Optional[str]:
        """The attached engine's address, or None for an owned, embedded one."""
        return getattr(self.config, "address", None)

    def __repr__(self) -> str:
        address = self.address or "embedded"
        live = _LIVE.get(self.id)
        state = live.mode if live else "not started"
        return f"<{type(self).__name__} '{self.name}' {address} ({state})>"

    # ---- what the flavors implement ------------------------------------------------

    def _start(self, settings: BaseEngineSettings) -> Any:
        """Start an embedded engine and return its native handle.

        Only called when the config has no `address`; a service that is never owned
        (BigQuery) always has one and need not implement it.
        """
        raise NotImplementedError(f"the {self.kind} engine cannot be started embedded; it needs an address")

    @abstractmethod
    def _connect(self, settings: BaseEngineSettings) -> Any:
        """Connect to the engine at `self.address` and return a native handle."""

    @abstractmethod
    def _stop(self, handle: Any, owned: bool) -> None:
        """Stop an owned engine (releasing all it started) or disconnect from an attached one."""

    @abstractmethod
    def _describe(self, handle: Any) -> Dict[str, Any]:
        """Non-secret facts for step metadata: version, address, ids, dashboard URL."""

    def _abort_start(self) -> None:
        """Release whatever a start that timed out (or a failed stop of a dead engine) left behind."""

    def _find_user_engine(self) -> Any:
        """An engine the user started by hand in this process, to attach to, or None."""
        return None

    def _warm_up(self, handle: Any) -> None:
        """Ready an engine begun while ZenML prepared the run for its first job: work that
        job would otherwise wait for (imports, say), and nothing more, since a step that
        asks meanwhile waits for it. Runs on the start's thread, before a step can take the
        engine, within a bound; an error only skips it. Nothing by default."""

    def _restart_reason(self, live: LiveEngine, settings: BaseEngineSettings) -> Optional[str]:
        """Why the running engine cannot serve a step with these settings, or None."""
        return None

    def _is_alive(self, live: LiveEngine) -> bool:
        """Whether an engine kept from an earlier step still answers (asked once per step
        before it is reused; must be quick and never hang). A cluster that went away
        between two steps is then reconnected, or fails within `startup_timeout_s`."""
        return True

    def _step_view(self, live: LiveEngine, settings: BaseEngineSettings) -> Any:
        """The handle a step gets; flavors isolate per-step options here."""
        return live.handle

    def _release_step_view(self, live: LiveEngine, view: Any, step_run_id: UUID, step_failed: bool) -> None:
        """Release what `_step_view` created for step `step_run_id`, which is over (after its
        outputs are saved); `step_failed` says whether it failed or was interrupted."""

    def _cancel_step_work(self, live: LiveEngine, view: Any, step_run_id: UUID) -> List[str]:
        """Cancel what the failed or interrupted step `step_run_id` submitted to the engine
        and what of it still runs or waits (Spark: its jobs, Dask: its futures, Ray: its
        tasks), never another step's or another pipeline's work; returns what was cancelled,
        for the log. Called before the step's failure reaches the user, whatever `reuse`
        and `teardown` say, within a bound. Nothing by default."""
        return []

    def _step_facts(self, live: LiveEngine, view: Any) -> Dict[str, Any]:
        """Facts about what this step did with the engine (jobs, bytes), for its metadata."""
        return {}

    def _mark_step_start(self, live: LiveEngine, view: Any, step_run_id: UUID) -> Any:
        """Note what `_step_usage` and `_step_record` need to tell this step's work from
        earlier work (a time, a snapshot); called once, when the step takes its view, if
        either is on. Nothing by default."""
        return None

    def _step_usage(
        self, live: LiveEngine, view: Any, step_run_id: UUID, mark: Any
    ) -> "Optional[StepUsage | UsageLater]":
        """What step `step_run_id` ran on the engine and what it cost, from the engine's
        own accounting, counting no other step's or pipeline's work; None where the engine
        cannot tell. Called at the end of the step (after its outputs are saved, also when
        it failed), within a bound, on a thread of its own.

        An engine whose accounting reaches it after the step (Ray's task events) returns a
        function that waits for it (`UsageLater`): the core calls it at once, or, when a
        later step of the run certainly ends in this process, at that step's end, so that
        the run does not wait for it."""
        return None

    def _step_record(self, live: LiveEngine, view: Any, step_run_id: UUID, mark: Any) -> Optional[StepRecord]:
        """The engine's own record of the step, to keep as an artifact of the run; called
        like `_step_usage`, with `keep_step_record` on. None by default."""
        return None

    # ---- the public API ------------------------------------------------------------

    @property
    def start_count(self) -> int:
        """How many times this process started or connected this component's engine."""
        return _START_COUNTS.get(self.id, 0)

    def session(self) -> Any:
        """The engine-native handle for the running step (or for this process outside a step).

        Starts an owned engine or connects to an attached one on first use, reuses it
        according to `reuse`, and applies the step's settings.
        """
        from zenml_compute_engines.flavors import prestart

        context = current_step_context()
        settings = self._step_settings(context.step_run) if context is not None else self.config
        # An engine begun while ZenML prepared the run: waited for outside the lock, which
        # its start may need.
        prestarted, waited_s, begun = prestart.take(self) if context is not None else (None, 0.0, None)
        with _LOCK:
            live = _LIVE.get(self.id)
            if prestarted is not None and begun is not None:
                if live is None:
                    prestarted.run_id = context.pipeline_run.id
                    prestarted.notes["prestart"] = {
                        "reason": begun.reason,
                        "step_run_id": context.step_run.id,
                        "start_s": round((begun.ready_at or time.time()) - begun.requested_at, 3),
                        "warm_up_s": round(begun.warm_up_s, 3),
                        "waited_s": round(waited_s, 3),
                    }
                    _LIVE[self.id] = live = prestarted
                else:  # started meanwhile by a call outside any step: keep that one
                    self._close(prestarted, reason="an engine was started meanwhile")
            if live is not None and context is not None and context.step_run.id not in live.steps:
                if not live.adopted and not self._is_alive(live):
                    logger.warning(
                        "The %s engine of '%s' at %s no longer answers (it went away after an "
                        "earlier step); %s.",
                        self.kind, self.name, live.facts.get("address", self.address or "embedded"),
                        "starting a new one" if live.owned else "connecting again",
                    )
                    self._close(live, reason="it no longer answered", bounded=True)
                    live = None
            if live is not None:
                reason = self._restart_reason(live, settings)
                if reason is not None:
                    if not live.owned:
                        raise EngineError(
                            f"{reason}. The {self.kind} engine of '{self.name}' is "
                            f"{live.mode} ({self.address or 'embedded'}), so it cannot "
                            "be restarted: set the option on the cluster or on the component "
                            f"(`zenml feature-store update {self.name} ...`)."
                        )
                    logger.info("Restarting the %s engine of '%s': %s.", self.kind, self.name, reason)
                    self._close(live, reason="restart")
                    live = None
            if live is None:
                live = self._open(settings, run_id=context.pipeline_run.id if context else None)
            if context is None:
                return self._step_view(live, settings)
            step_run_id = context.step_run.id
            live.steps.add(step_run_id)
            if step_run_id not in live.step_views:
                view = live.step_views[step_run_id] = self._step_view(live, settings)
                if self.config.record_usage or self.config.keep_step_record:
                    self._mark_start_of(live, view, context)
            return live.step_views[step_run_id]

    def _mark_start_of(self, live: LiveEngine, view: Any, context: StepContext) -> None:
        """`_mark_step_start`, never failing the step: without a mark, its usage is not taken."""
        try:
            live.step_marks[context.step_run.id] = self._mark_step_start(live, view, context.step_run.id)
        except Exception as e:
            logger.warning(
                "Could not mark the start of step '%s' on the %s engine of '%s' (its usage will not be "
                "recorded): %s", context.step_run.name, self.kind, self.name, e,
            )

    def _step_settings(self, step_run: Any) -> BaseEngineSettings:
        """The component's config merged with the step's settings for it. A bundle member
        takes, of the settings the step gave the bundle, the fields its own class defines."""
        if self._bundle is None:
            return self.get_settings(step_run)  # type: ignore[return-value]
        fields = self.engine_settings_class.model_fields
        mine = {k: v for k, v in self._bundle.step_overrides(step_run).items() if k in fields}
        return self.settings_class.model_validate({**self.config.model_dump(exclude_unset=True), **mine})

    # ---- ZenML hooks ---------------------------------------------------------------

    def prepare_step_run(self, info: Any) -> None:
        """Stop a `pipeline_run` engine left over from an earlier run (its last steps were cached)."""
        live = _LIVE.get(self.id)
        if (
            live is not None
            and live.run_id is not None
            and live.run_id != info.run_id
            and self.config.reuse != "process"
        ):
            self._close(live, reason="its run is over")

    def get_step_run_metadata(self, info: Any) -> Dict[str, Any]:
        """What the step used: kind, version, address, ids, dashboard URL. (Its usage is
        added at the end of the step, `_record_step`: ZenML asks for this before the
        step's outputs are saved.)"""
        live = _LIVE.get(self.id)
        if live is None or info.step_run_id not in live.steps:
            return {}
        return {"compute_engine": self._engine_facts(live, info.step_run_id)}

    def _engine_facts(self, live: LiveEngine, step_run_id: UUID) -> Dict[str, Any]:
        facts = {
            "engine": self.kind,
            "component": self.name,
            "mode": live.mode,
            "reuse": self.config.reuse,
            "engine_starts_in_process": self.start_count,
            **live.facts,
        }
        begun = live.notes.get("prestart")
        facts["prestarted"] = begun is not None
        if begun is not None:  # how much of the start the step that took it still waited for
            facts["prestart_reason"] = begun["reason"]
            facts["prestart_start_s"] = begun["start_s"]
            facts["prestart_warm_up_s"] = begun["warm_up_s"]
            facts["prestart_waited_s"] = begun["waited_s"] if begun["step_run_id"] == step_run_id else 0.0
        view = live.step_views.get(step_run_id)
        if view is not None:
            facts.update(self._step_facts(live, view))
        return facts

    def cleanup_step_run(self, info: Any, step_failed: bool) -> None:
        """Defer teardown until after the step's outputs are saved."""
        context = current_step_context()
        if context is None:
            self._end_of_step(info, step_failed)
        else:
            # Runs when the StepContext exits, i.e. after the materializers saved the
            # outputs, which may still need the engine to compute a lazy result, or may
            # start it (a materializer asking for the engine): registered even when no
            # engine is live yet, so that one is stopped too.
            context._cleanup_registry.register_callback(self._end_of_step, info, step_failed)

    def _end_of_step(self, info: Any, step_failed: bool) -> None:
        from zenml_compute_engines.flavors import prestart

        if step_failed:
            _RUNS_WITH_A_FAILED_STEP.add(info.run_id)
        if prestart.pending(self) is not None and (step_failed or _run_is_over(info)):
            prestart.discard(self)
        with _LOCK:
            live = _LIVE.get(self.id)
            if live is None:
                return
            view = live.step_views.get(info.step_run_id)
            if view is not None and step_failed:
                self._cancel_within_bound(live, view, info)
            self._take_later_usage(live)
            if view is not None:
                self._record_step(live, view, info, step_failed)
                del live.step_views[info.step_run_id]
                self._release_step_view(live, view, info.step_run_id, step_failed)
            # (An engine kept across runs, reuse=process, belongs to the run that started it.)
            if live.run_id != info.run_id or live.kept_for_inspection or self.config.reuse == "process":
                return
            if step_failed and self.config.teardown == "on_success":
                live.kept_for_inspection = True
                logger.warning(
                    "Step '%s' failed; keeping the %s engine of '%s' for inspection "
                    "(teardown=on_success)%s. It stops when this process exits or the next run starts.",
                    info.pipeline_step_name,
                    self.kind,
                    self.name,
                    f", dashboard: {live.dashboard_url}" if live.dashboard_url else "",
                )
                return
            if step_failed or self.config.reuse == "step" or _run_is_over(info):
                self._close(live, reason="its run is over" if not step_failed else "a step failed")

    def _cancel_within_bound(self, live: LiveEngine, view: Any, info: Any) -> None:
        """`_cancel_step_work` for a step that failed or was interrupted: logged, bounded,
        never raising (the step's own error is what the user must see)."""
        try:
            cancelled = _call_within(
                _CANCEL_S, f"{self.kind}-cancel", self._cancel_step_work, live, view, info.step_run_id
            )
        except Exception as e:
            logger.warning(
                "Cancelling what step '%s' still ran on the %s engine of '%s' failed: %s",
                info.pipeline_step_name, self.kind, self.name, e,
            )
            return
        if cancelled:
            logger.info(
                "Step '%s' failed or was interrupted: cancelled its work on the %s engine of '%s' (%s).",
                info.pipeline_step_name, self.kind, self.name, ", ".join(cancelled),
            )

    def _record_step(self, live: LiveEngine, view: Any, info: Any, step_failed: bool) -> None:
        """Add the step's usage (and its record, an artifact) to its `compute_engine`
        metadata, published again in full: ZenML keeps the latest value of a key. Bounded
        and never raising: a step's own outcome is what the user must see."""
        mark = live.step_marks.pop(info.step_run_id, None)
        if not (self.config.record_usage or self.config.keep_step_record):
            return
        facts = self._engine_facts(live, info.step_run_id)
        step = info.pipeline_step_name
        if self.config.record_usage:
            usage = self._bounded("usage", step, self._step_usage, live, view, info.step_run_id, mark)
            if callable(usage):
                if not self.config.keep_step_record and not step_failed and _a_later_step_ends_here(info):
                    live.later_usage.append(_LaterUsage(info.step_run_id, step, facts, usage))
                    return
                usage = self._bounded("usage", step, usage)
            if usage is not None:
                facts["usage"] = usage.as_metadata()
        if self.config.keep_step_record:
            record = self._bounded("record", step, self._step_record, live, view, info.step_run_id, mark)
            if record is not None:
                facts["record"] = self._save_record(record, info)
        if "usage" in facts or "record" in facts:
            self._publish_step_facts(info.step_run_id, step, facts)

    def _take_later_usage(self, live: LiveEngine) -> None:
        """Take and publish the usage that ended steps left for later (`UsageLater`): at the
        end of the next step, before the engine stops, and at exit. Bounded, never raising."""
        while live.later_usage:
            later = live.later_usage.pop(0)
            usage = self._bounded("usage", later.step_name, later.usage)
            if usage is not None:
                self._publish_step_facts(later.step_run_id, later.step_name, {**later.facts, "usage": usage.as_metadata()})

    def _publish_step_facts(self, step_run_id: UUID, step_name: str, facts: Dict[str, Any]) -> None:
        try:
            from zenml.client import Client
            from zenml.orchestrators.publish_utils import publish_step_run_metadata

            if self._bundle is not None:  # the bundle's metadata holds each member by kind
                published = Client().get_run_step(step_run_id).run_metadata.get("compute_engine")
                facts = {**(published if isinstance(published, dict) else {}), self.kind: facts}
            publish_step_run_metadata(step_run_id, {self.id: {"compute_engine": facts}})
        except Exception as e:
            logger.warning("Recording the usage of step '%s' failed: %s", step_name, e)

    def _bounded(self, what: str, step_name: str, function: Any, *args: Any) -> Any:
        try:
            return _call_within(_RECORD_S, f"{self.kind}-{what}", function, *args)
        except Exception as e:
            logger.warning(
                "Could not take the %s of step '%s' from the %s engine of '%s': %s",
                what, step_name, self.kind, self.name, e,
            )
            return None

    def _save_record(self, record: StepRecord, info: Any) -> Dict[str, Any]:
        """Save `record` as an artifact of the step (on the step's thread: ZenML links it to
        the running step); what the metadata says of it."""
        from zenml import save_artifact

        name = f"{info.pipeline.name}::{info.pipeline_step_name}::{record.name}"
        try:
            artifact = save_artifact(record.data, name=name)
        except Exception as e:
            logger.warning("Keeping the %s of step '%s' failed: %s", record.name, info.pipeline_step_name, e)
            return {"error": str(e)}
        # A fact may name the artifact's folder as "{uri}" (a command that opens it).
        facts = {k: v.replace("{uri}", artifact.uri) if isinstance(v, str) else v for k, v in record.facts.items()}
        return {"artifact": name, "uri": artifact.uri, **facts}

    # ---- the state machine ---------------------------------------------------------

    def _open(self, settings: BaseEngineSettings, run_id: Optional[UUID]) -> LiveEngine:
        live = self._open_live(settings, run_id)
        _LIVE[self.id] = live
        return live

    def _open_live(self, settings: BaseEngineSettings, run_id: Optional[UUID]) -> LiveEngine:
        """Start, connect or adopt the engine; the caller registers it."""
        # After a stop of ours that failed or gave up, whatever engine of this kind the
        # process still holds is ours, not one the user started: never adopted.
        handle = None if self.kind in _UNRELEASED else self._find_user_engine()
        if handle is not None:
            live = LiveEngine(self, handle, owned=False, adopted=True, run_id=run_id)
            logger.info("Using the %s engine already running in this process (not stopped by us).", self.kind)
        else:
            owned = self.config.owns_engine
            handle = self._within_timeout(settings, owned)
            live = LiveEngine(self, handle, owned=owned, adopted=False, run_id=run_id)
            _install_exit_handlers()
            _UNRELEASED.pop(self.kind, None)
        live.facts = self._describe(handle)
        if not live.adopted:
            logger.info(
                "%s %s engine for '%s' at %s%s.",
                "Started" if live.owned else "Connected to",
                self.kind,
                self.name,
                live.facts.get("address", self.address or "embedded"),
                f"; dashboard: {live.dashboard_url}" if live.dashboard_url else "",
            )
        _START_COUNTS[self.id] = _START_COUNTS.get(self.id, 0) + 1
        return live

    def _close(self, live: LiveEngine, reason: str, bounded: bool = False) -> None:
        """Stop or disconnect `live`; `bounded`: give up waiting after a few seconds (an
        engine whose cluster is gone may block in its stop call)."""
        with _LOCK:
            if _LIVE.get(self.id) is live:
                del _LIVE[self.id]
            self._take_later_usage(live)
            if live.adopted:
                return
            try:
                if bounded:
                    _call_within(_BOUNDED_STOP_S, f"{self.kind}-stop", self._stop, live.handle, owned=live.owned)
                else:
                    self._stop(live.handle, owned=live.owned)
            except Exception as e:  # teardown must go on for other engines
                # Until the next start or connect of ours, the engine stays ours; a stop
                # given up at its bound may still be running, and that start waits for it.
                _UNRELEASED[self.kind] = e.thread if isinstance(e, _DeadlinePassed) else None
                self._abort_start()  # drop what the failed stop left, so a new start is clean
                logger.warning("Stopping the %s engine of '%s' failed: %s", self.kind, self.name, e)
            else:
                logger.info(
                    "%s the %s engine of '%s' (%s).",
                    "Stopped" if live.owned else "Disconnected from",
                    self.kind,
                    self.name,
                    reason,
                )

    def _within_timeout(self, settings: BaseEngineSettings, owned: bool) -> Any:
        """Start (`owned`) or connect to the engine, failing with the address after `startup_timeout_s`.

        A start given up at its deadline cannot be interrupted (pyspark launching its driver
        JVM, `ray.init`): it runs on, and whatever it yields once it finishes is stopped.
        Engines keep process-wide state (pyspark's active context), so the next start of
        the same kind first waits for that abandoned one, within its own deadline.
        """
        start, verb = (self._start, "start") if owned else (self._connect, "connect to")
        timeout = self.config.startup_timeout_s
        where = self.address or "an embedded engine"
        earlier = [t for t in (_ABANDONED_STARTS.get(self.kind), _UNRELEASED.get(self.kind)) if t is not None]
        given_up = threading.Event()

        def attempt() -> Any:
            for thread in earlier:
                thread.join()
            return None if given_up.is_set() else start(settings)

        def discard(handle: Any) -> None:
            # Not `_close`: that takes the engines' lock, which the caller of the next start
            # holds while that start waits for this thread.
            logger.info("A %s start of '%s' given up at its timeout finished late; stopping it.", self.kind, self.name)
            try:
                self._stop(handle, owned=owned)
            except Exception as e:
                logger.warning("Stopping the late %s engine of '%s' failed: %s", self.kind, self.name, e)
                self._abort_start()  # drop what the failed stop left, so the next start is clean

        try:
            return _call_within(timeout, f"{self.kind}-start", attempt, on_late_result=discard)
        except _DeadlinePassed as passed:
            given_up.set()
            _ABANDONED_STARTS[self.kind] = passed.thread
            self._abort_start()
            still = (
                " An earlier start or stop of this engine, given up at its own bound, has not finished yet."
                if any(thread.is_alive() for thread in earlier) else ""
            )
            raise EngineError(
                f"Could not {verb} the {self.kind} engine of '{self.name}' at {where} within "
                f"startup_timeout_s={timeout:g}s. Check that it is running and reachable.{still}"
            ) from None
        except BaseException as e:  # the start's own error, handed to this thread
            self._abort_start()
            raise EngineError(f"Could not {verb} the {self.kind} engine of '{self.name}' at {where}: {e}") from e


# The start of each engine kind last given up at its deadline (it may still be running).
_ABANDONED_STARTS: Dict[str, threading.Thread] = {}
# Engine kinds whose last stop of ours failed, with the thread of a stop given up at its
# bound (it may still be running) or None; cleared by the next start or connect of ours.
_UNRELEASED: Dict[str, Optional[threading.Thread]] = {}

_BOUNDED_STOP_S = 10.0
_CANCEL_S = 15.0
_RECORD_S = 30.0


@dataclass
class _LaterUsage:
    """An ended step's usage that its engine reports later, with the facts to publish it with."""

    step_run_id: UUID
    step_name: str
    facts: Dict[str, Any]
    usage: UsageLater


class _DeadlinePassed(Exception):
    """`_call_within` gave up waiting (distinct from any TimeoutError the call raises)."""

    def __init__(self, message: str, thread: threading.Thread) -> None:
        super().__init__(message)
        self.thread = thread  # still running the call


def _call_within(
    timeout_s: float, thread_name: str, function: Any, *args: Any, on_late_result: Any = None, **kwargs: Any
) -> Any:
    """Call `function` on a daemon thread and return its result; raise what it raised, or
    `_DeadlinePassed` if it has not returned in `timeout_s`. The call is then left to
    finish (or to die with the process); `on_late_result`, if given, gets a result it
    returns after that, on the same thread. A late error is dropped: nobody waits for it.
    Where Python starts no thread (an atexit handler on 3.12+), the call runs on the
    caller's thread, without the bound."""
    outcome: Dict[str, Any] = {}
    decided = threading.Lock()  # the call finishing vs. the caller giving up

    def run() -> None:
        try:
            result = function(*args, **kwargs)
        except BaseException as e:  # handed to the caller's thread
            with decided:
                outcome["error"] = e
            return
        with decided:
            outcome["result"] = result
            late = outcome.get("given_up", False)
        if late and on_late_result is not None and result is not None:
            on_late_result(result)

    worker = threading.Thread(target=run, name=thread_name, daemon=True)
    try:
        worker.start()
    except RuntimeError:  # no new thread from an atexit handler (Python 3.12+): here, unbounded
        return function(*args, **kwargs)
    worker.join(timeout_s)
    with decided:
        if "result" not in outcome and "error" not in outcome:
            outcome["given_up"] = True
            raise _DeadlinePassed(f"gave up after {timeout_s:g}s", worker)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


class BaseEngineFlavor(BaseFeatureStoreFlavor):
    """Base flavor: the host type and the shared config live here."""

    @property
    def type(self) -> StackComponentType:
        return HOST_TYPE

    @property
    def config_class(self) -> Type[BaseEngineConfig]:
        return BaseEngineConfig


# Engine-library module -> our materializer for its data type. Every engine component
# registers all of them, so a step may return a Dask DataFrame on a Spark stack and still
# get the shared format. A materializer is imported only when the user's code already
# imported the engine library: the component never imports one (DESIGN.md §3).
ENGINE_MATERIALIZERS = {
    "pyspark.sql": "zenml_compute_engines.materializers.spark_dataframe",
    "dask.dataframe": "zenml_compute_engines.materializers.dask_dataframe",
    "ray.data": "zenml_compute_engines.materializers.ray_dataset",
    "pyarrow": "zenml_compute_engines.materializers.arrow_table",
}


def register_engine_materializers() -> None:
    """Import our materializer for each engine library the user's code already imported."""
    import importlib
    import sys

    for engine_module, materializer_module in ENGINE_MATERIALIZERS.items():
        if engine_module in sys.modules and materializer_module not in sys.modules:
            importlib.import_module(materializer_module)


# CANCELLED exists from ZenML 0.95 on.
_TERMINAL_FAILURES = {s for s in ExecutionStatus if s.name in ("FAILED", "STOPPED", "CANCELLED")}


def _input_specs(spec: Any) -> List[Any]:
    """The upstream outputs a step consumes (newer ZenML allows several per input)."""
    if hasattr(spec, "normalized_inputs"):
        return [one for specs in spec.normalized_inputs.values() for one in specs]
    return list(spec.inputs.values())


def _a_consumer_follows(info: Any) -> bool:
    """Whether a step of the run consumes an output of the step that just executed.

    That step certainly executes later (its input is a new artifact, so its cache key is
    new), unless a failed step blocks it: decided from the snapshot alone, without the
    store query of `_run_is_over`, for every step of a chain but the last. Only
    `StepRunInfo`s that carry the snapshot (ZenML 0.91+) and runs without a failed step.
    """
    snapshot = getattr(info, "snapshot", None)
    if snapshot is None or info.run_id in _RUNS_WITH_A_FAILED_STEP:
        return False
    return any(
        spec.step_name == info.pipeline_step_name
        for step in snapshot.step_configurations.values()
        for spec in _input_specs(step.spec)
    )


def _a_later_step_ends_here(info: Any) -> bool:
    """Whether a later step of the run certainly ends in this process (`_a_consumer_follows`,
    under an orchestrator that runs every step here); False when that cannot be told."""
    from zenml.client import Client

    try:
        return _a_consumer_follows(info) and not Client().active_stack.orchestrator.run_init_cleanup_at_step_level
    except Exception:
        return False


def _run_is_over(info: Any) -> bool:
    """Whether no later step of this run will certainly execute in this process.

    Orchestrators that isolate steps run each in its own environment, so every step is
    the last one there. The local orchestrator runs all steps here, in order. A later
    step certainly executes when its cache is off or it consumes an output produced in
    this run (a new artifact means a new cache key). A step that may be served from the
    cache runs no hooks, so we do not wait for it: if it executes after all, it starts
    the engine again lazily.
    """
    from zenml.client import Client

    client = Client()
    if client.active_stack.orchestrator.run_init_cleanup_at_step_level:
        return True
    if _a_consumer_follows(info):
        return False
    statuses = {
        step.name: step.status
        for step in client.list_run_steps(pipeline_run_id=info.run_id, size=1000, hydrate=False)
    }
    statuses[info.pipeline_step_name] = ExecutionStatus.COMPLETED
    failed = {name for name, status in statuses.items() if status in _TERMINAL_FAILURES}
    # ZenML 0.90's StepRunInfo has no snapshot (later ones do); its run has.
    snapshot = getattr(info, "snapshot", None) or client.get_pipeline_run(info.run_id).snapshot
    pipeline_config = snapshot.pipeline_configuration
    if failed and pipeline_config.execution_mode != ExecutionMode.CONTINUE_ON_FAILURE:
        return True
    executed = {name for name, status in statuses.items() if status == ExecutionStatus.COMPLETED}
    blocked = set(failed)
    for name, step in snapshot.step_configurations.items():
        status = statuses.get(name)
        if status is not None and status.is_finished:
            continue
        if blocked.intersection(step.spec.upstream_steps):
            blocked.add(name)  # skipped after an upstream failure
            continue
        cache = step.config.enable_cache
        if cache is None:
            cache = pipeline_config.enable_cache is not False
        fresh_input = any(spec.step_name in executed for spec in _input_specs(step.spec))
        if not cache or fresh_input:
            return False
    return True
