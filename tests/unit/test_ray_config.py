"""Ray engine config and settings: validated at `zenml feature-store register` time, no ray imported."""

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from zenml_compute_engines import RayEngineConfig, RayEngineFlavor, RayEngineSettings
from zenml_compute_engines.flavors.ray.flavor import OBJECT_STORE_MINIMUM_BYTES, RayRuntime, parse_address

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_default_config_owns_a_local_engine():
    config = RayEngineConfig()
    assert config.address is None
    assert config.owns_engine and config.is_local
    assert config.include_dashboard is False
    assert config.reuse == "pipeline_run"
    assert RayEngineFlavor().name == "ray"
    assert RayEngineFlavor().config_class is RayEngineConfig


@pytest.mark.parametrize(
    "address, client, host, port",
    [
        ("127.0.0.1:6379", False, "127.0.0.1", 6379),
        ("head.example.com:6380", False, "head.example.com", 6380),
        ("ray://10.0.0.5:10001", True, "10.0.0.5", 10001),
        ("ray://head-node:10001", True, "head-node", 10001),
        ("[::1]:6379", False, "::1", 6379),
        ("  10.0.0.5:6379 ", False, "10.0.0.5", 6379),
    ],
)
def test_valid_addresses_attach(address, client, host, port):
    config = RayEngineConfig(address=address)
    assert config.address == address.strip()
    assert not config.owns_engine and not config.is_local
    assert config.is_client is client
    assert parse_address(config.address) == (client, host, port)


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",  # no port
        "ray://10.0.0.5",  # no port
        "http://10.0.0.5:8265",  # the dashboard, not the cluster
        "auto",
        "local",
        "10.0.0.5:0",
        "10.0.0.5:70000",
        "10.0.0.5:port",
        "ray:/10.0.0.5:10001",
        "10.0.0.5:6379/extra",
        "spark://10.0.0.5:7077",
    ],
)
def test_malformed_address_is_rejected_naming_the_field(address):
    with pytest.raises(ValidationError) as error:
        RayEngineConfig(address=address)
    message = str(error.value)
    assert "address=" in message and "host:port" in message and "ray://host:port" in message


def test_empty_address_means_owned():
    assert RayEngineConfig(address="").owns_engine
    assert RayEngineConfig(address=None).owns_engine


@pytest.mark.parametrize(
    "value, expected",
    [
        (200 * 1024 * 1024, 200 * 1024 * 1024),
        ("100MiB", 100 * 1024 * 1024),
        ("200MB", 200 * 10**6),
        ("1GiB", 1024**3),
        ("1.5GB", 1_500_000_000),
        (str(OBJECT_STORE_MINIMUM_BYTES), OBJECT_STORE_MINIMUM_BYTES),
    ],
)
def test_object_store_memory_sizes(value, expected):
    assert RayEngineConfig(object_store_memory=value).object_store_memory == expected


@pytest.mark.parametrize("value", [0, -1, "-5MB", "10MB", 1024, "lots"])
def test_object_store_memory_must_be_positive_and_at_least_rays_minimum(value):
    with pytest.raises(ValidationError, match="object_store_memory"):
        RayEngineConfig(object_store_memory=value)


@pytest.mark.parametrize("field, value", [("num_cpus", 0), ("num_cpus", -2), ("num_gpus", -1), ("startup_timeout_s", 0)])
def test_resources_must_be_positive(field, value):
    with pytest.raises(ValidationError, match=field):
        RayEngineConfig(**{field: value})


def test_settings_fields_and_remote_args_validation():
    settings = RayEngineSettings(runtime_env={"env_vars": {"A": "1"}}, remote_args={"num_cpus": 0.5, "resources": {"x": 1}})
    assert settings.runtime_env == {"env_vars": {"A": "1"}}
    with pytest.raises(ValidationError, match="num_cpu"):
        RayEngineSettings(remote_args={"num_cpu": 1})  # typo of num_cpus
    # The component config carries the same per-step options as defaults.
    assert RayEngineConfig(runtime_env={"pip": ["x"]}).runtime_env == {"pip": ["x"]}


