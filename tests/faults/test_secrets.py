"""Secrets stay secret when things break.

The S3 artifact store's keys come from a ZenML secret, and each engine gets a secret in
its own options (a Spark conf value, a Ray runtime_env variable). A pipeline saves a
dataset through the store, loads it, then fails after using the engine. Neither secret may
appear in anything the run left: the pipeline process's output (ZenML's and the engines'
logs), every step's and the run's metadata (its usage included), the exception tracebacks
ZenML stored, and every object in the bucket (data, manifests, visualizations, ZenML's step
logs, and the engines' own records of each step: Spark's event log, which holds the
application's whole configuration, Dask's performance report, Ray's timeline).
"""

from __future__ import annotations

import json

import pytest

from tests.support.object_stores import S3_SECRET, activate_store_stack
from tests.support.zenml_env import step_error

ENGINE_SECRET = "engine-secret-5d1e8c0b4a"  # a made-up credential, grepped for
# Every record on, whatever each engine's default: they are scanned too.
CONFIGS = {
    "spark": {"master": "local[2]", "ui_enabled": False, "keep_step_record": True,
              "conf": {"spark.zenml.test.password": ENGINE_SECRET}},
    "dask": {"n_workers": 1, "threads_per_worker": 1, "memory_limit": "1GiB", "keep_step_record": True},
    "ray": {"num_cpus": 1, "object_store_memory": 100 * 1024 * 1024, "startup_timeout_s": 60, "keep_step_record": True,
            "runtime_env": {"env_vars": {"SERVICE_TOKEN": ENGINE_SECRET}}},
}


def _everything_the_run_left(pipeline, s3_server, bucket):
    from zenml.client import Client

    texts = {"process output": pipeline.output(tail=None)}
    run = Client().get_pipeline_run(pipeline.latest_run().id)
    texts["run metadata"] = json.dumps(run.run_metadata, default=str)
    for name, step in run.steps.items():
        texts[f"{name} metadata"] = json.dumps(step.run_metadata, default=str)
        texts[f"{name} exception"] = str(step_error(step) or "")
    client = s3_server.client()
    for key in s3_server.keys(bucket):
        body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        texts[f"s3://{bucket}/{key}"] = body.decode("utf-8", errors="replace")
    return run, texts


@pytest.mark.parametrize("engine", ["dask", pytest.param("spark", marks=pytest.mark.slow),
                                    pytest.param("ray", marks=pytest.mark.slow)])
def test_no_secret_in_logs_metadata_visualizations_or_errors(held, report, s3_server, engine):
    stack = activate_store_stack("s3", s3_server, engine, CONFIGS[engine])
    bucket = stack.artifact_store.path[len("s3://"):].split("/")[0]
    pipeline = held(engine, kind="secrets", stack_id=str(stack.id))
    assert pipeline.process.wait(timeout=300) != 0  # its last step fails on purpose
    run, texts = _everything_the_run_left(pipeline, s3_server, bucket)
    assert "deliberate failure" in texts["use_then_fail exception"]
    assert any(key.endswith("preview.html") for key in texts), "expected a dataset visualization in the bucket"
    # The failed step's usage and its engine's record of it, kept in the bucket, were scanned.
    facts = run.steps["use_then_fail"].run_metadata["compute_engine"]
    assert facts["usage"]["tasks"] > 0, facts
    record = facts["record"]["uri"][len("s3://"):].split("/", 1)[1]
    assert any(key.startswith(f"s3://{bucket}/{record}/") for key in texts), (record, sorted(texts))
    seen = [where for where, text in texts.items() if S3_SECRET in text or ENGINE_SECRET in text]
    report("secrets", engine, secrets=len(seen), leaked=len(pipeline.processes(settle_s=15)))
    assert seen == [], f"a secret appears in: {seen}"
