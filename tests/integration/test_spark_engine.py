"""The Spark engine through ZenML's real hook path on a real local Spark and a standalone cluster."""

import os
import posixpath
import signal
import socket
import threading
import time

import psutil
import pytest

from zenml import pipeline, step

from zenml_compute_engines import EngineError, compute_engine, shutdown_engines, spark_session
from zenml_compute_engines.flavors.engine import live_engines
from tests.integration import pipelines as P
from tests.support.ports import free_port, listening_ips
from tests.support.spark_cluster import StandaloneCluster
from tests.support import zenml_env
from tests.support.zenml_env import descendants, java_children, manifest_of, step_error, step_metadata

LOCAL = {"master": "local[2]", "ui_enabled": False}


def _engine_id(run, step):
    return step_metadata(run, step)["application_id"]


def test_dataframes_flow_between_steps_and_engine_stops_after_outputs_are_saved(spark_stack):
    spark_stack(**LOCAL)
    run = P.aggregate_pipeline(n=1000)

    # Half 2: the owned engine, including its driver JVM, is gone when the call returns.
    assert java_children() == []
    assert live_engines() == {}
    # Half 1: the lazy DataFrame returned by the last step was written before that.
    artifact = run.steps["count_by_key"].outputs["output"][0]
    assert artifact.materializer.attribute == "SparkDataFrameMaterializer"
    manifest = manifest_of(artifact)
    assert manifest.num_rows == 3
    assert {c["name"] for c in manifest.schema} == {"k", "n", "total"}
    assert artifact.run_metadata["num_rows"] == 3
    assert os.path.isfile(posixpath.join(artifact.uri, "preview.html"))
    # One engine served both steps of the run.
    assert _engine_id(run, "make_numbers") == _engine_id(run, "count_by_key")
    assert step_metadata(run, "count_by_key")["engine_starts_in_process"] == 1


def test_artifact_loads_outside_a_step_with_a_local_session(spark_stack):
    spark_stack(**LOCAL)
    run = P.aggregate_pipeline(n=30)
    df = run.steps["count_by_key"].outputs["output"][0].load()
    rows = {r["k"]: (r["n"], r["total"]) for r in df.collect()}
    assert rows == {0: (10, 135), 1: (10, 145), 2: (10, 155)}
    shutdown_engines()
    assert java_children() == []


def test_failing_step_stops_the_engine(spark_stack):
    spark_stack(**LOCAL)
    with pytest.raises(RuntimeError, match="fail_after_spark"):
        P.failing_pipeline()
    assert java_children() == []


def test_teardown_on_success_keeps_a_failed_runs_engine_and_logs_its_ui(spark_stack, caplog):
    spark_stack(master="local[1]", teardown="on_success", ui_enabled=True)
    with pytest.raises(RuntimeError):
        P.failing_pipeline()
    assert len(java_children()) == 1
    (live,) = live_engines().values()
    assert live.handle.sparkContext.uiWebUrl in caplog.text
    assert "keeping the spark engine" in caplog.text
    shutdown_engines()
    assert java_children() == []


def test_run_whose_last_step_is_cached_ends_with_no_engine(spark_stack):
    spark_stack(**LOCAL)
    P.cached_tail_pipeline(n=5)
    second = P.cached_tail_pipeline(n=5)
    assert second.steps["cached_tail"].status.value == "cached"
    assert java_children() == []


def test_engine_free_steps_start_nothing(spark_stack):
    spark_stack(**LOCAL)
    stack_engine = compute_engine("spark")
    starts = stack_engine.start_count
    run = P.engine_free_pipeline()
    assert step_metadata(run, "engine_free") == {}
    assert stack_engine.start_count == starts
    assert "pyspark" not in str(live_engines())
    assert java_children() == []


def test_runtime_conf_is_isolated_per_step(spark_stack):
    spark_stack(**LOCAL)
    run = P.settings_pipeline()
    assert run.steps["partitions_with_setting"].outputs["output"][0].load() == "3"
    assert run.steps["partitions_default"].outputs["output"][0].load() == "200"
    # Runtime options need no restart: both steps ran on one application.
    assert _engine_id(run, "partitions_with_setting") == _engine_id(run, "partitions_default")
    assert java_children() == []


def test_static_conf_restarts_an_owned_engine(spark_stack):
    spark_stack(**LOCAL)
    run = P.static_conf_pipeline()
    before = run.steps["before"].outputs["output"][0].load()
    assert run.steps["executor_memory_700m"].outputs["output"][0].load() == "700m"
    assert _engine_id(run, "executor_memory_700m") != before
    assert java_children() == []


@step
def listening_addresses() -> list:
    """The addresses the step's driver JVM (Spark UI included) listens on."""
    spark_session()
    return sorted({ip for p in java_children() for ip in listening_ips(p)})


