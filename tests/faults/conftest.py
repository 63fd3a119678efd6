"""The fault suite's harness: a pipeline in a process of its own, to interrupt mid-step.
The `report` fixture (what each case injected and found) is tests/support/fault_report.py."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest

from tests.support import zenml_env
from tests.support.ray_cluster import use_test_auth_mode

use_test_auth_mode()  # the pipeline processes inherit it (and may attach to the test head)

MARK = "ZENML_ENGINES_FAULT_MARK"
OWNED = {
    "spark": {"master": "local[2]", "ui_enabled": False},
    "dask": {"n_workers": 1, "threads_per_worker": 1, "memory_limit": "1GiB"},
    "ray": {"num_cpus": 1, "object_store_memory": 100 * 1024 * 1024, "startup_timeout_s": 60},
}


@dataclass
class HeldPipeline:
    """`tests.faults.fault_pipelines` running in a child process; everything it starts
    carries a marker in its environment, so orphans are found wherever they end up."""

    engine: str
    process: subprocess.Popen
    ready: Path
    log: Path
    marker: str
    stack_id: str
    started: float = field(default_factory=time.time)
    # Every process seen so far (pid -> start time): found again after its parent died
    # even when its environment can no longer be read (see processes_marked).
    seen: Dict[int, float] = field(default_factory=dict)

    def wait_ready(self, timeout_s: float = 180) -> None:
        deadline = time.time() + timeout_s
        while not self.ready.exists() and time.time() < deadline and self.process.poll() is None:
            time.sleep(0.2)
        assert self.ready.exists(), f"the {self.engine} step never became ready:\n{self.output()}"

    def processes(self, settle_s: float = 0.0) -> List[Any]:
        return zenml_env.processes_marked(MARK, self.marker, settle_s=settle_s, known=self.seen)

    def seconds_until_no_process(self, since: float, limit_s: float) -> Optional[float]:
        """Seconds from `since` until no marked process is left; None if some outlive `limit_s`."""
        while time.time() - since < limit_s:
            if not self.processes():
                return time.time() - since
            time.sleep(0.25)
        return None

    def output(self, tail: Optional[int] = 4000) -> str:
        """What the pipeline process printed (its last `tail` characters; None: all)."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return text if tail is None else text[-tail:]

    def latest_run(self) -> Any:
        from zenml.client import Client

        runs = Client().list_pipeline_runs(stack_id=self.stack_id, sort_by="desc:created", size=1, hydrate=True)
        return runs.items[0] if runs.items else None

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)
        zenml_env.kill_quietly(self.processes())


@pytest.fixture
def held(zen, tmp_path):
    """Start a pipeline process: `held(engine, config=None, hold_s=600)` holds its step;
    with `go=<path>` its second step waits for that file; `kind="worker_loss"` runs tasks
    for the test to kill a worker under, `kind="secrets"` saves a dataset and fails,
    `kind="query"` waits in a BigQuery job that runs until cancelled (its id in the ready file),
    `kind="interrupted_then_again"` runs a long job whose tasks beat in the `ready` directory,
    to be interrupted, then a short one (see fault_pipelines.interrupted_then_again),
    `kind="neighbour"` six such tasks, saying when it submits them (`ready`.submitted); on
    `stack_id` if given. All are killed after the test."""
    started: List[HeldPipeline] = []

    def start(
        engine: str, config: Optional[Dict[str, Any]] = None, hold_s: float = 600, go: Optional[Path] = None,
        kind: str = "hold", stack_id: Optional[str] = None, ready: Optional[Path] = None,
    ) -> HeldPipeline:
        if stack_id is None:
            stack_id = str(zenml_env.register_engine_stack(engine, OWNED[engine] if config is None else config).id)
        marker = uuid.uuid4().hex
        ready, log = ready or tmp_path / f"ready-{marker}", tmp_path / f"pipeline-{marker}.log"
        env = {**os.environ, MARK: marker, "ZENML_ACTIVE_STACK_ID": stack_id}
        pipeline_args = {
            "hold": ["hold", engine, str(ready), str(hold_s)],
            "two_steps": ["two_steps", engine, str(ready), str(go)],
            "worker_loss": ["worker_loss", engine, str(ready)],
            "secrets": ["secrets", engine, str(ready)],
            "query": ["query", engine, str(ready)],
            # `ready` is the directory the long job's tasks write heartbeats into.
            "interrupted_then_again": ["interrupted_then_again", engine, str(ready), str(ready) + ".report"],
            "neighbour": ["neighbour", engine, str(ready)],
        }["two_steps" if go is not None else kind]
        with open(log, "wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "tests.faults.fault_pipelines", *pipeline_args],
                cwd=zenml_env.ROOT_DIR, env=env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,  # a process group of its own, as a terminal gives it
            )
        pipeline = HeldPipeline(engine, process, ready, log, marker, stack_id)
        started.append(pipeline)
        return pipeline

    yield start
    for pipeline in started:
        pipeline.kill()
