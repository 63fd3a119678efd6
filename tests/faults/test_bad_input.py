"""Bad input at every entrance: each flavor's config fields at registration, and step
settings. Every case fails before anything starts, naming the field at fault.

Registration goes through ZenML's own path (`Client.create_stack_component`, what
`zenml feature-store register` calls); nothing is registered and no engine runs after.
"""

from __future__ import annotations

import uuid

import pytest
from zenml.enums import StackComponentType

from zenml_compute_engines import BigQueryEngineSettings, DaskEngineSettings, RayEngineSettings, SparkEngineSettings
from zenml_compute_engines.flavors.engine import live_engines
from tests.support import zenml_env

BQ = {"project": "my-project", "location": "EU"}
COMMON = [  # every flavor: field, bad value
    ("reuse", "forever"), ("teardown", "never"), ("startup_timeout_s", -1), ("startup_timeout_s", "soon"),
    ("prestart", "sometimes"), ("prestart", True),
]
CASES = {  # flavor -> (base config, [(field, bad value)])
    "spark": ({}, COMMON + [
        ("mastr", "local[2]"),  # unknown key (a typo)
        ("master", "http://10.0.0.5:7077"), ("master", "local[0]"), ("master", ""),
        ("master", "spark://10.0.0.5:7077; rm -rf /"),
        ("ui_enabled", "maybe"), ("app_name", "a\nb"),
        ("conf", {"spark.executor.memory": ["1g"]}), ("conf", {"executor.memory": "1g"}),
        ("master_ui_url", "spark://10.0.0.5:8080"),
        ("master_ui_url", "http://10.0.0.5:8080"),  # with the default local master
    ]),
    "dask": ({}, COMMON + [
        ("n_wrkers", 2),
        ("scheduler_address", "http://10.0.0.7:8786"), ("scheduler_address", "tcp://10.0.0.7:8786$(reboot)"),
        ("n_workers", -1), ("threads_per_worker", 0), ("memory_limit", "-5GB"), ("memory_limit", "lots"),
        ("worker_resources", {"GPU": -1}), ("resources", {"GPU": "x"}),
    ]),
    "ray": ({}, COMMON + [
        ("num_cpu", 2),
        ("address", "http://10.0.0.9:6379"), ("address", "10.0.0.9:6379; reboot"),
        ("num_cpus", -1), ("num_gpus", -2), ("object_store_memory", "-1GB"), ("object_store_memory", "huge"),
        ("dashboard_port", 70000), ("resources", {"slot": -1}), ("resources", {"CPU": 4}),
        ("runtime_env", "pip install x"), ("namespace", "x\n--y"),
    ]),
    "bigquery": (BQ, COMMON + [
        ("projct", "x"),
        ("project", "Bad Project!"), ("project", "p; DROP TABLE x"), ("location", "moon 1"),
        ("default_dataset", "has space"), ("default_dataset", "a.b.c.d"),
        ("api_endpoint", "ftp://127.0.0.1:9050"), ("storage_api_endpoint", "http://x:1/`whoami`"),
        ("maximum_bytes_billed", -1), ("dry_run_limit_bytes", "-5GB"), ("labels", {"Bad Key": "v"}),
        ("snapshot_expiration_days", -1), ("reproducibility", "sometimes"),
    ]),
    "engines": ({"engines": ["a"]}, [("engine", ["a"]), ("engines", []), ("engines", ["a", "a"]), ("engines", [""])]),
}
TABLE = [
    pytest.param(flavor, base, field, value, id=f"{flavor}-{field}-{value!r}")
    for flavor, (base, bad) in CASES.items() for field, value in bad
]


@pytest.mark.parametrize("flavor, base, field, value", TABLE)
def test_registration_refuses_a_bad_value_naming_the_field(zen, flavor, base, field, value):
    name = f"bad-{uuid.uuid4().hex[:8]}"
    with pytest.raises(Exception) as refused:
        zen.create_stack_component(
            name=name, flavor=flavor, component_type=StackComponentType.FEATURE_STORE,
            configuration={**base, field: value},
        )
    assert field in str(refused.value), str(refused.value)
    registered = zen.list_stack_components(type=StackComponentType.FEATURE_STORE, name=name).items
    assert registered == []
    assert live_engines() == {}


@pytest.mark.parametrize("flavor, base, typo, meant", [
    ("spark", {}, "mastr", "master"), ("dask", {}, "n_wrkers", "n_workers"), ("ray", {}, "num_cpu", "num_cpus"),
    ("bigquery", BQ, "projct", "project"), ("engines", {"engines": ["a"]}, "engine", "engines"),
    ("spark", {}, "cnf", "conf"),
])
def test_a_misspelled_option_names_the_closest_field(zen, flavor, base, typo, meant):
    """Our validation, which registration runs on ZenML 0.90 and every step's settings run
    (newer ZenML refuses an unknown key at registration itself, naming only the key)."""
    from zenml.stack.flavor import Flavor

    config_class = Flavor.from_model(zen.get_flavor_by_name_and_type(flavor, StackComponentType.FEATURE_STORE)).config_class
    with pytest.raises(ValueError) as refused:
        config_class(**{**base, typo: "x"})
    assert f"did you mean {meant!r} for {typo!r}?" in str(refused.value), str(refused.value)


SETTINGS = [
    (SparkEngineSettings, "conf", {"executor.memory": "1g"}),
    (SparkEngineSettings, "cnf", {}),
    (DaskEngineSettings, "resources", {"GPU": -1}),
    (DaskEngineSettings, "annotations", {"retries": "many"}),
    (RayEngineSettings, "remote_args", {"num_cpus": -1}),
    (RayEngineSettings, "runtime_env", "conda"),
    (BigQueryEngineSettings, "maximum_bytes_billed", -1),
    (BigQueryEngineSettings, "labels", {"UPPER": "x"}),
]


@pytest.mark.parametrize("settings_class, field, value", SETTINGS,
                         ids=[f"{c.__name__}-{f}" for c, f, _ in SETTINGS])
def test_step_settings_refuse_a_bad_value_naming_the_field(settings_class, field, value):
    with pytest.raises(Exception) as refused:
        settings_class(**{field: value})
    assert field in str(refused.value), str(refused.value)


def test_a_misspelled_step_setting_fails_the_run_before_any_step_starts(zen):
    from tests.faults.fault_pipelines import misspelled_settings_pipeline

    zenml_env.activate_engine_stack("spark", {"master": "local[2]", "ui_enabled": False})
    with pytest.raises(Exception) as refused:
        misspelled_settings_pipeline(engine="spark")
    assert "cnf" in str(refused.value), str(refused.value)
    assert live_engines() == {}
    assert zenml_env.java_children() == []
