"""Dask engine config, settings and flavor: validation at registration time, import-lightness."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from pydantic import ValidationError

from zenml_compute_engines import DaskEngineConfig, DaskEngineFlavor, DaskEngineSettings

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_defaults_own_a_local_cluster():
    config = DaskEngineConfig()
    assert config.owns_engine and config.address is None
    assert (config.n_workers, config.threads_per_worker, config.memory_limit, config.processes) == (
        None,
        None,
        "auto",
        True,
    )
    assert config.reuse == "pipeline_run" and config.teardown == "always"


@pytest.mark.parametrize(
    "given, normalized",
    [
        ("tcp://127.0.0.1:8786", "tcp://127.0.0.1:8786"),
        ("  tcp://scheduler.internal:8786 ", "tcp://scheduler.internal:8786"),
        ("10.0.0.5:8786", "tcp://10.0.0.5:8786"),
        ("tls://dask-scheduler:8786", "tls://dask-scheduler:8786"),
        ("tcp://[::1]:8786", "tcp://[::1]:8786"),
    ],
)
def test_scheduler_address_attaches(given, normalized):
    config = DaskEngineConfig(scheduler_address=given)
    assert config.address == normalized and not config.owns_engine


@pytest.mark.parametrize(
    "bad",
    ["127.0.0.1", "tcp://127.0.0.1", "http://127.0.0.1:8786", "tcp://127.0.0.1:0", "tcp://host:70000",
     "tcp://bad host:8786", "tcp://:8786", "tcp//127.0.0.1:8786", "spark://h:7077"],
)
def test_malformed_scheduler_address_names_the_field(bad):
    with pytest.raises(ValidationError) as error:
        DaskEngineConfig(scheduler_address=bad)
    message = str(error.value)
    assert "scheduler_address" in message and "tcp://host:port" in message


@pytest.mark.parametrize("field", ["n_workers", "threads_per_worker"])
@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "two"])
def test_sizes_must_be_positive_integers(field, bad):
    with pytest.raises(ValidationError, match=field):
        DaskEngineConfig(**{field: bad})


def test_sizes_accept_positive_integers():
    config = DaskEngineConfig(n_workers=2, threads_per_worker=1)
    assert (config.n_workers, config.threads_per_worker) == (2, 1)


@pytest.mark.parametrize("good", ["auto", "AUTO", "1GiB", "1 GiB", "512MB", "2gb", "100kB", "1e9", 2_000_000_000, 0.25, None])
def test_memory_limit_accepts_dask_sizes(good):
    DaskEngineConfig(memory_limit=good)


@pytest.mark.parametrize("bad", ["lots", "1GX", "-1GiB", "0", 0, -5, "GiB", True, "1 G i B"])
def test_memory_limit_rejects_nonsense(bad):
    with pytest.raises(ValidationError, match="memory_limit"):
        DaskEngineConfig(memory_limit=bad)


def test_owned_sizing_conflicts_with_an_address():
    with pytest.raises(ValidationError, match="n_workers.*scheduler_address"):
        DaskEngineConfig(scheduler_address="tcp://127.0.0.1:8786", n_workers=2)
    with pytest.raises(ValidationError, match="worker_resources"):
        DaskEngineConfig(scheduler_address="tcp://127.0.0.1:8786", worker_resources={"GPU": 1})


def test_settings_validate_resources_and_annotations():
    settings = DaskEngineSettings(resources={"GPU": 1}, annotations={"priority": 3, "retries": 2})
    assert settings.resources == {"GPU": 1}
    with pytest.raises(ValidationError, match="positive"):
        DaskEngineSettings(resources={"GPU": 0})
    with pytest.raises(ValidationError, match="`resources` setting"):
        DaskEngineSettings(annotations={"resources": {"GPU": 1}})
    with pytest.raises(ValidationError, match="retries"):
        DaskEngineSettings(annotations={"retries": "often"})
    with pytest.raises(ValidationError, match="priority"):
        DaskEngineSettings(annotations={"priority": True})
    with pytest.raises(ValidationError, match="worker_resources"):
        DaskEngineConfig(worker_resources={"GPU": -1})


def test_flavor_points_at_the_dask_engine():
    from zenml.enums import StackComponentType

    flavor = DaskEngineFlavor()
    assert flavor.name == "dask"
    assert flavor.type == StackComponentType.FEATURE_STORE
    assert flavor.config_class is DaskEngineConfig
    assert flavor.implementation_class.kind == "dask"


def test_registration_rejects_a_malformed_address(zen):
    from zenml.enums import StackComponentType

    with pytest.raises(Exception, match="scheduler_address") as error:
        zen.create_stack_component(
            name=f"dask-bad-{uuid.uuid4().hex[:8]}",
            flavor="dask",
            component_type=StackComponentType.FEATURE_STORE,
            configuration={"scheduler_address": "tcp//127.0.0.1:8786"},
        )
    assert "tcp://host:port" in str(error.value)


def test_importing_flavors_imports_no_dask():
    code = (
        "import sys\n"
        "from zenml_compute_engines import DaskEngineFlavor, dask_client\n"
        "engine = DaskEngineFlavor().implementation_class\n"
        "DaskEngineFlavor().config_class(scheduler_address='tcp://127.0.0.1:8786')\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed'))\n"
        "print(heavy)\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
