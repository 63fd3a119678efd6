"""The installed namespace: our modules exist once, under `zenml_compute_engines`, and ZenML
records every class of ours it may load again by that name, even with this checkout as the
source root (where ZenML derives a module's name from its file's path)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support.zenml_env import ROOT_DIR

PROBE = """
import importlib, inspect, pkgutil, sys
from zenml.materializers.base_materializer import BaseMaterializer
from zenml.stack.flavor import Flavor
from zenml.utils import source_utils
import zenml_compute_engines
from zenml_compute_engines.materializers.bigquery_dataset import BigQueryDataset

source_utils.set_custom_source_root({root!r})
for package in ("zenml_compute_engines.flavors", "zenml_compute_engines.materializers"):
    for module in pkgutil.walk_packages(importlib.import_module(package).__path__, package + "."):
        importlib.import_module(module.name)
ours = [
    cls for name, module in list(sys.modules.items()) if name.startswith("zenml_compute_engines.")
    for cls in vars(module).values()
    if inspect.isclass(cls) and cls.__module__ == name
    and (issubclass(cls, (BaseMaterializer, Flavor)) or cls is BigQueryDataset)
    and not cls.__name__.startswith("Base") and getattr(cls, "ASSOCIATED_TYPES", True)  # not the bases
]
# One write per line: ZenML 0.90 wraps print() and repeats its arguments after the first.
for cls in ours:
    sys.stdout.write(f"SOURCE {{cls.__qualname__}} {{source_utils.resolve(cls).import_path}}\\n")
sys.stdout.write(f"BARE {{sorted(m for m in sys.modules if m.split('.')[0] in ('flavors', 'materializers'))}}\\n")
"""


def test_every_class_zenml_records_is_recorded_under_the_namespace():
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(root=ROOT_DIR)], cwd=ROOT_DIR, capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, result.stderr[-3000:]
    sources = dict(line.split()[1:] for line in result.stdout.splitlines() if line.startswith("SOURCE "))
    # Every flavor and every materializer for a concrete type (not the shared base class).
    assert {"SparkEngineFlavor", "DaskEngineFlavor", "RayEngineFlavor", "BigQueryEngineFlavor",
            "EngineBundleFlavor", "SparkDataFrameMaterializer", "DaskDataFrameMaterializer",
            "RayDatasetMaterializer", "ArrowTableMaterializer", "PandasDatasetMaterializer",
            "BigQueryDatasetMaterializer", "BigQueryDataset"} <= set(sources)
    wrong = {name: path for name, path in sources.items() if not path.startswith("zenml_compute_engines.")}
    assert not wrong, wrong
    assert "BARE []" in result.stdout


def test_a_users_subclass_is_recorded_as_the_users_own():
    from zenml.utils import source_utils

    from zenml_compute_engines import SparkEngineFlavor

    class TeamSparkFlavor(SparkEngineFlavor):
        pass

    assert TeamSparkFlavor.__zenml_source__ is None
    with pytest.raises(RuntimeError, match="top-level"):  # ZenML's own rule for a user class
        source_utils.resolve(TeamSparkFlavor)


@pytest.mark.parametrize("package", ["flavors", "materializers"])
def test_a_bare_import_from_the_checkout_is_refused_with_the_name_to_use(package):
    result = subprocess.run([sys.executable, "-c", f"import {package}"], cwd=ROOT_DIR, capture_output=True, text=True)
    assert result.returncode != 0
    assert f"import it under that name" in result.stderr and f"zenml_compute_engines.{package}" in result.stderr
