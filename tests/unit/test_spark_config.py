"""Spark component configuration: validated at registration time, with the field named."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from pydantic import ValidationError

from zenml_compute_engines import SparkEngineConfig
from tests.support.zenml_env import ROOT_DIR


@pytest.mark.parametrize(
    "master, owned",
    [
        ("local[*]", True),
        ("local[4]", True),
        ("local", True),
        ("spark://127.0.0.1:7077", False),
        ("spark://m1:7077,m2:7077", False),
        ("yarn", False),
        ("k8s://https://10.0.0.1:6443", False),
        ("sc://localhost:15002", False),
    ],
)
def test_valid_masters(master, owned):
    config = SparkEngineConfig(master=master)
    assert config.owns_engine is owned
    assert config.address == (None if owned else master)


@pytest.mark.parametrize("master", ["spark://no-port", "local[0]", "local[x]", "mesos://h:5050", "http://h:7077", ""])
def test_malformed_master_names_the_field(master):
    with pytest.raises(ValidationError, match="master") as error:
        SparkEngineConfig(master=master)
    assert "spark://host:port" in str(error.value)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("startup_timeout_s", 0, "greater than 0"),
        ("startup_timeout_s", -3, "greater than 0"),
        ("teardown", "never", "'always' or 'on_success'"),
        ("reuse", "forever", "'step', 'pipeline_run' or 'process'"),
    ],
)
def test_bad_lifecycle_options_name_the_field(field, value, message):
    with pytest.raises(ValidationError) as error:
        SparkEngineConfig(**{field: value})
    text = str(error.value)
    assert field in text and message in text


def test_cli_registration_rejects_a_malformed_master(zen):
    zenml = os.path.join(os.path.dirname(sys.executable), "zenml")
    result = subprocess.run(
        [zenml, "feature-store", "register", "bad_master", "--flavor=spark", "--master=spork://x:1"],
        cwd=ROOT_DIR,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "master" in result.stdout + result.stderr
    assert "spark://host:port" in result.stdout + result.stderr
    assert "bad_master" not in {c.name for c in zen.list_stack_components(size=100).items}
