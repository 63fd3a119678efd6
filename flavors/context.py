"""Find the compute engine of the running step (or, outside a step, of the active stack)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from flavors.engine import BaseEngine, EngineError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

_REGISTER_HINT = {
    "spark": (
        "zenml feature-store flavor register flavors.SparkEngineFlavor && "
        "zenml feature-store register spark_local --flavor=spark && "
        "zenml stack update -f spark_local"
    ),
}


def compute_engine(kind: Optional[str] = None) -> BaseEngine:
    """The engine component of the active stack, optionally checked to be of `kind`.

    Inside a step the orchestrator has activated the step's stack, so this is the
    engine of the running step; `.session()` on it applies the step's settings.

    Raises:
        EngineError: if the active stack has no engine (of that kind); the message
            says which commands register one.
    """
    from zenml.client import Client

    stack = Client().active_stack
    component = stack.feature_store
    if isinstance(component, BaseEngine) and kind in (None, component.kind):
        return component
    wanted = f"a {kind} engine" if kind else "a compute engine"
    found = (
        f"its feature_store '{component.name}' is a {getattr(component, 'kind', component.flavor)}"
        if component is not None
        else "it has none"
    )
    hint = _REGISTER_HINT.get(kind or "spark")
    raise EngineError(f"The active stack '{stack.name}' needs {wanted}, but {found}. Register one: {hint}")


def spark_session() -> "SparkSession":
    """The SparkSession of the running step, started or connected on first use.

    Never call `stop()` on it: the engine component stops owned engines after the
    run's outputs are saved and never stops a cluster it did not start.
    """
    return compute_engine("spark").session()
