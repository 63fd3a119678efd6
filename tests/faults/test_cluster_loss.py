"""An attached cluster that goes away between two steps of one run.

What must hold: the next step never hangs and never gets the dead handle. If the cluster
came back at the same address, the step connects again and succeeds; if it stays gone,
the step fails within `startup_timeout_s` with an error naming the engine and the address.
"""

from __future__ import annotations

import time

import pytest

from tests.support.dask_cluster import SchedulerAndWorker

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
