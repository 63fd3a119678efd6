"""An engine that goes away between two steps of one run: an attached cluster (a Dask
scheduler, a Spark standalone master, a Ray head, the BigQuery endpoint), or the driver JVM
of an owned Spark (killed, say, by the OOM killer).

What must hold: the next step never hangs and never gets the dead handle. If the cluster
came back at the same address, the step connects again and succeeds; if it stays gone,
the step fails within `startup_timeout_s` with an error naming the engine and the address.
An owned engine is started again.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.support import zenml_env
from tests.support.bigquery_proxy import RecordingProxy
from tests.support.dask_cluster import SchedulerAndWorker
from tests.support.ray_cluster import RayHead
from tests.support.spark_cluster import StandaloneCluster

STARTUP_TIMEOUT_S = 30  # a Spark driver JVM takes 7-9 s to start on an idle 2-core machine


def _bigquery_endpoint(request: Any, port: int = 0) -> RecordingProxy:
    """What a BigQuery engine attaches to: a proxy in front of the session's emulator that
    can go away (dropping its connections) and come back at the same port."""
    emulator, _ = request.getfixturevalue("bq_emulator")
    return RecordingProxy(emulator.rest_url, port=port)


# engine -> (start(request, port), its address, the component config attaching to it)
CLUSTERS = {
    "dask": (lambda request, port=0: SchedulerAndWorker.start(port=port), lambda c: c.address,
             lambda c: {"scheduler_address": c.address, "startup_timeout_s": STARTUP_TIMEOUT_S}),
    "ray": (lambda request, port=0: RayHead.start(port=port), lambda c: c.address,
            lambda c: {"address": c.address, "startup_timeout_s": STARTUP_TIMEOUT_S}),
    "bigquery": (_bigquery_endpoint, lambda c: c.url,
                 lambda c: {"project": "test", "api_endpoint": c.url, "startup_timeout_s": STARTUP_TIMEOUT_S}),
    "spark": (lambda request, port=0: StandaloneCluster.start(port=port), lambda c: c.master_url,
              lambda c: {"master": c.master_url, "ui_enabled": False, "startup_timeout_s": STARTUP_TIMEOUT_S}),
}
CASES = [
    pytest.param(engine, comes_back, id=f"{engine}-{'comes-back' if comes_back else 'stays-gone'}",
                 marks=[pytest.mark.slow] if engine == "spark" else [])
    for engine in CLUSTERS for comes_back in (True, False)
]


@pytest.fixture
def own_clusters():
    """Clusters of this test's own (started by the test, stopped here)."""
    clusters = []
    yield clusters
    for cluster in clusters:
        cluster.stop()


@pytest.mark.parametrize("engine, comes_back", CASES)
def test_attached_cluster_lost_between_steps(held, report, request, tmp_path, own_clusters, engine, comes_back):
    start, address_of, config_for = CLUSTERS[engine]
    cluster = start(request)
    own_clusters.append(cluster)
    address = address_of(cluster)
    go = tmp_path / "go"
    pipeline = held(engine, config_for(cluster), go=go)
    pipeline.wait_ready()
    cluster.stop()
    if comes_back:
        own_clusters.append(start(request, port=int(address.rsplit(":", 1)[1])))
    released = time.time()
    go.write_text("go")
    try:
        code = pipeline.process.wait(timeout=STARTUP_TIMEOUT_S + 90)
    except Exception:
        report("cluster-lost", engine, hung=True)
        raise AssertionError(f"the step hung after its cluster went away:\n{pipeline.output()}")
    took = time.time() - released
    left = pipeline.processes(settle_s=15)
    report("cluster-lost", engine, leaked=len(left))
    output = pipeline.output(tail=None)
    if comes_back:
        # We connect again (Dask's client may even have reconnected by itself).
        assert code == 0, output[-4000:]
    else:
        assert code != 0
        assert "no longer answers" in output, output[-4000:]
        assert took < STARTUP_TIMEOUT_S + 60, f"failed only after {took:.0f}s"
        assert f"Could not connect to the {engine} engine" in output and address in output, output[-4000:]
    assert left == []  # the step process and what it started


def test_an_owned_spark_driver_killed_between_steps_is_started_again(held, report, tmp_path):
    go = tmp_path / "go"
    pipeline = held("spark", go=go)
    pipeline.wait_ready()
    jvms = zenml_env.named(pipeline.processes(), "java")
    assert jvms, "expected the step's driver JVM"
    zenml_env.kill_quietly(jvms)
    go.write_text("go")
    code = pipeline.process.wait(timeout=180)
    report("driver-killed", "spark", leaked=len(pipeline.processes(settle_s=15)))
    output = pipeline.output(tail=None)
    assert code == 0, output[-4000:]
    assert "no longer answers" in output and output.count("Started spark engine") == 2, output[-4000:]
    assert pipeline.processes(settle_s=15) == []
