"""An engine that goes away between two steps of one run: an attached cluster, or the
driver JVM of an owned Spark (killed, say, by the OOM killer).

What must hold: the next step never hangs and never gets the dead handle. If the cluster
came back at the same address, the step connects again and succeeds; if it stays gone,
the step fails within `startup_timeout_s` with an error naming the engine and the address.
An owned engine is started again.
"""

from __future__ import annotations

import time

import pytest

from tests.support.dask_cluster import SchedulerAndWorker
from tests.support.spark_cluster import StandaloneCluster

STARTUP_TIMEOUT_S = 10


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


@pytest.fixture
def own_dask_cluster():
    """A scheduler + worker of this test's own (the test stops it), restartable on its port."""
    clusters = [SchedulerAndWorker.start()]
    yield clusters
    for cluster in clusters:
        cluster.stop()


@pytest.mark.parametrize("comes_back", [True, False], ids=["comes-back", "stays-gone"])
def test_dask_cluster_lost_between_steps(held, report, tmp_path, own_dask_cluster, comes_back):
    cluster = own_dask_cluster[0]
    go = tmp_path / "go"
    pipeline = held("dask", {"scheduler_address": cluster.address, "startup_timeout_s": STARTUP_TIMEOUT_S}, go=go)
    pipeline.wait_ready()
    cluster.stop()
    if comes_back:
        own_dask_cluster.append(SchedulerAndWorker.start(port=_port(cluster.address)))
    released = time.time()
    go.write_text("go")
    try:
        code = pipeline.process.wait(timeout=STARTUP_TIMEOUT_S + 60)
    except Exception:
        report("cluster-lost", "dask", hung=True)
        raise AssertionError(f"the step hung after its cluster went away:\n{pipeline.output()}")
    took = time.time() - released
    report("cluster-lost", "dask", leaked=len(pipeline.processes(settle_s=10)))
    output = pipeline.output(tail=None)
    if comes_back:
        # Dask's client reconnects to a scheduler back at its address by itself; if it
        # has not yet, we connect again.
        assert code == 0, output[-4000:]
    else:
        assert code != 0
        assert "no longer answers" in output, output[-4000:]
        assert took < STARTUP_TIMEOUT_S + 30, f"failed only after {took:.0f}s"
        assert "Could not connect to the dask engine" in output and cluster.address in output, output[-4000:]
    assert pipeline.processes(settle_s=10) == []  # the step process and what it started


@pytest.fixture
def own_spark_cluster():
    """A Spark master + worker of this test's own (the test stops it), restartable on its port."""
    clusters = [StandaloneCluster.start()]
    yield clusters
    for cluster in clusters:
        cluster.stop()


@pytest.mark.slow
@pytest.mark.parametrize("comes_back", [True, False], ids=["comes-back", "stays-gone"])
def test_spark_cluster_lost_between_steps(held, report, tmp_path, own_spark_cluster, comes_back):
    cluster = own_spark_cluster[0]
    go = tmp_path / "go"
    config = {"master": cluster.master_url, "ui_enabled": False, "startup_timeout_s": STARTUP_TIMEOUT_S}
    pipeline = held("spark", config, go=go)
    pipeline.wait_ready()
    cluster.stop()
    if comes_back:
        own_spark_cluster.append(StandaloneCluster.start(port=_port(cluster.master_url)))
    released = time.time()
    go.write_text("go")
    try:
        code = pipeline.process.wait(timeout=STARTUP_TIMEOUT_S + 90)
    except Exception:
        report("cluster-lost", "spark", hung=True)
        raise AssertionError(f"the step hung after its cluster went away:\n{pipeline.output()}")
    took = time.time() - released
    report("cluster-lost", "spark", leaked=len(pipeline.processes(settle_s=15)))
    output = pipeline.output(tail=None)
    assert "no longer answers" in output, output[-4000:]
    if comes_back:
        assert code == 0, output[-4000:]
    else:
        assert code != 0
        assert took < STARTUP_TIMEOUT_S + 60, f"failed only after {took:.0f}s"
        assert "Could not connect to the spark engine" in output and cluster.master_url in output, output[-4000:]
    assert pipeline.processes(settle_s=15) == []


def test_an_owned_spark_driver_killed_between_steps_is_started_again(held, report, tmp_path):
    go = tmp_path / "go"
    pipeline = held("spark", go=go)
    pipeline.wait_ready()
    jvms = [p for p in pipeline.processes() if p.name() == "java"]
    assert jvms, "expected the step's driver JVM"
    for jvm in jvms:
        jvm.kill()
    go.write_text("go")
    code = pipeline.process.wait(timeout=180)
    report("driver-killed", "spark", leaked=len(pipeline.processes(settle_s=15)))
    output = pipeline.output(tail=None)
    assert code == 0, output[-4000:]
    assert "no longer answers" in output and output.count("Started spark engine") == 2, output[-4000:]
    assert pipeline.processes(settle_s=15) == []
