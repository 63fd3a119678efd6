"""A `ray start --head` cluster on 127.0.0.1 for the attached-engine tests, plus Ray process accounting.

The head runs as `ray start --head --block`, a child of the test process, so that

* stopping it never needs `ray stop` (which kills *every* Ray process of this user on the
  machine, including other test sessions' clusters), and
* its processes (gcs_server, raylet, workers) are exactly the descendants of that child,
  so leak checks elsewhere can tell them apart from processes a pipeline left behind.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, List, Optional, Set

import psutil

from tests.support import zenml_env
from tests.support.ports import free_port

RAY_BIN = str(Path(sys.executable).with_name("ray"))

# Ray resolves 127.0.0.1 to the machine's routable IP unless "clusters" are disabled; with
# this set, every Ray socket (GCS, raylet, workers) binds to loopback.
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
# Token authentication is per *process* in Ray 2.60: the first local `ray.init` of a process
# with RAY_AUTH_MODE unset switches it (and all it starts later) to token mode for good, after
# which its drivers hang on clusters without tokens, and a driver only sends a token when the
# mode was set before it connected. The tests therefore run every Ray (owned, adopted, the
# `ray start` head and subprocess pipelines) without token auth: `use_test_auth_mode()`
# before this process first imports ray.
AUTH_ENV = {"RAY_AUTH_MODE": "disabled"}
# Without a drain timeout, SIGTERM to `ray start --block` waits (30 s by default) for the
# node to drain before it stops its processes.
HEAD_ENV = {**LOOPBACK_ENV, **AUTH_ENV, "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}


def use_test_auth_mode() -> None:
    """Put this process (and what it starts) in the tests' Ray auth mode; call before `import ray`."""
    os.environ.update(AUTH_ENV)
    if "ray._raylet" in sys.modules:  # imported already: refresh Ray's cached config
        from ray._raylet import Config

        Config.initialize("")


# Native daemons by process name; Python helpers by the Ray script they run.
RAY_DAEMONS = ("raylet", "gcs_server")
_RAY_SCRIPTS = ("ray/dashboard/", "ray/autoscaler/", "ray/_private/log_monitor", "ray/_private/runtime_env")


def is_ray_process(proc: psutil.Process) -> bool:
    """A process started by Ray: daemon, worker (`ray::...`) or helper script."""
    try:
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        name = proc.name()
        if name in RAY_DAEMONS or name.startswith("ray::"):
            return True
        cmdline = " ".join(proc.cmdline())
        return cmdline.startswith("ray::") or any(script in cmdline for script in _RAY_SCRIPTS)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def ray_processes(pid: Optional[int] = None, exclude: Iterable[int] = ()) -> List[psutil.Process]:
    """Live Ray processes below `pid` (default: this process), minus the pids in `exclude`
    and those of the test heads (`RayHead`) still running."""
    excluded = set(exclude)
    for head in RUNNING_HEADS:
        excluded |= head.pids()
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    return [p for p in children if p.pid not in excluded and is_ray_process(p)]


def alive(procs: Iterable[psutil.Process]) -> List[psutil.Process]:
    """The processes of `procs` still running (zombies count as gone)."""
    left = []
    for proc in procs:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                left.append(proc)
        except psutil.NoSuchProcess:
            pass
    return left


def wait_gone(procs: Iterable[psutil.Process], timeout: float = 15.0) -> List[psutil.Process]:
    """Wait until `procs` exited; returns those still alive after `timeout`."""
    procs = list(procs)
    deadline = time.monotonic() + timeout
    while True:
        left = alive(procs)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


RUNNING_HEADS: List["RayHead"] = []


@dataclass
class RayHead:
    """A running `ray start --head --block` on 127.0.0.1."""

    process: subprocess.Popen
    port: int
    client_port: int
    temp_dir: str
    log_path: str

    @property
    def address(self) -> str:
        """The GCS address (`host:port`) drivers connect to."""
        return f"127.0.0.1:{self.port}"

    @property
    def client_address(self) -> str:
        """The Ray Client address (`ray://host:port`)."""
        return f"ray://127.0.0.1:{self.client_port}"

    @classmethod
    def start(
        cls, num_cpus: int = 1, object_store_mb: int = 100, timeout: float = 90.0, port: int = 0
    ) -> "RayHead":
        """Start a head; `port` (the GCS port; 0: a free one) brings one back where an earlier one was."""
        port, client_port = port or free_port(), free_port()
        # A private temp dir keeps this cluster out of /tmp/ray/ray_current_cluster, which a bare
        # `ray.init()` anywhere on the machine would otherwise connect to.
        temp_dir = tempfile.mkdtemp(prefix="ray-head-", dir="/tmp")
        log_path = os.path.join(temp_dir, "ray-start.log")
        command = [
            RAY_BIN, "start", "--head", "--block",
            "--port", str(port),
            "--ray-client-server-port", str(client_port),
            "--node-ip-address", "127.0.0.1",
            "--num-cpus", str(num_cpus),
            "--object-store-memory", str(object_store_mb * 1024 * 1024),
            "--include-dashboard=false",
            "--dashboard-agent-listen-port", str(free_port()),
            "--disable-usage-stats",
            "--temp-dir", temp_dir,
        ]
        env = {**os.environ, **HEAD_ENV}
        env.pop("RAY_ADDRESS", None)
        log = open(log_path, "wb")
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        log.close()
        head = cls(process, port, client_port, temp_dir, log_path)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                head.stop()
                raise RuntimeError(f"ray start exited with {process.returncode}:\n{head.log()}")
            if head.status_ok(timeout=20):
                RUNNING_HEADS.append(head)
                return head
            time.sleep(0.5)
        head.stop()
        raise RuntimeError(f"ray start --head did not come up within {timeout}s:\n{head.log()}")

    def log(self) -> str:
        try:
            return Path(self.log_path).read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def processes(self) -> List[psutil.Process]:
        """The head's processes: `ray start` itself and everything below it."""
        try:
            root = psutil.Process(self.process.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def pids(self) -> Set[int]:
        return {p.pid for p in self.processes()}

    def daemons(self) -> List[psutil.Process]:
        return zenml_env.named([p for p in self.processes() if is_ray_process(p)], *RAY_DAEMONS)

    def status_ok(self, timeout: float = 30.0) -> bool:
        """`ray status --address` succeeds: the GCS answers and the raylet has registered."""
        try:
            result = subprocess.run(
                [RAY_BIN, "status", "--address", self.address],
                capture_output=True, text=True, timeout=timeout,
                env={**os.environ, **LOOPBACK_ENV},
            )
        except subprocess.TimeoutExpired:
            return False
        return result.returncode == 0 and "CPU" in result.stdout

    def run_driver(self, code: str, timeout: float = 120.0) -> subprocess.CompletedProcess:
        """Run `code` in a fresh Python process with `ADDRESS` set to the GCS address."""
        return subprocess.run(
            [sys.executable, "-c", f"ADDRESS = {self.address!r}\n{code}"],
            capture_output=True, text=True, timeout=timeout,
            env={**os.environ, **LOOPBACK_ENV},
        )

    def stop(self) -> None:
        if self in RUNNING_HEADS:
            RUNNING_HEADS.remove(self)
        procs = self.processes()
        if self.process.poll() is None:
            # --block installs handlers that stop the processes `ray start` launched.
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for proc in wait_gone(procs, timeout=10):
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        wait_gone(procs, timeout=10)
        if not os.environ.get("RAY_HEAD_KEEP_LOGS"):  # set it to debug a failing attached test
            shutil.rmtree(self.temp_dir, ignore_errors=True)
