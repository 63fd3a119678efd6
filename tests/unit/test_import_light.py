"""Importing the package or registering a flavor loads no engine library."""

from __future__ import annotations

import subprocess
import sys

from tests.support.zenml_env import ROOT_DIR

HEAVY = ("pyspark", "ray", "dask", "distributed", "google.cloud")

PROBE = f"""
import sys
import zenml_compute_engines.materializers
from zenml_compute_engines import (
    BigQueryDataset, BigQueryEngineFlavor, DaskEngineFlavor, RayEngineFlavor, SparkEngineFlavor,
)
from zenml.enums import StackComponentType
required = {{BigQueryEngineFlavor: {{"project": "p"}}}}
for flavor_class in (SparkEngineFlavor, DaskEngineFlavor, RayEngineFlavor, BigQueryEngineFlavor):
    flavor = flavor_class()
    assert flavor.type == StackComponentType.FEATURE_STORE
    flavor.to_model(integration="custom", is_custom=True)  # what `flavor register` stores
    flavor.config_class(**required.get(flavor_class, {{}}))
    flavor.implementation_class  # the component class itself stays light too
BigQueryDataset(table_id="p.d.t")  # the artifact type and its materializer too
heavy = sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r} or m.startswith("google.cloud"))
print("HEAVY", heavy)
"""


def test_flavors_import_and_registration_load_no_engine_library():
    result = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT_DIR, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stdout
