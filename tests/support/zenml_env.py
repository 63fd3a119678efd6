"""Register flavors, components and stacks in the test session's private ZenML store."""

from __future__ import annotations

import json
import os
import posixpath
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, NamedTuple, Optional

import psutil

ROOT_DIR = str(Path(__file__).resolve().parents[2])



def setup() -> Any:
    from zenml.client import Client

    from zenml_compute_engines.flavors.registration import register_flavors

    register_flavors()
    return Client()


def register_engine_stack(
    flavor: str, config: Dict[str, Any], connector_id: Any = None, orchestrator: str = "default"
) -> Any:
    """Register an engine component with `config` (linked to a service connector if given)
    on a fresh stack with `orchestrator` and the default artifact store; returns the stack."""
    from zenml.client import Client
    from zenml.enums import StackComponentType

    client = Client()
    name = f"{flavor}-{uuid.uuid4().hex[:8]}"
    client.create_stack_component(
        name=name, flavor=flavor, component_type=StackComponentType.FEATURE_STORE, configuration=config
    )
    if connector_id is not None:
        client.update_stack_component(name, StackComponentType.FEATURE_STORE, connector_id=connector_id)
    return client.create_stack(
        name=name,
        components={
            StackComponentType.ORCHESTRATOR: orchestrator,
            StackComponentType.ARTIFACT_STORE: "default",
            StackComponentType.FEATURE_STORE: name,
        },
    )


def activate_engine_stack(
    flavor: str, config: Dict[str, Any], connector_id: Any = None, orchestrator: str = "default"
) -> Any:
    """`register_engine_stack`, then activate it; returns the active stack."""
    from zenml.client import Client

    client = Client()
    client.activate_stack(register_engine_stack(flavor, config, connector_id, orchestrator).id)
    return client.active_stack


def process_per_step_orchestrator() -> str:
    """Register (once) the orchestrator that runs each step in its own process; its name."""
    from zenml.client import Client
    from zenml.enums import StackComponentType

    client = Client()
    kind = StackComponentType.ORCHESTRATOR
    name = "process_per_step"
    if name not in {f.name for f in client.get_flavors_by_type(kind)}:
        client.create_flavor(source="tests.support.process_orchestrator.ProcessPerStepOrchestratorFlavor", component_type=kind)
    if name not in {c.name for c in client.list_stack_components(type=kind, size=1000).items}:
        client.create_stack_component(name=name, flavor=name, component_type=kind, configuration={})
    return name


@contextmanager
def pipeline_until_marker(
    pipeline: str, marker: Path, log: Path, marker_argument: str = "marker", timeout_s: float = 120
) -> Iterator[subprocess.Popen]:
    """Run `pipeline` ("module:function", called with `marker_argument=marker`) in a child
    Python at the repository's root, its output in `log`, and yield the child once `marker`
    exists (the step writes it); the child is killed on exit if it still runs."""
    module, function = pipeline.split(":")
    code = f"from {module} import {function}\n{function}({marker_argument}={str(marker)!r})\n"
    with open(log, "wb") as out:
        child = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT_DIR, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout_s
        while not marker.exists():
            assert child.poll() is None, f"the pipeline exited early:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"the step never started:\n{log.read_text()[-3000:]}"
            time.sleep(0.3)
        yield child
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def teardown_engines() -> None:
    from zenml_compute_engines.flavors.engine import shutdown_engines

    shutdown_engines()


def descendants(names: List[str], pid: int | None = None) -> List[psutil.Process]:
    """Live descendant processes of `pid` (default: this process) whose name is in `names`."""
    found = []
    for proc in psutil.Process(pid).children(recursive=True):
        try:
            if proc.name() in names and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except psutil.NoSuchProcess:
            pass
    return found


def named(procs: Iterable[psutil.Process], *names: str) -> List[psutil.Process]:
    """The processes of `procs` called one of `names`, leaving out those that exited since
    they were listed (every listing races processes on their way out)."""
    found = []
    for proc in procs:
        try:
            if proc.name() in names:
                found.append(proc)
        except psutil.NoSuchProcess:
            pass
    return found


def kill_quietly(procs: Iterable[psutil.Process]) -> None:
    """SIGKILL each of `procs` that is still there."""
    for proc in procs:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass


def describe(procs: Iterable[psutil.Process]) -> str:
    """`pid:name` of each process, for assertion messages (`<gone>` for one that exited)."""
    out = []
    for proc in procs:
        try:
            out.append(f"{proc.pid}:{proc.name()}")
        except psutil.NoSuchProcess:
            out.append(f"{proc.pid}:<gone>")
    return ", ".join(out) or "none"


def processes_marked(
    key: str, value: str, settle_s: float = 0.0, known: Optional[Dict[int, float]] = None
) -> List[psutil.Process]:
    """Live processes other than this one whose environment has `key=value`: everything a
    process started with that variable started in turn, orphans included.

    A process that retitles itself (a Dask worker with setproctitle installed) overwrites
    the memory its environment is read from; it is found as a descendant of a marked
    process and, with `known` (pid -> start time, filled in by each call), after its
    parent died. `settle_s` gives processes already on their way out that long to exit.
    """
    deadline = time.time() + settle_s
    while True:
        found = _marked_now(key, value, known)
        if not found or time.time() >= deadline:
            return found
        time.sleep(0.5)


