"""Idempotent set-up shared by the demos: ZenML repo, engine flavors, components and stacks."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

ROOT = Path(__file__).resolve().parent.parent


def ensure_repository_and_flavors() -> None:
    """A ZenML repository at the project root (or where ZENML_REPOSITORY_PATH says) and our
    flavors registered, as `zenml-compute-engines register` does."""
    import os

    from zenml.client import Client

    from zenml_compute_engines.flavors.registration import register_flavors

    root = Path(os.environ.get("ZENML_REPOSITORY_PATH") or ROOT)
    if Client.find_repository(root) is None:
        Client.initialize(root=root)
    for registration in register_flavors():
        if registration.action != "unchanged":
            print(f"feature_store flavor {registration}")


def upsert_component(name: str, flavor: str, config: Dict[str, Any]) -> None:
    """Register an engine component, or give an existing one `config` (a demo may pass new
    values: the BigQuery demo's emulator and the prod stand-ins get fresh ports)."""
    from zenml.client import Client
    from zenml.enums import StackComponentType

    client = Client()
    kind = StackComponentType.FEATURE_STORE
    if name not in {c.name for c in client.list_stack_components(type=kind, size=1000).items}:
        client.create_stack_component(name=name, flavor=flavor, component_type=kind, configuration=config)
    else:
        client.update_stack_component(name, kind, configuration=config)


def use_engine_stack(flavor: str, component: str, config: Dict[str, Any]) -> str:
    """Register (once) an engine component named `component` on a stack of the same name, with
    `config`; activate it."""
    from zenml.client import Client
    from zenml.enums import StackComponentType

    ensure_repository_and_flavors()
    upsert_component(component, flavor, config)
    client = Client()
    if component not in {s.name for s in client.list_stacks(size=1000).items}:
        client.create_stack(
            name=component,
            components={
                StackComponentType.ORCHESTRATOR: "default",
                StackComponentType.ARTIFACT_STORE: "default",
                StackComponentType.FEATURE_STORE: component,
            },
        )
    client.activate_stack(component)
    return component
