"""Pipelines the integration tests run (a module under the source root, so ZenML can load its steps)."""

import os
import time

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from zenml import pipeline, step

from zenml_compute_engines import SparkEngineSettings, spark_session


@step
def make_numbers(n: int) -> DataFrame:
    return spark_session().range(n).withColumn("k", F.col("id") % 3)


@step
def count_by_key(df: DataFrame) -> DataFrame:
    # Returned lazily: the groupBy runs while ZenML saves the output, after cleanup_step_run.
    return df.groupBy("k").agg(F.count("*").alias("n"), F.sum("id").alias("total"))


@step
def engine_free(x: int = 1) -> int:
    return x + 1


@step(settings={"feature_store": SparkEngineSettings(conf={"spark.sql.shuffle.partitions": 3})})
def partitions_with_setting() -> str:
    return spark_session().conf.get("spark.sql.shuffle.partitions")


@step
def partitions_default() -> str:
    return spark_session().conf.get("spark.sql.shuffle.partitions")


@step(settings={"feature_store": SparkEngineSettings(conf={"spark.executor.memory": "700m"})})
def executor_memory_700m() -> str:
    return spark_session().sparkContext.getConf().get("spark.executor.memory")


@step
def fail_after_spark(df: DataFrame) -> int:
    df.count()
    raise ValueError("this step fails on purpose")


@step
def sleep_with_spark(marker: str) -> int:
    spark_session().range(10).count()
    with open(marker, "w") as handle:
        handle.write(str(os.getpid()))
    time.sleep(120)
    return 0


@step
def application_id() -> str:
    return spark_session().sparkContext.applicationId


@step
def application_stopped_by_its_cluster() -> str:
    # What a driver does when its master removes the application (killed from the Spark UI):
    # the context stops inside the JVM, while the Python side still holds it.
    context = spark_session().sparkContext
    context._jsc.sc().stop()
    return context.applicationId


@step
def warn_through_the_driver_jvm(message: str) -> int:
    """Logs `message` at WARN through the driver JVM's log4j (what Spark's own warnings do)."""
    session = spark_session()
    session._jvm.org.apache.logging.log4j.LogManager.getLogger("zenml.tests.driver").warn(message)
    return session.range(3).count()


@step(enable_cache=True)
def cached_tail() -> int:
    return 42


@step(enable_cache=False)
def numbers_uncached(n: int) -> DataFrame:
    return spark_session().range(n)


@pipeline(enable_cache=False)
def aggregate_pipeline(n: int = 1000) -> None:
    count_by_key(make_numbers(n))


@pipeline(enable_cache=False)
def jvm_warning_pipeline(message: str) -> None:
    warn_through_the_driver_jvm(message)


@pipeline(enable_cache=False)
def settings_pipeline() -> None:
    partitions_with_setting()
    partitions_default(after="partitions_with_setting")


@pipeline(enable_cache=False)
def static_conf_pipeline() -> None:
    application_id(id="before")
    executor_memory_700m(after="before")


@pipeline(enable_cache=False)
def failing_pipeline() -> None:
    fail_after_spark(make_numbers(10))


@pipeline(enable_cache=False)
def sleeping_pipeline(marker: str) -> None:
    sleep_with_spark(marker)


@pipeline(enable_cache=False)
def engine_free_pipeline() -> None:
    engine_free()


@pipeline(enable_cache=False)
def stopped_then_used_pipeline() -> None:
    application_id(after=application_stopped_by_its_cluster())


@pipeline
def cached_tail_pipeline(n: int = 10) -> None:
    numbers_uncached(n)
    cached_tail(after="numbers_uncached")
