"""Register flavors, components and stacks in the test session's private ZenML store."""

from __future__ import annotations

import uuid
from typing import Any, Dict, List

import psutil

FLAVOR_SOURCES = {"spark": "flavors.SparkEngineFlavor"}


def setup() -> Any:
    from zenml.client import Client
    from zenml.enums import StackComponentType

    client = Client()
    existing = {f.name for f in client.get_flavors_by_type(StackComponentType.FEATURE_STORE)}
    for name, source in FLAVOR_SOURCES.items():
        if name not in existing:
            client.create_flavor(source=source, component_type=StackComponentType.FEATURE_STORE)
    return client


def activate_engine_stack(flavor: str, config: Dict[str, Any]) -> Any:
    """Register an engine component with `config`, put it on a fresh stack and activate it."""
    from zenml.client import Client
    from zenml.enums import StackComponentType

    client = Client()
    name = f"{flavor}-{uuid.uuid4().hex[:8]}"
    client.create_stack_component(
        name=name, flavor=flavor, component_type=StackComponentType.FEATURE_STORE, configuration=config
    )
    client.create_stack(
        name=name,
        components={
            StackComponentType.ORCHESTRATOR: "default",
            StackComponentType.ARTIFACT_STORE: "default",
            StackComponentType.FEATURE_STORE: name,
        },
    )
    client.activate_stack(name)
    return client.active_stack


def teardown_engines() -> None:
    from flavors.engine import shutdown_engines

    shutdown_engines()


def descendants(names: List[str], pid: int | None = None) -> List[psutil.Process]:
    """Live descendant processes of `pid` (default: this process) whose name is in `names`."""
    found = []
    for proc in psutil.Process(pid).children(recursive=True):
        try:
            if proc.name() in names and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except psutil.NoSuchProcess:
            pass
    return found


def java_children() -> List[psutil.Process]:
    return descendants(["java"])


def step_metadata(run: Any, step: str) -> Dict[str, Any]:
    return run.steps[step].run_metadata.get("compute_engine", {})
