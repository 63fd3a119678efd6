"""The console of an owned engine's driver JVM: what it prints at every start that is not the user's.

Every start of a local driver JVM printed the same lines before its first job:

* `WARNING: Using incubator modules: jdk.incubator.vector`: the JVM itself, at boot, for the
  `--add-modules` that Spark 4's launcher always passes; no JVM option turns it off.
* `Using Spark's default log4j profile: ...`, `Setting default log level to "WARN".` and
  `To adjust logging level use sc.setLogLevel(...)`: Spark, on System.err, as the gateway
  starts logging (before any code of ours can reach the JVM).
* `WARN NativeCodeLoader: Unable to load native-hadoop library ...`: a log4j record at the
  first SparkContext (Hadoop's pure-Java code paths are used instead).

So an owned driver JVM is launched with its stderr through a pipe of ours: the boot lines
above go to our debug log, everything else to this process's stderr as it comes (log4j
records, Python worker errors, the progress bar). And while Spark's own default log4j
configuration is in effect (the user configured none), the known-harmless loggers are set
to ERROR before the SparkContext starts. A log4j configuration of the user's is left as it is.
"""

from __future__ import annotations

import os
import subprocess
import threading
from typing import Dict, Optional

from zenml.logger import get_logger

logger = get_logger(__name__)

# Beginnings of the lines the JVM and Spark print at every start of a driver.
BOOT_LINES = (
    b"WARNING: Using incubator modules: ",
    b"Using Spark's default log4j profile: ",
    b'Setting default log level to "WARN".',
    b"To adjust logging level use sc.setLogLevel(",
)
# Loggers whose records say nothing a local engine's user can act on, and the level that
# quiets them.
HARMLESS_LOGGERS = {"org.apache.hadoop.util.NativeCodeLoader": "ERROR"}
# Where Spark's own default configurations are (the classic one and, in Spark 4, the JSON one).
_SPARK_DEFAULT_CONFIG = "org/apache/spark/log4j2-"

_forwarders: Dict[int, threading.Thread] = {}  # by JVM pid


def launch(conf: Dict[str, str]) -> None:
    """Launch the driver JVM (the py4j gateway) as `getOrCreate()` would with this conf, its
    stderr through `_forward`, and quiet the harmless loggers before a SparkContext starts."""
    from pyspark import SparkConf, SparkContext
    from pyspark.java_gateway import launch_gateway

    # A pipe of our own, read from before the launch: a JVM that dies at launch still has
    # its last words (a bad JVM option, say) passed on.
    read_end, write_end = os.pipe()
    forwarder = threading.Thread(target=_forward, args=(read_end,), name="spark-driver-stderr", daemon=True)
    forwarder.start()
    try:
        gateway = launch_gateway(SparkConf(loadDefaults=False).setAll(conf.items()), {"stderr": write_end})
    finally:
        os.close(write_end)  # the JVM holds its own copy: its exit ends the forwarder
    process: Optional[subprocess.Popen] = getattr(gateway, "proc", None)  # None: launched by someone else
    if process is not None:
        _forwarders[process.pid] = forwarder
    SparkContext._ensure_initialized(gateway=gateway)
    try:
        _quiet_harmless_loggers(gateway.jvm)
    except Exception as e:  # log4j's API moved: the records just show
        logger.debug("Could not set the driver JVM's log levels: %s", e)


def release(pid: Optional[int], timeout_s: float = 5.0) -> None:
    """After the JVM `pid` exited: wait until what it printed last has been passed on."""
    forwarder = _forwarders.pop(pid, None) if pid is not None else None
    if forwarder is not None:
        forwarder.join(timeout_s)


def _quiet_harmless_loggers(jvm: object) -> None:
    log4j = jvm.org.apache.logging.log4j  # type: ignore[attr-defined]
    configuration = log4j.LogManager.getContext(False).getConfiguration()
    location = str(configuration.getConfigurationSource().getLocation() or "")
    if _SPARK_DEFAULT_CONFIG not in location:
        return  # the user's own configuration decides
    for name, level in HARMLESS_LOGGERS.items():
        log4j.core.config.Configurator.setLevel(name, log4j.Level.getLevel(level))


def _forward(read_end: int) -> None:
    """Copy the JVM's stderr to ours as it arrives, the boot lines to our debug log."""
    pending = b""
    try:
        while True:
            chunk = os.read(read_end, 65536)
            if not chunk:
                break
            *lines, pending = (pending + chunk).split(b"\n")
            out = []
            for line in lines:
                if line.startswith(BOOT_LINES):
                    logger.debug("Spark driver: %s", line.decode(errors="replace"))
                else:
                    out.append(line + b"\n")
            # A line still arriving (the progress bar redraws without a newline) goes out at
            # once, unless it may yet turn out to be a boot line.
            if pending and not any(start.startswith(pending) or pending.startswith(start) for start in BOOT_LINES):
                out.append(pending)
                pending = b""
            _write(b"".join(out))
        _write(pending)
    except OSError:
        pass  # our stderr is gone: nothing to pass it on to
    finally:
        os.close(read_end)


def _write(data: bytes) -> None:
    """To file descriptor 2, where the JVM wrote before (a terminal, a notebook kernel's log)."""
    while data:
        data = data[os.write(2, data):]
