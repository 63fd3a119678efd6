"""A Spark standalone master + worker on 127.0.0.1, from the pyspark package's `spark-class`."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from typing import Any, Dict, List

from tests.support.ports import free_port


@dataclass
class StandaloneCluster:
    master_url: str
    ui_port: int
    processes: List[subprocess.Popen]

    @classmethod
    def start(cls, timeout: float = 90.0, port: int = 0, spark_home: str = "") -> "StandaloneCluster":
        """Start a master (on `port`, or a free one) and a worker, from `spark_home`
        (default: this environment's pyspark)."""
        import pyspark

        spark_home = spark_home or os.path.dirname(pyspark.__file__)
        spark_class = os.path.join(spark_home, "bin", "spark-class")
        env = {
            **os.environ,
            "SPARK_HOME": spark_home,
            "SPARK_LOCAL_IP": "127.0.0.1",
            "PYSPARK_PYTHON": sys.executable,
        }
        port, ui_port = port or free_port(), free_port()
        master_url = f"spark://127.0.0.1:{port}"

        def launch(*args: str) -> subprocess.Popen:
            return subprocess.Popen(
                [spark_class, *args],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: stop() kills the JVM tree
            )

        master = launch(
            "org.apache.spark.deploy.master.Master",
            "--host", "127.0.0.1", "--port", str(port), "--webui-port", str(ui_port),
        )
        worker = launch(
            "org.apache.spark.deploy.worker.Worker",
            "--host", "127.0.0.1", "--cores", "2", "--memory", "2g",
            "--webui-port", str(free_port()), master_url,
        )
        cluster = cls(master_url, ui_port, [master, worker])
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                if cluster.state().get("aliveworkers", 0) >= 1:
                    return cluster
            except OSError:
                pass
            time.sleep(0.5)
        cluster.stop()
        raise RuntimeError(f"Spark standalone cluster at {master_url} did not come up in {timeout}s")

    @property
    def ui_url(self) -> str:
        return f"http://127.0.0.1:{self.ui_port}/"

    def state(self) -> Dict[str, Any]:
        """The master's JSON status (workers, running and completed applications)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.ui_port}/json/", timeout=5) as response:
            return json.load(response)

    def application_ids(self) -> List[str]:
        state = self.state()
        return [app["id"] for app in state.get("activeapps", []) + state.get("completedapps", [])]

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.processes) and self.state().get("status") == "ALIVE"

    def stop(self) -> None:
        for process in self.processes:
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@dataclass
class ConnectServer:
    """A Spark Connect server (`sbin/start-connect-server.sh`, local[1]) on 127.0.0.1."""

    url: str
    process: subprocess.Popen

    @classmethod
    def start(cls, timeout: float = 90.0) -> "ConnectServer":
        import pyspark

        spark_home = os.path.dirname(pyspark.__file__)
        port = free_port()
        log_dir = tempfile.mkdtemp(prefix="spark-connect-")
        env = {
            **os.environ,
            "SPARK_HOME": spark_home,
            "SPARK_LOCAL_IP": "127.0.0.1",
            "SPARK_NO_DAEMONIZE": "1",  # stay in the foreground so we own the process
            "SPARK_LOG_DIR": log_dir,
            "SPARK_PID_DIR": log_dir,
            "PYSPARK_PYTHON": sys.executable,
        }
        process = subprocess.Popen(
            [
                os.path.join(spark_home, "sbin", "start-connect-server.sh"),
                "--master", "local[1]",
                "--conf", f"spark.connect.grpc.binding.port={port}",
                "--conf", "spark.connect.grpc.binding.address=127.0.0.1",
                "--conf", "spark.ui.enabled=false",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        server = cls(f"sc://127.0.0.1:{port}", process)
        deadline = time.time() + timeout
        while time.time() < deadline and process.poll() is None:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    return server
            except OSError:
                time.sleep(0.5)
        server.stop()
        raise RuntimeError(f"Spark Connect server did not come up on port {port} in {timeout}s")

    def alive(self) -> bool:
        if self.process.poll() is not None:
            return False
        port = int(self.url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True

    def stop(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=30)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