def _marked_now(key: str, value: str, known: Optional[Dict[int, float]]) -> List[psutil.Process]:
    found: Dict[int, psutil.Process] = {}
    for proc in psutil.process_iter():
        try:
            if proc.pid != os.getpid() and proc.status() != psutil.STATUS_ZOMBIE and proc.environ().get(key) == value:
                found[proc.pid] = proc
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    candidates = [child for proc in list(found.values()) for child in _children(proc)]
    for pid, started in (known or {}).items():
        try:
            proc = psutil.Process(pid)
            if proc.create_time() == started:
                candidates.append(proc)
        except psutil.NoSuchProcess:
            pass
    for proc in candidates:
        try:
            if proc.status() != psutil.STATUS_ZOMBIE:
                found.setdefault(proc.pid, proc)
        except psutil.NoSuchProcess:
            pass
    if known is not None:
        for proc in found.values():
            try:
                known.setdefault(proc.pid, proc.create_time())
            except psutil.NoSuchProcess:
                pass
    return list(found.values())


def _children(proc: psutil.Process) -> List[psutil.Process]:
    try:
        return proc.children(recursive=True)
    except psutil.NoSuchProcess:
        return []


# Main classes of the JVMs the session fixtures start (kept running across tests). Our
# own driver JVM runs `org.apache.spark.deploy.SparkSubmit pyspark-shell`: not listed.
CLUSTER_DAEMON_CLASSES = (
    "org.apache.spark.deploy.master.Master",
    "org.apache.spark.deploy.worker.Worker",
    "org.apache.spark.sql.connect.service.SparkConnectServer",
)


def _is_cluster_daemon(proc: psutil.Process) -> bool:
    try:
        return any(part in CLUSTER_DAEMON_CLASSES for part in proc.cmdline())
    except psutil.NoSuchProcess:
        return True


def java_children(settle_s: float = 0.0) -> List[psutil.Process]:
    """Java processes below this one, other than cluster daemons.

    `settle_s` gives processes that are already on their way out (executors of an
    application that just ended) that long to exit.
    """
    deadline = time.time() + settle_s
    while True:
        found = [p for p in descendants(["java"]) if not _is_cluster_daemon(p)]
        if not found or time.time() >= deadline:
            return found
        time.sleep(0.25)


def manifest_of(artifact: Any) -> Any:
    """The dataset manifest of a stored artifact version."""
    from zenml.client import Client

    from zenml_compute_engines.materializers import dataset

    return dataset.read_manifest(Client().active_stack.artifact_store, artifact.uri)


def step_metadata(run: Any, step: str) -> Dict[str, Any]:
    return run.steps[step].run_metadata.get("compute_engine", {})



class StepError(NamedTuple):
    message: str
    traceback: str

    def __str__(self) -> str:
        return f"{self.message}\n{self.traceback}"


def step_error(step: Any) -> Optional[StepError]:
    """What a failed step raised (None when it did not fail).

    ZenML records it on the step run from 0.91 on; 0.90 keeps it only in the step's
    stored logs (JSON lines: "Failed to run step `x`: <message>", then the traceback).
    """
    info = getattr(step, "exception_info", None)
    if info is not None:
        return StepError(info.message, info.traceback)
    if hasattr(step, "exception_info") or str(step.status) != "failed" or step.logs is None:
        return None
    from zenml.io import fileio

    uri = step.logs.uri
    paths = [posixpath.join(uri, name) for name in sorted(fileio.listdir(uri))] if fileio.isdir(uri) else [uri]
    records = []
    for path in paths:
        with fileio.open(path, "r") as file:
            records.extend(json.loads(line) for line in file if line.startswith("{"))
    prefix = f"Failed to run step `{step.name}`: "
    message = next((r["message"][len(prefix):] for r in records if r["message"].startswith(prefix)), "")
    # The step's exception is logged last; engines may log tracebacks of their own before.
    traceback = next((r["message"] for r in reversed(records) if "Traceback (most recent call last)" in r["message"]), "")
    return StepError(message, traceback)


def failed_step_errors(limit_chars: int = 4000) -> str:
    """The exception of every failed step of the newest pipeline run, for a test's report.

    A pipeline that fails raises only "failure in step(s): x" in the test; the step's own
    error (say, an engine's connection error) is in the run's records.
    """
    from zenml.client import Client

    runs = Client().list_pipeline_runs(sort_by="desc:created", size=1, hydrate=True)
    lines = []
    for run in runs.items:
        for name, step in run.steps.items():
            error = step_error(step)
            if error is not None:
                lines.append(f"--- run {run.name}, step {name}: {error.message}")
                lines.append(error.traceback[-limit_chars:])
    return "\n".join(lines)


def part_files_written(store: Any, root: str, writer: Any, timeout_s: float = 600) -> List[str]:
    """The data files under `root` once the first appears, or [] if the `writer` process exits
    first. The bound is generous: on a loaded machine the run may take minutes to reach its save."""
    deadline = time.time() + timeout_s
    while time.time() < deadline and writer.poll() is None:
        if store.exists(root):
            found = [f"{d}/{n}" for d, _, names in store.walk(root) for n in names if "/data" in f"{d}/"]
            if found:
                return found
        time.sleep(0.1)
    return []
