"""A local BigQuery emulator (bqemulator, DuckDB-backed) on 127.0.0.1, for the demo, the
tests and the benchmarks. Nothing here contacts Google.

The emulator lives in a virtualenv of its own (`.venv-bqemu`): it brings
google-cloud-bigquery-storage and other pins that must not leak into the project's venv.
`ensure_venv()` creates it once (pip only, offline-capable mirrors are fine).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parent.parent
VENV = Path(os.environ.get("BQEMU_VENV", ROOT / ".venv-bqemu"))
# Versions measured to work together offline (newer duckdb downloads its extensions).
PINS = [
    "bqemulator==1.4.0",
    "duckdb==1.5.5",
    "duckdb-extensions==1.5.5",
    "duckdb-extension-spatial==1.5.5",
    "numpy",
]
PROJECT = "test"


def ensure_venv(venv: Path = VENV) -> Path:
    """The emulator's executable, installing its venv first if needed."""
    executable = venv / "bin" / "bqemulator"
    done = venv / "installed"  # written last: an install cut short, or of other pins, is done again
    if done.exists() and done.read_text() == " ".join(PINS):
        return executable
    print(f"Installing the BigQuery emulator into {venv} (once) ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, *PINS], check=True)
    # Installs the spatial extension from its wheel; otherwise duckdb tries to download it.
    subprocess.run(
        [str(venv / "bin" / "python"), "-c", "from duckdb_extensions import import_extension; import_extension('spatial')"],
        check=True,
    )
    done.write_text(" ".join(PINS))
    return executable


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Emulator:
    """One `bqemulator start` process (REST + gRPC Storage API), in memory, on loopback."""

    def __init__(self, process: subprocess.Popen, rest_port: int, grpc_port: int, log_path: str) -> None:
        self.process = process
        self.rest_port = rest_port
        self.grpc_port = grpc_port
        self.log_path = log_path

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    @property
    def grpc_endpoint(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def __repr__(self) -> str:
        return f"<BigQuery emulator pid={self.process.pid} rest={self.rest_url} grpc={self.grpc_endpoint}>"

    @classmethod
    def start(cls, project: str = PROJECT, timeout: float = 60, venv: Path = VENV) -> "Emulator":
        executable = ensure_venv(venv)
        rest_port, grpc_port = _free_port(), _free_port()
        log_path = tempfile.mktemp(prefix="bqemulator-", suffix=".log")
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [str(executable), "start", "--rest-host", "127.0.0.1", "--rest-port", str(rest_port),
                 "--grpc-host", "127.0.0.1", "--grpc-port", str(grpc_port), "--project", project,
                 "--log-level", "warning"],
                env={**os.environ, "BQEMU_ENABLE_FORMAT_EXTENSIONS": "false"},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        emulator = cls(process, rest_port, grpc_port, log_path)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"the BigQuery emulator exited with {process.returncode}; see {log_path}")
            try:
                with urllib.request.urlopen(f"{emulator.rest_url}/readyz", timeout=2) as answer:
                    if answer.status == 200:
                        return emulator
            except OSError:
                time.sleep(0.2)
        emulator.stop()
        raise RuntimeError(f"the BigQuery emulator did not become ready within {timeout:g}s; see {log_path}")

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def anonymous_client(api_endpoint: str, project: str = PROJECT, location: Optional[str] = None):  # noqa: ANN201
    """A plain google-cloud-bigquery client of the emulator, for seeding and checking data."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    return bigquery.Client(
        project=project,
        credentials=AnonymousCredentials(),
        location=location,
        client_options={"api_endpoint": api_endpoint},
    )
