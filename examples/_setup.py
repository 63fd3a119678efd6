"""Idempotent set-up shared by the demos: ZenML repo, engine flavor, component and stack."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

ROOT = Path(__file__).resolve().parent.parent


def use_engine_stack(flavor: str, source: str, component: str, config: Dict[str, Any]) -> str:
    """Register (once) an engine component named `component` on a stack of the same name, with
    `config`; activate it."""
    from zenml.client import Client
    from zenml.enums import StackComponentType

    if Client.find_repository(ROOT) is None:
        Client.initialize(root=ROOT)
    client = Client()
    kind = StackComponentType.FEATURE_STORE
    if flavor not in {f.name for f in client.get_flavors_by_type(kind)}:
        client.create_flavor(source=source, component_type=kind)
    if component not in {c.name for c in client.list_stack_components(type=kind, size=1000).items}:
        client.create_stack_component(name=component, flavor=flavor, component_type=kind, configuration=config)
    else:  # a demo may pass new values (the BigQuery demo's emulator gets a fresh port)
        client.update_stack_component(component, kind, configuration=config)
    if component not in {s.name for s in client.list_stacks(size=1000).items}:
        client.create_stack(
            name=component,
            components={
                StackComponentType.ORCHESTRATOR: "default",
                StackComponentType.ARTIFACT_STORE: "default",
                kind: component,
            },
        )
    client.activate_stack(component)
    return component
