"""Test environment: an isolated ZenML store, real engines, leaked-process accounting."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_ZEN_HOME = Path(tempfile.mkdtemp(prefix="zenml-engines-tests-"))
# Before zenml is imported anywhere: a private global config + SQLite store per session.
os.environ["ZENML_CONFIG_PATH"] = str(_ZEN_HOME / "config")
os.environ["ZENML_CUSTOM_SOURCE_ROOT"] = str(ROOT)
# No ZenML repository either: a `.zen` in the checkout (the demos create one) would hold an
# active stack shared by every session on the machine, parallel workers included.
os.environ["ZENML_REPOSITORY_PATH"] = str(_ZEN_HOME / "no-repository")
os.environ["ZENML_ANALYTICS_OPT_IN"] = "false"
os.environ["ZENML_ENABLE_RICH_TRACEBACK"] = "false"
os.environ["AUTO_OPEN_DASHBOARD"] = "false"
os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"  # every Spark socket on loopback
# Every JVM of the tests (drivers, standalone master and worker, executors, the Connect
# server) compiles with C1 only: their jobs are tiny and over before C2's code would pay
# off, and C2's compiler threads were half of a driver's CPU (a start + 3 small jobs: 6.3 s
# of CPU instead of 12.2). CI runs on 2 busy cores. Behaviour is the same; users' JVMs keep
# the JDK's default. JDK_JAVA_OPTIONS is read by the `java` launcher only (Java 9+).
os.environ.setdefault("JDK_JAVA_OPTIONS", "-XX:TieredStopAtLevel=1")
# Google's auth libraries probe a cloud metadata server (169.254.169.254) when nothing else
# gives credentials; never from these tests. gcsfs would stall 60 s per new bucket on an
# emulator probing for hierarchical namespaces.
os.environ["NO_GCE_CHECK"] = "true"
os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"

import pytest  # noqa: E402

from tests.support import zenml_env  # noqa: E402

pytest_plugins = ["tests.support.fault_report"]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A test whose pipeline failed also reports what the failing steps raised."""
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed or call.excinfo is None:
        return
    if "Pipeline run has failed" not in str(call.excinfo.value):
        return
    try:
        errors = zenml_env.failed_step_errors()
    except Exception as error:  # the report must never hide the test's own failure
        errors = f"(could not read the failed steps: {error!r})"
    report.sections.append(("failed steps", errors))


@pytest.fixture(scope="session")
def zen():
    """The isolated ZenML client with our flavors registered."""
    return zenml_env.setup()


@pytest.fixture
def spark_stack(zen):
    """Activate a stack whose feature_store is an owned local Spark engine; yields a factory."""
    created = []

    def make(**config):
        stack = zenml_env.activate_engine_stack("spark", config)
        created.append(stack)
        return stack

    yield make
    zenml_env.teardown_engines()


@pytest.fixture(scope="session")
def spark_connect_server():
    """A Spark Connect server on 127.0.0.1, started once per session."""
    from tests.support.spark_cluster import ConnectServer

    server = ConnectServer.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def spark_cluster():
    """A Spark standalone master + one worker on 127.0.0.1, started once per session."""
    from tests.support.spark_cluster import StandaloneCluster

    cluster = StandaloneCluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def other_spark():
    """A Spark release of another line than this environment's pyspark (its home and version).

    tests/run_all.sh passes the other test venv's pyspark as OTHER_SPARK_HOME (Spark 3.5 to
    the newest venv's session, the newest to the oldest's).
    """
    import glob
    import types

    import pyspark

    home = os.environ.get("OTHER_SPARK_HOME", "")
    if not home:
        pytest.skip("OTHER_SPARK_HOME is unset: run through tests/run_all.sh, which provides it")
    jars = glob.glob(os.path.join(home, "jars", "spark-core_*.jar"))
    assert jars, f"OTHER_SPARK_HOME={home} holds no jars/spark-core_*.jar"
    version = jars[0].rsplit("-", 1)[1].removesuffix(".jar")
    assert version.split(".")[:2] != pyspark.__version__.split(".")[:2], (
        f"OTHER_SPARK_HOME has Spark {version}, the release line of this pyspark ({pyspark.__version__})"
    )
    return types.SimpleNamespace(home=home, version=version)


@pytest.fixture(scope="session")
def spark_class_archive():
    """This environment's Spark driver class archive (flavors/spark/class_cache.py): the one
    tests/run_all.sh recorded, else recorded now (or waited for, if a parallel worker is
    recording it)."""
    import subprocess
    import sys
    import time

    from zenml_compute_engines.flavors.spark import class_cache

    archive, why_not = class_cache.archive_path()
    assert archive is not None, why_not
    deadline = time.time() + 300
    while not archive.exists():
        done = subprocess.run([sys.executable, "-m", "zenml_compute_engines.flavors.spark.class_cache"], capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
        assert archive.exists() or time.time() < deadline, f"no class archive after 300 s: {done.stdout}"
        time.sleep(0 if archive.exists() else 2)
    return archive


@pytest.fixture(scope="session")
def dask_cluster():
    """A `dask scheduler` + one `dask worker --nthreads 1` on 127.0.0.1, started once per session."""
    from tests.support.dask_cluster import SchedulerAndWorker

    cluster = SchedulerAndWorker.start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def ray_cluster():
    """A `ray start --head --block` (1 CPU, 127.0.0.1) started once per session; stopped by us, never `ray stop`."""
    from tests.support.ray_cluster import RayHead

    head = RayHead.start()
    yield head
    head.stop()


@pytest.fixture(scope="session")
def bq_emulator():
    """The BigQuery emulator (own venv) on 127.0.0.1 behind a recording proxy, once per session."""
    from examples._bqemulator import Emulator
    from tests.support.bigquery_proxy import RecordingProxy

    emulator = Emulator.start()
    proxy = RecordingProxy(emulator.rest_url)
    yield emulator, proxy
    proxy.stop()
    emulator.stop()


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server on 127.0.0.1, once per session."""
    from tests.support.object_stores import S3Server
    from tests.support.versions import skip_without_zenml_s3_endpoints

    skip_without_zenml_s3_endpoints()

    server = S3Server()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def gcs_server():
    """fake-gcs-server on 127.0.0.1, once per session."""
    from tests.support.object_stores import GCSServer

    server = GCSServer()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def zenml_server():
    """A local ZenML server (`zenml login --local`, 127.0.0.1) with a client config of its
    own, once per session; processes given `server.env` are its REST clients."""
    from examples._zenml_server import LocalZenMLServer

    server = LocalZenMLServer.start(_ZEN_HOME / "server-config")
    yield server
    server.stop()
    assert server.wait_gone(), f"the ZenML server (pid {server.pid}) outlived `zenml logout --local`"
