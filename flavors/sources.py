"""How ZenML records our classes: by the module they are installed as.

ZenML records a class it must load again later (a registered flavor, a step output's
materializer, an artifact's data type) as module + attribute. For a file below the
pipeline's source root it derives the module from the file's path instead of taking the
module's name: run from this repository, `zenml_compute_engines.materializers.dataset`
would be recorded as `materializers.dataset` and loaded a second time under that name,
with a second registry of live engines. A class carrying `__zenml_source__` is recorded
as that source (ZenML 0.90 and later), so ours carry one naming their installed module,
in this distribution at its installed version.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Optional, Type, TypeVar

DISTRIBUTION = "zenml-compute-engines"

T = TypeVar("T", bound=type)


class _InstalledSource:
    """`__zenml_source__` of one class of ours; None for a subclass (a user's own class,
    which ZenML records as usual)."""

    def __init__(self, owner: type) -> None:
        self._owner = owner

    def __get__(self, instance: Any, owner: Optional[Type[Any]] = None) -> Any:
        if owner is not self._owner:
            return None
        from zenml.config.source import DistributionPackageSource, SourceType

        return DistributionPackageSource(
            module=owner.__module__,
            attribute=owner.__qualname__,
            package_name=DISTRIBUTION,
            version=installed_version(),
            type=SourceType.DISTRIBUTION_PACKAGE,
        )


def recorded_as_installed(cls: T) -> T:
    """Class decorator: ZenML records `cls` under the module it was imported as."""
    cls.__zenml_source__ = _InstalledSource(cls)  # type: ignore[attr-defined]
    return cls


@lru_cache(maxsize=None)
def installed_version() -> Optional[str]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return None
