"""Several engines in one stack: the `engines` bundle flavor with real Spark and Dask members."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest

from zenml_compute_engines import EngineError, compute_engine
from zenml_compute_engines.flavors.engine import live_engines
from tests.support import zenml_env
from tests.support.dask_cluster import leftover_workers, wait_until_gone

SPARK = {"master": "local[2]", "ui_enabled": False}
DASK = {"processes": True, "n_workers": 1, "threads_per_worker": 1, "memory_limit": "1GiB"}


def _component(zen, flavor, config):
    from zenml.enums import StackComponentType

    name = f"{flavor}-{uuid.uuid4().hex[:8]}"
    zen.create_stack_component(name=name, flavor=flavor, component_type=StackComponentType.FEATURE_STORE,
                               configuration=config)
    return name


@pytest.fixture
def bundle_stack(zen):
    def make(*members):
        return zenml_env.activate_engine_stack("engines", {"engines": list(members)})

    yield make
    zenml_env.teardown_engines()


def test_two_engines_of_one_bundle_each_start_once_and_stop(zen, bundle_stack):
    from tests.integration.bundle_pipelines import two_engines

    spark, dask = _component(zen, "spark", {**SPARK, "prestart": "auto"}), _component(zen, "dask", {**DASK, "prestart": "auto"})
    stack = bundle_stack(spark, dask)
    run = two_engines(n=100)

    assert run.steps["dask_total"].outputs["total"][0].load()["sum"] == sum(range(100))
    # Per-step settings given as the member's own settings class reach that member.
    assert run.steps["spark_with_settings"].outputs["partitions"][0].load() == 3

    first = zenml_env.step_metadata(run, "spark_numbers")
    second = zenml_env.step_metadata(run, "dask_total")
    assert set(first) == {"spark"} and first["spark"]["component"] == spark
    assert set(second) == {"dask"} and second["dask"]["component"] == dask  # Spark wrote, Dask read
    third = zenml_env.step_metadata(run, "spark_with_settings")["spark"]
    assert first["spark"]["application_id"] == third["application_id"]  # one Spark for the run
    for facts in (first["spark"], second["dask"], third):
        assert facts["engine_starts_in_process"] == 1 and facts["mode"] == "owned"
    # A step on both members records each one's usage under its kind.
    assert run.steps["both_engines"].outputs["both"][0].load() == 33
    fourth = zenml_env.step_metadata(run, "both_engines")
    assert set(fourth) == {"spark", "dask"}
    assert fourth["spark"]["usage"]["tasks"] == 3 and fourth["dask"]["usage"]["tasks"] == 2
    assert first["spark"]["usage"]["tasks"] > 0 and second["dask"]["usage"]["tasks"] > 0
    # Both members began while ZenML prepared the run: their data types are in the signatures.
    assert first["spark"]["prestarted"] is True and second["dask"]["prestarted"] is True

    bundle = stack.feature_store
    assert {m.id for m in bundle.members.values()}.isdisjoint(live_engines())
    assert zenml_env.java_children(settle_s=10) == []
    assert wait_until_gone([p.pid for p in leftover_workers()], timeout=15) == []


def test_accessors_resolve_through_the_bundle(zen, bundle_stack):
    spark, dask = _component(zen, "spark", SPARK), _component(zen, "dask", DASK)
    bundle_stack(spark, dask)
    assert compute_engine("spark").name == spark and compute_engine("dask").name == dask
    with pytest.raises(EngineError, match=r"has no ray engine \(it has dask, spark\)"):
        compute_engine("ray")
    with pytest.raises(EngineError, match="name the kind"):
        compute_engine()


@pytest.mark.parametrize("problem", ["unknown", "nested", "two_of_a_kind"])
def test_a_bad_bundle_fails_before_any_step_with_the_reason(zen, bundle_stack, problem):
    from tests.integration.bundle_pipelines import two_engines

    spark = _component(zen, "spark", SPARK)
    members = {
        "unknown": [spark, "no-such-engine"],
        "nested": [spark, _component(zen, "engines", {"engines": [spark]})],
        "two_of_a_kind": [spark, _component(zen, "spark", SPARK)],
    }[problem]
    bundle_stack(*members)
    expected = {
        "unknown": "no feature_store component named 'no-such-engine' is registered",
        "nested": "is itself an engine bundle",
        "two_of_a_kind": "are both spark engines",
    }[problem]
    with pytest.raises(Exception, match=expected):
        two_engines(n=10)
    assert zenml_env.java_children(settle_s=5) == []


def test_cli_refuses_an_empty_or_repetitive_bundle(zen):
    zenml = os.path.join(os.path.dirname(sys.executable), "zenml")
    for engines, message in (("[]", "engines"), ('["a","a"]', "engines names a more than once")):
        result = subprocess.run(
            [zenml, "feature-store", "register", f"bad-{uuid.uuid4().hex[:6]}", "--flavor=engines",
             f"--engines={engines}"],
            cwd=zenml_env.ROOT_DIR, capture_output=True, text=True, timeout=120,
        )
        assert result.returncode != 0 and message in result.stdout + result.stderr
