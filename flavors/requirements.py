"""What an engine's steps need installed where they run: the pip requirements of the
engine's extra of this package and system packages.

A requirement is pinned to the version installed where the pipeline is submitted when
that version is in our range: an image must run the pyspark or Ray the user developed
with, which is the one that matches their cluster, not the newest the range admits.

ZenML builds a remote orchestrator's image from `component.requirements` and
`component.apt_packages`; the engine components report these.
"""

from __future__ import annotations

import sys
from functools import lru_cache
from pathlib import Path
from typing import Any, FrozenSet, List

DISTRIBUTION = "zenml-compute-engines"


@lru_cache(maxsize=None)
def extra_requirements(extra: str) -> FrozenSet[str]:
    """Our base dependencies (but ZenML, which the image has) and what our `extra` adds,
    each pinned to the local version if that is in range: from pyproject.toml in a source
    tree (an editable install's metadata can be older than it), else from the installed
    package's metadata."""
    from packaging.requirements import Requirement

    found = set()
    for line in _declared():
        requirement = Requirement(line)
        if requirement.name in (DISTRIBUTION, "zenml"):
            continue  # `all` and `test` name other extras; each engine asks for its own
        if requirement.marker is None or requirement.marker.evaluate({"extra": extra}):
            requirement.marker = None
            found.add(str(_pinned_to_local(requirement)))
    return frozenset(found)


def _pinned_to_local(requirement: Any) -> Any:
    """`requirement` with `==` the installed version, when one is installed and in range."""
    from importlib.metadata import PackageNotFoundError, version

    from packaging.specifiers import SpecifierSet

    try:
        installed = version(requirement.name)
    except PackageNotFoundError:
        return requirement
    if requirement.specifier and not requirement.specifier.contains(installed, prereleases=True):
        return requirement
    requirement.specifier = SpecifierSet(f"=={installed}")
    return requirement


def _declared() -> List[str]:
    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    if pyproject.exists() and sys.version_info >= (3, 11):  # tomllib is 3.11+
        import tomllib

        project = tomllib.loads(pyproject.read_text())["project"]
        extras = project["optional-dependencies"]
        return list(project["dependencies"]) + [
            f'{line}; extra == "{name}"' for name, lines in extras.items() for line in lines
        ]
    from importlib.metadata import requires

    return list(requires(DISTRIBUTION) or [])
