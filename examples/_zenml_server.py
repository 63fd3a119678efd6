"""A local ZenML server for the tests, benches and the dashboard screenshot.

`zenml login --local` on 127.0.0.1 inside a ZenML config directory of its own: the server
is a daemon process serving the REST API and the dashboard, and the config directory's
client talks to it over REST (what `zenml login <url>` gives a team). `stop()` is
`zenml logout --local`, which stops the daemon.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, Optional

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # imported from a plain script too

from tests.support.ports import free_port  # noqa: E402

# The `zenml` script of this interpreter's environment (its module moved between releases).
_CLI = [str(Path(sys.executable).with_name("zenml"))]


class LocalZenMLServer:
    """A running `zenml login --local` daemon and the environment of its logged-in client."""

    def __init__(self, config_path: Path, port: int, env: Dict[str, str]) -> None:
        self.config_path = config_path
        self.port = port
        self.env = env  # give this to a process to make it a client of the server

    def __repr__(self) -> str:
        return f"LocalZenMLServer(url={self.url!r}, config_path='{self.config_path}')"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def _daemon_dir(self) -> Path:
        return self.config_path / "zen_server" / "daemon"

    @property
    def pid(self) -> Optional[int]:
        try:
            return int((self._daemon_dir / "service.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    @property
    def log(self) -> str:
        try:
            return (self._daemon_dir / "service.log").read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    @classmethod
    def start(cls, config_path: Path, base_env: Optional[Dict[str, str]] = None, timeout_s: float = 180.0) -> "LocalZenMLServer":
        """Start a server whose store and client configuration live in `config_path`."""
        port = free_port()
        env = {
            **(base_env if base_env is not None else os.environ),
            "ZENML_CONFIG_PATH": str(config_path),
            "ZENML_ANALYTICS_OPT_IN": "false",
            "ZENML_AUTO_OPEN_DASHBOARD": "false",
        }
        env.pop("AUTO_OPEN_DASHBOARD", None)  # deprecated name; ZenML warns when it is set
        server = cls(config_path, port, env)
        login = subprocess.run(
            [*_CLI, "login", "--local", "--ip-address", "127.0.0.1", "--port", str(port)],
            env=env, capture_output=True, text=True, timeout=timeout_s,
        )
        if login.returncode != 0:
            server.stop()
            raise RuntimeError(f"`zenml login --local` failed:\n{login.stdout[-3000:]}\n{login.stderr[-3000:]}\n{server.log}")
        return server

    def stop(self, timeout_s: float = 60.0) -> None:
        """`zenml logout --local`; the daemon is killed if it outlives that."""
        pid = self.pid
        subprocess.run([*_CLI, "logout", "--local"], env=self.env, capture_output=True, timeout=timeout_s)
        if pid is None:
            return
        try:
            daemon = psutil.Process(pid)
            daemon.wait(timeout=15)
        except psutil.NoSuchProcess:
            return
        except psutil.TimeoutExpired:
            daemon.kill()
            daemon.wait(timeout=10)

    def alive(self) -> bool:
        pid = self.pid
        return pid is not None and psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE

    def wait_gone(self, timeout_s: float = 15.0) -> bool:
        deadline = time.time() + timeout_s
        while self.alive() and time.time() < deadline:
            time.sleep(0.25)
        return not self.alive()
