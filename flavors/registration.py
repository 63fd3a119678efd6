"""Register every flavor of this package in the active ZenML store, idempotently.

`zenml-compute-engines register` (src/zenml_compute_engines/cli.py) calls this; so do the
demos and the tests. A flavor already registered from this package is left as it is, or
updated when its source or its options changed (an upgrade of this package, or a flavor
registered under the pre-namespace path `flavors.SparkEngineFlavor`). A flavor of the same
name and type that is someone else's is never overwritten.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Type

from zenml_compute_engines.flavors.engine import BaseEngineFlavor

# Sources our flavors were registered under before the package had a namespace of its own.
_LEGACY_PREFIXES = ("flavors.",)
_OUR_PREFIX = "zenml_compute_engines."


@dataclass(frozen=True)
class FlavorRegistration:
    """What `register_flavors` did with one flavor."""

    name: str
    source: str
    action: str  # "registered", "updated" or "unchanged"
    previous_source: Optional[str] = None

    def __str__(self) -> str:
        if self.action == "updated" and self.previous_source != self.source:
            return f"{self.name}: updated (was {self.previous_source}) -> {self.source}"
        if self.action == "updated":
            return f"{self.name}: updated its options ({self.source})"
        return f"{self.name}: {self.action} ({self.source})"


def flavor_classes() -> List[Type[BaseEngineFlavor]]:
    """Every flavor this package provides."""
    from zenml_compute_engines.flavors import (
        BigQueryEngineFlavor,
        DaskEngineFlavor,
        EngineBundleFlavor,
        RayEngineFlavor,
        SparkEngineFlavor,
    )

    return [SparkEngineFlavor, DaskEngineFlavor, RayEngineFlavor, BigQueryEngineFlavor, EngineBundleFlavor]


class FlavorNameTaken(RuntimeError):
    """A flavor of the same name and type is registered from another package."""


def register_flavors() -> List[FlavorRegistration]:
    """Register (or bring up to date) every flavor of ours in the active ZenML store.

    Raises:
        FlavorNameTaken: if a feature_store flavor of one of our names is registered from
            a source that is not this package; nothing is changed for that flavor.
    """
    from zenml.client import Client
    from zenml.models import FlavorUpdate

    client = Client()
    done = []
    for flavor_class in flavor_classes():
        flavor = flavor_class()
        wanted = flavor.to_model(integration="custom", is_custom=True)
        try:
            existing = client.get_flavor_by_name_and_type(name=flavor.name, component_type=flavor.type)
        except KeyError:
            existing = None
        if existing is None:
            client.zen_store.create_flavor(flavor=wanted)
            done.append(FlavorRegistration(flavor.name, wanted.source, "registered"))
            continue
        if not existing.source.startswith((_OUR_PREFIX, *_LEGACY_PREFIXES)):
            raise FlavorNameTaken(
                f"A {flavor.type.value} flavor named '{flavor.name}' is already registered from "
                f"{existing.source}, which is not this package. Remove it "
                f"(`zenml {flavor.type.value.replace('_', '-')} flavor delete {flavor.name}`) and run "
                "this command again."
            )
        if existing.source == wanted.source and existing.config_schema == wanted.config_schema:
            done.append(FlavorRegistration(flavor.name, wanted.source, "unchanged"))
            continue
        client.zen_store.update_flavor(
            flavor_id=existing.id,
            flavor_update=FlavorUpdate(source=wanted.source, config_schema=wanted.config_schema),
        )
        done.append(FlavorRegistration(flavor.name, wanted.source, "updated", previous_source=existing.source))
    return done
