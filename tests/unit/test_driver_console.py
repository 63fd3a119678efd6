"""What an owned Spark driver JVM prints reaches our stderr as it comes, but for its boot lines.

The JVM is played by the writer end of a pipe; tests/integration/test_spark_engine.py
checks the same with a real driver.
"""

from __future__ import annotations

import os
import threading
import time
from typing import List

from zenml_compute_engines.flavors.spark import driver_console


def _forwarding(monkeypatch) -> tuple:
    """(write end of the JVM's stderr, what reached ours, the forwarder thread)."""
    written: List[bytes] = []
    monkeypatch.setattr(driver_console, "_write", lambda data: written.append(data) if data else None)
    read_end, write_end = os.pipe()
    thread = threading.Thread(target=driver_console._forward, args=(read_end,), daemon=True)
    thread.start()
    return write_end, written, thread


def _until(condition, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return condition()


def test_boot_lines_go_to_the_debug_log_everything_else_passes(monkeypatch):
    jvm, written, thread = _forwarding(monkeypatch)
    for chunk in (
        b"WARNING: Using incubator modules: jdk.incubator.vector\nUsing Spark's def",  # split mid-line
        b"ault log4j profile: org/apache/spark/log4j2-defaults.properties\n",
        b'Setting default log level to "WARN".\n',
        b"To adjust logging level use sc.setLogLevel(newLevel). For SparkR, use setLogLevel(newLevel).\n",
        b"26/12/07 10:00:00 WARN SparkContext: a warning of the user's job\n",
        b'Setting default log level to "INFO".\n',  # not what an owned engine's boot prints
    ):
        os.write(jvm, chunk)
    os.close(jvm)
    thread.join(5)
    assert b"".join(written) == (
        b"26/12/07 10:00:00 WARN SparkContext: a warning of the user's job\n"
        b'Setting default log level to "INFO".\n'
    )


def test_a_line_without_its_newline_yet_passes_at_once(monkeypatch):
    """The progress bar redraws itself with carriage returns and no newline."""
    jvm, written, thread = _forwarding(monkeypatch)
    os.write(jvm, b"\r[Stage 0:>   (0 + 1) / 1]")
    assert _until(lambda: b"".join(written) == b"\r[Stage 0:>   (0 + 1) / 1]")
    os.write(jvm, b"WARNING: Using incub")  # may still become a boot line: held back
    time.sleep(0.2)
    assert b"".join(written) == b"\r[Stage 0:>   (0 + 1) / 1]"
    os.close(jvm)
    thread.join(5)
    assert not thread.is_alive()
    assert b"".join(written).endswith(b"WARNING: Using incub")  # the JVM ended mid-line: passed on