@pipeline(enable_cache=False)
def listening_pipeline() -> None:
    listening_addresses()


def test_an_owned_engine_and_its_ui_listen_on_loopback_only(spark_stack, monkeypatch):
    monkeypatch.delenv("SPARK_LOCAL_IP")  # the test session sets it; users usually do not
    spark_stack(master="local[1]", ui_enabled=True)
    run = listening_pipeline()
    addresses = run.steps["listening_addresses"].outputs["output"][0].load()
    assert addresses and all(ip in ("127.0.0.1", "::ffff:127.0.0.1") for ip in addresses), addresses
    assert "SPARK_LOCAL_IP" not in os.environ


def test_step_metadata_describes_the_engine_without_secrets(spark_stack, spark_class_archive, caplog):
    spark_stack(
        master="local[1]",
        ui_enabled=True,
        conf={"spark.hadoop.fs.s3a.secret.key": "do-not-leak-me", "spark.sql.shuffle.partitions": 4},
    )
    run = P.aggregate_pipeline(n=10)
    facts = step_metadata(run, "make_numbers")
    assert facts["engine"] == "spark"
    assert facts["mode"] == "owned"
    assert facts["master"] == "local[1]"
    assert facts["application_id"].startswith("local-")
    import pyspark

    assert facts["spark_version"] == pyspark.__version__
    assert facts["spark_ui_url"].startswith("http://127.0.0.1:")
    assert facts["conf"]["spark.sql.shuffle.partitions"] == "4"
    assert facts["conf"]["spark.hadoop.fs.s3a.secret.key"] == "***"
    assert facts["jvm_class_cache"] == "used"  # the driver JVM mapped the recorded classes
    assert "do-not-leak-me" not in str(run.steps["make_numbers"].run_metadata)
    # Our loggers only: ZenML 0.90 itself logs the stack's component configs at DEBUG.
    ours = [r.getMessage() for r in caplog.records if r.name.split(".")[0] == "zenml_compute_engines"]
    assert ours and "do-not-leak-me" not in "\n".join(ours)


def test_a_session_the_user_started_is_attached_and_never_stopped(spark_stack):
    from pyspark.sql import SparkSession

    from zenml_compute_engines.flavors.spark.engine import shutdown_driver_jvm

    spark_stack(**LOCAL)
    mine = SparkSession.builder.master("local[1]").appName("user-session").getOrCreate()
    try:
        run = P.aggregate_pipeline(n=10)
        assert step_metadata(run, "make_numbers")["mode"] == "adopted"
        assert _engine_id(run, "make_numbers") == mine.sparkContext.applicationId
        assert mine.range(3).count() == 3  # still alive and usable
    finally:
        mine.stop()
        shutdown_driver_jvm()
    assert java_children() == []


# What every start of a driver JVM printed before its first job, none of it the user's: the
# JVM's notice about the incubator module Spark 4's launcher always adds, Spark's notes on
# its default log4j profile, and Hadoop's native-library warning (pure Java works the same).
JVM_BOOT_NOISE = (
    "WARNING: Using incubator modules",
    "Using Spark's default log4j profile",
    'Setting default log level to "WARN".',
    "To adjust logging level use sc.setLogLevel",
    "NativeCodeLoader: Unable to load native-hadoop library",
)


def test_an_owned_engine_prints_no_jvm_boot_noise_and_a_users_log4j_conf_still_applies(spark_stack, capfd, tmp_path):
    spark_stack(**LOCAL)
    P.jvm_warning_pipeline(message="a warning of the driver JVM")
    assert java_children() == []
    printed = "".join(capfd.readouterr())
    assert [noise for noise in JVM_BOOT_NOISE if noise in printed] == []
    assert "WARN driver: a warning of the driver JVM" in printed  # the JVM's own warnings still show

    # A log4j configuration of the user's own: used as it is, nothing of it quieted.
    config = tmp_path / "log4j2.properties"
    config.write_text(
        "appender.console.type = Console\n"
        "appender.console.name = console\n"
        "appender.console.target = SYSTEM_ERR\n"
        "appender.console.layout.type = PatternLayout\n"
        "appender.console.layout.pattern = USERLOG %p %c{1}: %m%n\n"
        "rootLogger.level = warn\n"
        "rootLogger.appenderRef.console.ref = console\n"
    )
    spark_stack(**LOCAL, conf={"spark.driver.extraJavaOptions": f"-Dlog4j2.configurationFile=file:{config}"})
    P.jvm_warning_pipeline(message="a warning under the user's configuration")
    assert java_children() == []
    printed = "".join(capfd.readouterr())
    assert "USERLOG WARN driver: a warning under the user's configuration" in printed
    assert "USERLOG WARN NativeCodeLoader: Unable to load native-hadoop library" in printed


