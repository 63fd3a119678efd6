"""What an engine's steps need installed where they run: this package with the engine's
extra, the pip requirements of that extra, and system packages.

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
from typing import Any, FrozenSet, List, Optional

from zenml.logger import get_logger

from zenml_compute_engines.flavors.sources import DISTRIBUTION, installed_version

logger = get_logger(__name__)
_PACKAGE_DIR = Path(__file__).resolve().parent


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
    pyproject = _PACKAGE_DIR.parent / "pyproject.toml"
    if pyproject.exists() and sys.version_info >= (3, 11):  # tomllib is 3.11+
        import tomllib

        project = tomllib.loads(pyproject.read_text())["project"]
        extras = project["optional-dependencies"]
        return list(project["dependencies"]) + [
            f'{line}; extra == "{name}"' for name, lines in extras.items() for line in lines
        ]
    from importlib.metadata import requires

    return list(requires(DISTRIBUTION) or [])


@lru_cache(maxsize=None)
def own_requirement(extra: str) -> Optional[str]:
    """This distribution with `extra`, pinned to the installed version, for an image; None
    when its code lies inside the pipeline's source root (this repository, installed
    editable): no index serves that code, and the image installs it from the copy ZenML
    makes of the source root, which is said once in the log."""
    import site

    from zenml.utils import source_utils

    installed_dirs = [Path(d).resolve() for d in [*site.getsitepackages(), site.getusersitepackages()]]
    in_site_packages = any(d in _PACKAGE_DIR.parents for d in installed_dirs)
    source_root = Path(source_utils.get_source_root()).resolve()
    if not in_site_packages and source_root in _PACKAGE_DIR.parents:
        logger.info(
            "%s is not installed from a package here but lies in the pipeline's source root (%s), "
            "so images do not ask an index for it: have them install the copied code with "
            "DockerSettings(local_project_install_command=\"pip install --no-deps .\").",
            DISTRIBUTION, source_root,
        )
        return None
    version = installed_version()
    return f"{DISTRIBUTION}[{extra}]=={version}" if version else f"{DISTRIBUTION}[{extra}]"