def test_registration_through_zenml_validates_the_address(zen):
    """What `zenml feature-store register x --flavor=ray --address=...` runs."""
    from zenml.enums import StackComponentType
    from zenml.stack.utils import validate_stack_component_config

    config = validate_stack_component_config(
        {"address": "ray://127.0.0.1:10001", "num_cpus": "2"}, flavor="ray", component_type=StackComponentType.FEATURE_STORE
    )
    assert config.address == "ray://127.0.0.1:10001" and config.num_cpus == 2
    with pytest.raises(ValidationError, match="address="):
        validate_stack_component_config(
            {"address": "10.0.0.5"}, flavor="ray", component_type=StackComponentType.FEATURE_STORE
        )
    with pytest.raises(ValueError, match="adress"):  # misspelled keys are refused, not ignored
        validate_stack_component_config(
            {"adress": "10.0.0.5:6379"}, flavor="ray", component_type=StackComponentType.FEATURE_STORE
        )


def test_runtime_repr_and_frozen():
    runtime = RayRuntime(address="127.0.0.1:6379", dashboard_url=None, job_id="01000000", namespace="ns", mode="owned")
    text = repr(runtime)
    assert "127.0.0.1:6379" in text and "01000000" in text and "ns" in text and "no dashboard" in text
    with pytest.raises(Exception):
        runtime.address = "elsewhere"  # type: ignore[misc]
    assert runtime.options("fn") == "fn"  # no remote_args: unchanged


def test_flavor_modules_import_no_ray():
    code = (
        "import sys\n"
        "import zenml_compute_engines, zenml_compute_engines.flavors.ray.flavor, zenml_compute_engines.flavors.context\n"
        "zenml_compute_engines.RayEngineConfig(address='127.0.0.1:6379', object_store_memory='100MiB')\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('ray', 'pyspark', 'dask'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True)


# ---- Ray Client: a session the server failed to spawn is asked for again ---------------


def _spawn_failure() -> ConnectionAbortedError:
    # The message a driver gets when the server's forked specific server died at birth.
    return ConnectionAbortedError(
        "Initialization failure from server:\nRuntimeError: Starting Ray client server failed. "
        "See ray_client_server_23000.err for detailed logs."
    )


def _failing(times: int, error: Exception, calls: list):
    def init():
        calls.append(1)
        if len(calls) <= times:
            raise error
        return "context"

    return init


def test_client_connect_retries_a_session_the_server_failed_to_spawn(monkeypatch):
    from zenml_compute_engines.flavors.ray import engine

    monkeypatch.setattr(engine, "_shutdown_ray", lambda: None)
    calls: list = []
    init = _failing(engine._CLIENT_SPAWN_ATTEMPTS - 1, _spawn_failure(), calls)
    assert engine._init_retrying_client_spawn(init, "ray://h:10001", engine._Attempt()) == "context"
    assert len(calls) == engine._CLIENT_SPAWN_ATTEMPTS


def test_client_connect_gives_up_after_the_last_attempt_and_on_other_errors(monkeypatch):
    from zenml_compute_engines.flavors.ray import engine

    monkeypatch.setattr(engine, "_shutdown_ray", lambda: None)
    calls: list = []
    with pytest.raises(ConnectionAbortedError, match="Starting Ray client server failed"):
        engine._init_retrying_client_spawn(_failing(99, _spawn_failure(), calls), "ray://h:1", engine._Attempt())
    assert len(calls) == engine._CLIENT_SPAWN_ATTEMPTS

    calls.clear()
    with pytest.raises(ConnectionError, match="refused"):
        engine._init_retrying_client_spawn(_failing(99, ConnectionError("refused"), calls), "ray://h:1", engine._Attempt())
    assert len(calls) == 1


def test_client_connect_stops_retrying_once_the_core_gave_up(monkeypatch):
    from zenml_compute_engines.flavors.ray import engine

    monkeypatch.setattr(engine, "_shutdown_ray", lambda: None)
    attempt = engine._Attempt()
    attempt.abandoned = True  # startup_timeout_s passed while the first connect ran
    calls: list = []
    with pytest.raises(ConnectionAbortedError):
        engine._init_retrying_client_spawn(_failing(99, _spawn_failure(), calls), "ray://h:1", attempt)
    assert len(calls) == 1
