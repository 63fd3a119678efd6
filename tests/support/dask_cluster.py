"""A `dask scheduler` + `dask worker` on 127.0.0.1 for the attached-engine tests, and process probes.

Import-light (no zenml, no dask at module level): Dask workers import this module to run
the small probe functions below.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Set

import psutil

from tests.support import ports

ROOT = Path(__file__).resolve().parents[2]
DASK = str(Path(sys.executable).with_name("dask"))

# Roots of the process trees the fixture started: their workers are meant to stay alive.
_FIXTURE_PIDS: Set[int] = set()


# ---- probes that run on Dask workers or in steps -------------------------------------


def worker_pid(*_: Any) -> int:
    return os.getpid()


def tag_pid(part: Any) -> Any:
    """map_partitions function: adds the pid of the process that computed the partition."""
    part = part.copy()
    part["pid"] = os.getpid()
    return part


def resource_probe(*_: Any) -> Dict[str, Any]:
    """What the worker knows about the running task: its resources and annotations."""
    from distributed import get_worker
    from distributed.worker import thread_state

    worker = get_worker()
    task = worker.state.tasks.get(thread_state.key)
    return {
        "available": dict(worker.state.available_resources),
        "held": dict(getattr(task, "resource_restrictions", None) or {}),
        # Without the engine's own: resources (checked apart) and the step's span (usage).
        "annotations": {
            k: v for k, v in (getattr(task, "annotations", None) or {}).items() if k not in ("resources", "span")
        },
    }


def listening_ips(pid: Optional[int] = None) -> List[str]:
    """IPs of the listening TCP sockets of `pid` (default: this process) and its descendants."""
    root = psutil.Process(pid)
    ips = []
    for proc in [root, *root.children(recursive=True)]:
        try:
            ips.extend(ports.listening_ips(proc))
        except psutil.NoSuchProcess:
            pass
    return ips


def is_dask_worker_process(proc: psutil.Process) -> bool:
    """Dask worker processes as LocalCluster/nannies start them (`multiprocessing` spawn children).

    Their name is just `python`; the cmdline tells them apart from, e.g., the
    multiprocessing resource tracker (which exits with its parent and is not Dask's).
    """
    try:
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        cmdline = " ".join(proc.cmdline())
        if cmdline.startswith("dask worker ["):
            return True  # retitled by distributed when setproctitle is installed
        return proc.name().startswith("python") and (
            "multiprocessing.spawn" in cmdline or "distributed" in cmdline or " dask " in f" {cmdline} "
        )
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
        return False


def leftover_workers(pid: Optional[int] = None) -> List[psutil.Process]:
    """Live Dask worker processes under `pid` (default: this process), outside the fixture's trees."""
    excluded: Set[int] = set()
    for root in _FIXTURE_PIDS:
        try:
            proc = psutil.Process(root)
            excluded |= {root, *(p.pid for p in proc.children(recursive=True))}
        except psutil.NoSuchProcess:
            pass
    return [
        p
        for p in psutil.Process(pid).children(recursive=True)
        if p.pid not in excluded and is_dask_worker_process(p)
    ]


def wait_until_gone(pids: List[int], timeout: float = 15) -> List[int]:
    """Wait for processes to exit; returns the pids still alive after `timeout`."""
    deadline = time.time() + timeout
    alive = list(pids)
    while alive and time.time() < deadline:
        alive = [p for p in alive if _alive(p)]
        if alive:
            time.sleep(0.2)
    return alive


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


# ---- the attached cluster --------------------------------------------------------------


class SchedulerAndWorker:
    """`dask scheduler` + one `dask worker --nthreads 1` (with its nanny) on 127.0.0.1."""

    def __init__(self, scheduler: subprocess.Popen, worker: subprocess.Popen, address: str, workdir: str):
        self.scheduler = scheduler
        self.worker = worker
        self.address = address
        self.workdir = workdir

    @classmethod
    def start(cls, timeout: float = 90, port: int = 0) -> "SchedulerAndWorker":
        """Start both; `port` 0 lets the scheduler pick one."""
        workdir = tempfile.mkdtemp(prefix="dask-fixture-")
        scheduler_file = os.path.join(workdir, "scheduler.json")
        # Workers unpickle functions of tests.* by reference: run them from the repo root.
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        log = open(os.path.join(workdir, "scheduler.log"), "wb")
        scheduler = subprocess.Popen(
            [DASK, "scheduler", "--host", "127.0.0.1", "--port", str(port),
             "--dashboard-address", "127.0.0.1:0", "--scheduler-file", scheduler_file],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
        _FIXTURE_PIDS.add(scheduler.pid)
        deadline = time.time() + timeout
        address = None
        while time.time() < deadline and scheduler.poll() is None:
            try:
                address = json.loads(Path(scheduler_file).read_text())["address"]
                break
            except (OSError, ValueError, KeyError):
                time.sleep(0.2)
        if address is None:
            scheduler.kill()
            raise RuntimeError(f"dask scheduler did not start; see {workdir}/scheduler.log")
        log = open(os.path.join(workdir, "worker.log"), "wb")
        worker = subprocess.Popen(
            [DASK, "worker", address, "--nthreads", "1", "--nworkers", "1", "--host", "127.0.0.1",
             "--memory-limit", "1GiB", "--no-dashboard", "--dashboard-address", "127.0.0.1:0",
             "--resources", "slot=1",
             "--local-directory", workdir],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
        _FIXTURE_PIDS.add(worker.pid)
        cluster = cls(scheduler, worker, address, workdir)
        if cluster.worker_count(wait_for=1, timeout=max(1.0, deadline - time.time())) < 1:
            cluster.stop()
            raise RuntimeError(f"dask worker did not join {address}; see {workdir}/worker.log")
        return cluster

    def checker(self) -> Any:
        """A short-lived client of our own that never becomes the default client."""
        from distributed import Client

        return Client(self.address, set_as_default=False, timeout="20s", name="fixture-checker")

    def worker_count(self, wait_for: int = 0, timeout: float = 30) -> int:
        with self.checker() as client:
            if wait_for:
                try:
                    client.wait_for_workers(wait_for, timeout=timeout)
                except Exception:
                    pass
            return len(client.scheduler_info(n_workers=-1)["workers"])

    def connected_clients(self) -> List[str]:
        """Ids of the clients connected to the scheduler, other than the checker asking."""
        with self.checker() as client:
            ids = client.run_on_scheduler(lambda dask_scheduler: sorted(dask_scheduler.clients))
            return [i for i in ids if i not in (client.id, "fire-and-forget")]

    def clients_ever_connected(self) -> List[str]:
        """Ids of every client that connected to the scheduler so far, except the checkers."""
        with self.checker() as client:
            events = client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.get_events("all"))
        ids = [e["client"] for _, e in events if isinstance(e, dict) and e.get("action") == "add-client"]
        return [i for i in ids if not i.startswith("Client-fixture-checker-")]

    def worker_tree_pids(self) -> Set[int]:
        proc = psutil.Process(self.worker.pid)
        return {proc.pid, *(p.pid for p in proc.children(recursive=True))}

    def alive(self) -> bool:
        return self.scheduler.poll() is None and self.worker.poll() is None

    def stop(self) -> None:
        for proc in (self.worker, self.scheduler):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in (self.worker, self.scheduler):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                for child in psutil.Process(proc.pid).children(recursive=True):
                    child.kill()
                proc.kill()
                proc.wait()
            _FIXTURE_PIDS.discard(proc.pid)
        shutil.rmtree(self.workdir, ignore_errors=True)