def test_reuse_process_keeps_a_warm_engine_across_runs(spark_stack):
    spark_stack(reuse="process", **LOCAL)
    first = P.aggregate_pipeline(n=10)
    assert len(java_children()) == 1
    second = P.aggregate_pipeline(n=10)
    assert _engine_id(first, "make_numbers") == _engine_id(second, "count_by_key")
    shutdown_engines()
    assert java_children() == []


def test_reuse_step_gives_each_step_a_fresh_engine(spark_stack):
    spark_stack(reuse="step", **LOCAL)
    run = P.aggregate_pipeline(n=10)
    assert _engine_id(run, "make_numbers") != _engine_id(run, "count_by_key")
    assert java_children() == []


def test_a_context_stopped_inside_the_jvm_is_started_again_for_the_next_step(spark_stack, caplog):
    spark_stack(**LOCAL)
    run = P.stopped_then_used_pipeline()
    stopped = run.steps["application_stopped_by_its_cluster"].outputs["output"][0].load()
    assert run.steps["application_id"].outputs["output"][0].load() != stopped
    assert step_metadata(run, "application_id")["engine_starts_in_process"] == 2
    assert "no longer answers" in caplog.text
    assert java_children(settle_s=15) == []


def test_no_engine_on_the_stack_says_how_to_register_one(zen):
    zen.activate_stack("default")
    with pytest.raises(EngineError, match="zenml-compute-engines register && zenml feature-store register spark_local --flavor=spark"):
        compute_engine("spark")


def _step_duration(run, step):
    step_run = run.steps[step] if hasattr(run, "steps") else None
    return (step_run.end_time - step_run.start_time).total_seconds()


def _latest_run(zen):
    return zen.list_pipeline_runs(sort_by="desc:created", size=1).items[0]


def test_unreachable_master_fails_fast_with_its_address(zen, spark_stack):
    address = f"spark://127.0.0.1:{free_port()}"
    spark_stack(master=address, startup_timeout_s=5)
    with pytest.raises(RuntimeError):
        P.aggregate_pipeline(n=10)
    run = _latest_run(zen)
    step = run.steps["make_numbers"]
    assert step.status.value == "failed"
    assert _step_duration(run, "make_numbers") < 5 + 2
    assert address in step_error(step).traceback
    assert java_children() == []


@pytest.mark.slow
def test_master_that_never_answers_times_out_within_startup_timeout(zen, spark_stack):
    # A port that accepts connections but never speaks Spark: the start hangs until our timeout.
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    accepted = []
    threading.Thread(target=lambda: accepted.append(server.accept()), daemon=True).start()
    address = f"spark://127.0.0.1:{server.getsockname()[1]}"
    # Long enough for the driver JVM to come up on a loaded machine (two tests at once), so
    # that the start hangs where this case means it to: on the silent master.
    spark_stack(master=address, startup_timeout_s=30)
    try:
        with pytest.raises(RuntimeError):
            P.aggregate_pipeline(n=10)
    finally:
        server.close()
    run = _latest_run(zen)
    assert _step_duration(run, "make_numbers") < 30 + 2
    assert "within startup_timeout_s=30s" in step_error(run.steps["make_numbers"]).traceback
    assert java_children() == []


def test_a_start_abandoned_at_its_timeout_leaves_no_driver_and_the_next_run_starts(zen, spark_stack, spark_class_archive):
    # 0.5 s runs out while pyspark is still launching the driver JVM: that launch cannot be
    # interrupted, so what it yields once it is up must be stopped, and the next start must
    # not build on it.
    spark_stack(master="local[1]", ui_enabled=False, startup_timeout_s=0.5)
    with pytest.raises(RuntimeError):
        P.aggregate_pipeline(n=10)
    assert "within startup_timeout_s=0.5s" in step_error(_latest_run(zen).steps["make_numbers"]).traceback

    spark_stack(master="local[2]", ui_enabled=False, startup_timeout_s=120)
    P.aggregate_pipeline(n=10)  # at once, while the abandoned launch may still be under way
    run = _latest_run(zen)
    assert run.status.value == "completed"
    assert step_metadata(run, "make_numbers")["master"] == "local[2]"  # not the abandoned driver
    assert java_children(settle_s=30) == []
    assert spark_class_archive.exists()  # a start given up is not taken for a bad archive


@pytest.mark.slow
def test_sigterm_during_a_run_leaves_no_java_process(spark_stack, tmp_path):
    spark_stack(**LOCAL)
    marker = tmp_path / "engine-started"
    pipeline = "tests.integration.pipelines:sleeping_pipeline"
    with zenml_env.pipeline_until_marker(pipeline, marker, tmp_path / "pipeline.log") as child:
        jvms = descendants(["java"], child.pid)
        assert jvms, "expected the pipeline process to run a driver JVM"
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=60) != 0
        gone, alive = psutil.wait_procs(jvms, timeout=15)
        assert alive == []


