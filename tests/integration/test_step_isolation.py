"""Steps in processes of their own, launched through ZenML's real step entrypoint (what a
container orchestrator does): an owned engine lives for one step, an attached cluster is
connected per step and left running, and no process of either outlives its step."""

from __future__ import annotations

import os
import uuid

import pytest

from tests.support import zenml_env
from tests.support.ray_cluster import use_test_auth_mode
from tests.support.zenml_env import processes_marked, step_metadata

use_test_auth_mode()  # before ray is imported: the step processes attach to the test head

from tests.integration import isolation_pipelines as P  # noqa: E402

MARK = "ZENML_ENGINES_TEST_MARK"
EXPECTED_COUNTS = {0: 10, 1: 10, 2: 10}

OWNED = {
    "spark": {"master": "local[2]", "ui_enabled": False},
    "dask": {"n_workers": 1, "threads_per_worker": 1, "memory_limit": "1GiB"},
    "ray": {"num_cpus": 1, "object_store_memory": 100 * 1024 * 1024, "startup_timeout_s": 60},
}


def _run_isolated(engine, config, monkeypatch, capfd):
    # Mark the step processes (and everything they start) through the environment; any
    # cluster the test attaches to must have been started before this.
    marked = uuid.uuid4().hex
    monkeypatch.setenv(MARK, marked)
    zenml_env.activate_engine_stack(engine, config, orchestrator=zenml_env.process_per_step_orchestrator())
    run = P.PIPELINES[engine]()
    result = run.steps[f"{engine}_count"].outputs["result"][0].load()
    # Each step ran in a process of its own, neither of them this one.
    make_pid, count_pid = result["pids"]
    assert len({make_pid, count_pid, os.getpid()}) == 3
    assert {int(k): v for k, v in result["counts"].items()} == EXPECTED_COUNTS
    facts = [step_metadata(run, f"{engine}_{name}") for name in ("make", "count")]
    for step_facts in facts:
        assert step_facts["engine_starts_in_process"] == 1
        # Each step process recorded its own usage at its end (the first one's is its
        # output's write, the second one's the count).
        assert step_facts["usage"]["tasks"] > 0, step_facts
    # Whatever the step processes started is gone with them.
    assert processes_marked(MARK, marked, settle_s=20) == []
    return facts, capfd.readouterr()


@pytest.mark.parametrize("engine", ["spark", "dask", "ray"])
def test_an_owned_engine_lives_for_one_step_in_each_step_process(zen, engine, monkeypatch, capfd):
    facts, captured = _run_isolated(engine, OWNED[engine], monkeypatch, capfd)
    assert [f["mode"] for f in facts] == ["owned", "owned"]
    output = captured.out + captured.err
    # Started and stopped in each step process: the step was its run's last step there.
    assert output.count(f"Stopped the {engine} engine") == 2, output[-3000:]
    if engine == "spark":
        assert facts[0]["application_id"] != facts[1]["application_id"]


ATTACHED = {
    "spark": ("spark_cluster", lambda c: {"master": c.master_url, "ui_enabled": False}, lambda c: c.alive()),
    "dask": ("dask_cluster", lambda c: {"scheduler_address": c.address, "startup_timeout_s": 30}, lambda c: c.alive()),
    "ray": ("ray_cluster", lambda c: {"address": c.address, "startup_timeout_s": 60}, lambda c: c.status_ok()),
}


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["spark", "dask", "ray"])
def test_an_attached_cluster_is_connected_per_step_and_left_running(zen, engine, monkeypatch, capfd, request):
    fixture, config_for, is_up = ATTACHED[engine]
    cluster = request.getfixturevalue(fixture)
    facts, captured = _run_isolated(engine, config_for(cluster), monkeypatch, capfd)
    assert [f["mode"] for f in facts] == ["attached", "attached"]
    output = captured.out + captured.err
    assert output.count(f"Connected to {engine} engine") == 2, output[-3000:]
    assert "Stopped the" not in output
    assert is_up(cluster)
