"""The engine bundle: stands in the stack's one feature_store slot and delegates every hook
to its member engine components, each of which keeps its own lifecycle.

Members are the registered components the config names, loaded once per bundle instance
(ZenML caches stack components per process, so a run's steps share them and their engines).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Set, Tuple

from zenml.stack.stack_validator import StackValidator

from zenml_compute_engines.flavors import prestart
from zenml_compute_engines.flavors.bundle.flavor import EngineBundleConfig, EngineBundleSettings
from zenml_compute_engines.flavors.engine import (
    HOST_TYPE,
    BaseEngine,
    EngineError,
    HostedInFeatureStoreSlot,
    register_engine_materializers,
)


class EngineBundle(HostedInFeatureStoreSlot):
    """Several engines in one stack; `compute_engine(kind)` resolves to the member of that kind."""

    kind = "engine bundle"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._members: Optional[Dict[str, BaseEngine]] = None
        register_engine_materializers()

    @property
    def config(self) -> EngineBundleConfig:
        return self._config  # type: ignore[return-value]

    @property
    def settings_class(self) -> type:
        register_engine_materializers()  # see BaseEngine.settings_class
        return EngineBundleSettings

    def __repr__(self) -> str:
        return f"<EngineBundle '{self.name}' engines={list(self.config.engines)}>"

    # ---- members -----------------------------------------------------------------------

    @property
    def members(self) -> Dict[str, BaseEngine]:
        """The member engines by kind; raises EngineError naming what is wrong."""
        if self._members is None:
            members, problems = self._load_members()
            if problems:
                raise EngineError(f"Engine bundle '{self.name}': {'; '.join(problems)}.")
            for member in members.values():
                member._bundle = self
            self._members = members
        return self._members

    def member(self, kind: str) -> BaseEngine:
        members = self.members
        if kind not in members:
            raise EngineError(
                f"The engine bundle '{self.name}' has no {kind} engine (it has "
                f"{', '.join(sorted(members)) or 'none'}); add one: `zenml feature-store update "
                f"{self.name} --engines='[...]'`."
            )
        return members[kind]

    def _load_members(self) -> Tuple[Dict[str, BaseEngine], List[str]]:
        from zenml.client import Client
        from zenml.stack import StackComponent

        client = Client()
        members: Dict[str, BaseEngine] = {}
        problems: List[str] = []
        for name in self.config.engines:
            try:
                model = client.get_stack_component(HOST_TYPE, name, allow_name_prefix_match=False)
            except KeyError:
                problems.append(f"no feature_store component named {name!r} is registered")
                continue
            component = StackComponent.from_model(model)
            if isinstance(component, EngineBundle):
                problems.append(f"{name!r} is itself an engine bundle; name its engines instead")
            elif not isinstance(component, BaseEngine):
                problems.append(f"{name!r} is a {model.flavor_name} feature store, not a compute engine")
            elif component.kind in members:
                problems.append(
                    f"{name!r} and {members[component.kind].name!r} are both {component.kind} engines; "
                    "a bundle holds one engine of each kind"
                )
            else:
                members[component.kind] = component
        return members, problems

    @property
    def validator(self) -> StackValidator:
        """Checks the members whenever ZenML validates a stack holding the bundle (on
        every run, before its first step)."""

        def members_are_valid(stack: Any) -> Tuple[bool, str]:
            _, problems = self._load_members()
            return (not problems, f"Engine bundle '{self.name}': {'; '.join(problems)}.")

        try:
            members = self.members
        except EngineError:
            members = {}  # the validator says what is wrong
        for member in members.values():
            prestart.consider(member)  # see BaseEngine.validator
        return StackValidator(custom_validation_function=members_are_valid)

    @property
    def requirements(self) -> Set[str]:
        """Every member's pip requirements (a remote orchestrator's image needs them all)."""
        return set().union(*(member.requirements for member in self.members.values()))

    @property
    def apt_packages(self) -> List[str]:
        return sorted({package for member in self.members.values() for package in member.apt_packages})

    # ---- ZenML hooks, delegated ------------------------------------------------------------

    def prepare_step_run(self, info: Any) -> None:
        for member in self.members.values():
            member.prepare_step_run(info)

    def get_step_run_metadata(self, info: Any) -> Dict[str, Any]:
        """`compute_engine` holds each member the step used, by kind."""
        used = {}
        for kind, member in self.members.items():
            facts = member.get_step_run_metadata(info).get("compute_engine")
            if facts:
                used[kind] = facts
        return {"compute_engine": used} if used else {}

    def cleanup_step_run(self, info: Any, step_failed: bool) -> None:
        for member in self.members.values():
            member.cleanup_step_run(info, step_failed)

    def step_overrides(self, step_run: Any) -> Dict[str, Any]:
        """The step's settings under the bundle's key, as a dict of fields."""
        settings = self.get_settings(step_run).model_dump(exclude_unset=True)
        return {k: v for k, v in settings.items() if k != "engines"}