@pytest.mark.slow
def test_standalone_cluster_runs_our_application_and_keeps_running(spark_stack, spark_cluster):
    import pyspark

    spark_stack(master=spark_cluster.master_url, master_ui_url=spark_cluster.ui_url, ui_enabled=False)
    run = P.aggregate_pipeline(n=100)
    facts = step_metadata(run, "make_numbers")
    assert facts["mode"] == "attached"
    assert facts["master"] == spark_cluster.master_url
    assert facts["cluster_spark_version"] == pyspark.__version__  # read from the master's UI
    assert facts["application_id"] in spark_cluster.application_ids()
    assert manifest_of(run.steps["count_by_key"].outputs["output"][0]).num_rows == 3
    assert spark_cluster.alive()  # never stopped a cluster we did not start
    assert java_children(settle_s=15) == []  # but our driver and its executors are gone


@pytest.mark.slow
def test_a_cluster_of_another_spark_version_is_refused_naming_both(zen, spark_stack, other_spark):
    import pyspark

    cluster = StandaloneCluster.start(spark_home=other_spark.home)
    try:
        spark_stack(master=cluster.master_url, master_ui_url=cluster.ui_url, startup_timeout_s=60)
        started = time.time()
        with pytest.raises(RuntimeError):
            P.aggregate_pipeline(n=10)
        failure = step_error(_latest_run(zen).steps["make_numbers"]).message
        assert f"runs Spark {other_spark.version}" in failure
        assert f"this driver's pyspark is {pyspark.__version__}" in failure
        assert time.time() - started < 30  # refused up front, not after the driver's minute of retries
        assert java_children() == []  # no driver JVM was started
        assert cluster.alive() and cluster.application_ids() == []
    finally:
        cluster.stop()


@pytest.mark.slow
def test_static_conf_on_an_attached_cluster_fails_clearly(zen, spark_stack, spark_cluster):
    spark_stack(master=spark_cluster.master_url, ui_enabled=False)
    with pytest.raises(RuntimeError):
        P.static_conf_pipeline()
    traceback = step_error(_latest_run(zen).steps["executor_memory_700m"]).traceback
    assert "spark.executor.memory" in traceback and "cannot be restarted" in traceback
    assert spark_cluster.alive()
    assert java_children(settle_s=15) == []


@pytest.mark.slow
def test_spark_connect_server_runs_the_pipeline_and_keeps_running(spark_stack, spark_connect_server):
    spark_stack(master=spark_connect_server.url)
    run = P.aggregate_pipeline(n=30)
    facts = step_metadata(run, "make_numbers")
    assert facts["mode"] == "attached" and facts["master"] == spark_connect_server.url
    assert manifest_of(run.steps["count_by_key"].outputs["output"][0]).num_rows == 3
    settings_run = P.settings_pipeline()
    assert settings_run.steps["partitions_with_setting"].outputs["output"][0].load() == "3"
    assert settings_run.steps["partitions_default"].outputs["output"][0].load() == "200"
    assert live_engines() == {}
    assert spark_connect_server.alive()
    assert java_children() == []
    # PySpark marks the process Connect-only; once our session is gone, classic Spark
    # starts again here and in child processes (the dev stack after a Connect stack).
    assert "SPARK_CONNECT_MODE_ENABLED" not in os.environ
    spark_stack(**LOCAL)
    assert manifest_of(P.aggregate_pipeline(n=30).steps["count_by_key"].outputs["output"][0]).num_rows == 3


@pytest.mark.slow  # records an archive of its own: a start and a stop about 25 s longer
def test_the_driver_jvm_records_its_classes_once_and_later_starts_map_them(spark_stack, tmp_path, monkeypatch):
    monkeypatch.setenv("ZENML_ENGINES_CACHE_DIR", str(tmp_path))
    cache = tmp_path / "spark-jvm"
    spark_stack(**LOCAL)

    first = P.aggregate_pipeline(n=30)
    assert step_metadata(first, "make_numbers")["jvm_class_cache"] == "recording"
    (archive,) = cache.iterdir()  # whole, in place: no part file or claim left behind
    assert archive.suffix == ".jsa" and archive.stat().st_size > 10_000_000

    second = P.aggregate_pipeline(n=30)
    assert step_metadata(second, "make_numbers")["jvm_class_cache"] == "used"  # mapped by the JVM

    # A truncated archive crashes the JVM that maps it: the start goes on without it.
    whole = archive.read_bytes()
    archive.unlink()
    archive.write_bytes(whole[: len(whole) // 2])
    third = P.aggregate_pipeline(n=30)
    assert step_metadata(third, "make_numbers")["jvm_class_cache"].endswith("would not load (removed)")
    assert list(cache.glob("*.jsa*")) == []  # (the crashed JVM's report stays there)
    assert java_children() == []
