"""The Spark engine: starts, attaches to and stops SparkSessions (pyspark imported lazily)."""

from __future__ import annotations

import logging
import os
import re
import socket
import subprocess
import sys
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Dict, Iterator, List, Optional, Tuple
from uuid import UUID

from zenml.logger import get_logger

from zenml_compute_engines.flavors.engine import BaseEngine, EngineError, LiveEngine, current_step_context
from zenml_compute_engines.flavors.spark import driver_console
from zenml_compute_engines.flavors.spark import usage as spark_usage
from zenml_compute_engines.flavors.spark.flavor import SparkEngineConfig, SparkEngineSettings
from zenml_compute_engines.flavors.usage import StepRecord, StepUsage

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from zenml_compute_engines.flavors.spark.class_cache import JvmClassCache

logger = get_logger(__name__)

_LOOPBACK = ("127.0.0.1", "localhost", "::1")
# How to open a step's event log: Spark's History Server on the artifact's folder
# ("{uri}", filled in by the core), at http://localhost:18080.
_HISTORY_SERVER = (
    "SPARK_HISTORY_OPTS=-Dspark.history.fs.logDirectory={uri} $SPARK_HOME/sbin/start-history-server.sh"
)


@dataclass
class _DriverJvm:
    """What this process's driver JVM (pyspark launches one per process) does with the
    class archive: `class_cache` (None: nothing), or why not. Process-wide, like the JVM:
    a warm start launches it through the component object ZenML built while preparing the
    run, and a step stops it through its own."""

    class_cache: Optional["JvmClassCache"] = None
    why_not: str = ""


_DRIVER_JVM = _DriverJvm()


def _job_tag(step_run_id: Any) -> str:
    """The tag of the Spark jobs (Connect: operations) a step starts."""
    return f"zenml-step-{step_run_id}"


def _spark_value(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _master_endpoints(master: str) -> List[Tuple[str, int]]:
    """Host/port pairs of `spark://h1:p1,h2:p2` or `sc://host:port` (Connect's default port 15002)."""
    scheme, _, rest = master.partition("://")
    rest = rest.split("/", 1)[0]
    endpoints = []
    for part in rest.split(","):
        host, _, port = part.partition(":")
        endpoints.append((host, int(port) if port else 15002))
    return endpoints


def _probe(master: str, timeout: float) -> None:
    """Fail fast, naming the address, when no master endpoint accepts a TCP connection."""
    errors = []
    for host, port in _master_endpoints(master):
        try:
            with socket.create_connection((host, port), timeout=timeout):
                return
        except OSError as e:
            errors.append(f"{host}:{port}: {e}")
    raise EngineError(f"Spark master {master} is unreachable ({'; '.join(errors)})")


_VERSION_SPAN = re.compile(r'class="version[ "][^>]*>\s*(\d+\.\d+[^<\s]*)')  # Spark 3.5: "version", 4: "version me-3"


def _cluster_spark_version(master: str, ui_url: Optional[str], timeout: float) -> Optional[str]:
    """The Spark version a standalone master's web UI shows, or None when it cannot be read.

    The master's RPC port has no version handshake (a driver of another version just
    sees its messages rejected, retries for a minute and gives up), so we read the UI
    page, which every Spark release heads with its version.
    """
    urls = [ui_url] if ui_url else [f"http://{host}:8080/" for host, _ in _master_endpoints(master)]
    for url in urls:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                page = response.read(512 * 1024).decode("utf-8", errors="replace")
        except (OSError, ValueError):
            continue
        found = _VERSION_SPAN.search(page)
        if found:
            return found.group(1)
    return None


def _release_line(version: str) -> str:
    """major.minor: what a standalone cluster and its drivers must share."""
    return ".".join(version.split(".")[:2])


def shutdown_driver_jvm(wait_s: float = 10.0) -> Optional[int]:
    """Stop the py4j gateway JVM that PySpark keeps alive after `SparkSession.stop()`; its
    exit code, or None when it was not launched here or had to be killed after `wait_s`."""
    from pyspark import SparkContext

    gateway = SparkContext._gateway
    if gateway is None:
        return None
    process = getattr(gateway, "proc", None)  # None when the JVM was not launched by us
    try:
        gateway.shutdown()
    except Exception:  # the JVM may already be gone
        pass
    returncode = None
    if process is not None:
        try:
            if process.stdin:
                process.stdin.close()  # the gateway server exits on EOF
            returncode = process.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        driver_console.release(process.pid)
    SparkContext._gateway = None
    SparkContext._jvm = None
    return returncode


@contextmanager
def _environment(values: Dict[str, str]) -> Iterator[None]:
    """Set environment variables while a session starts (its JVM and context read them)."""
    previous = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _executor_count(session: "SparkSession") -> int:
    return int(session.sparkContext._jsc.sc().getExecutorIds().size())


_ENDPOINTS_PROBED = 9


def _any_executor_listening(session: "SparkSession") -> bool:
    """Whether an executor the driver knows still accepts connections (the first 9
    addresses listed are asked).

    The driver learns that an executor died only when it next talks to it, so after its
    cluster went away and came back within seconds it still counts the old executors and
    its next job waits forever for new ones. The status tracker lists the block-manager
    address of every executor and of the driver itself (which always answers, being this
    JVM), so an executor listens when two of the listed addresses accept a connection.
    """
    infos = session.sparkContext._jsc.sc().statusTracker().getExecutorInfos()
    listening = 0
    for info in list(infos)[:_ENDPOINTS_PROBED]:
        try:
            with socket.create_connection((info.host(), int(info.port())), timeout=1.0):
                listening += 1
        except OSError:
            continue
        if listening == 2:
            return True
    return False


def _answers(session: "SparkSession") -> bool:
    """Whether the driver JVM answers and its SparkContext is not stopped. A JVM killed a
    moment ago is not yet reaped (its process still polls as running) but can no longer
    answer; a context the cluster stopped (its master removed the application) says so."""
    try:
        return not session.sparkContext._jsc.sc().isStopped()
    except Exception:  # py4j: the gateway's connection is gone
        return False


def _is_running(session: "SparkSession") -> bool:
    context = getattr(session, "_sc", None)  # classic sessions only; Connect has no SparkContext
    if context is not None:
        return context._jsc is not None
    return not getattr(session, "is_stopped", True)


class SparkEngine(BaseEngine):
    """Owns a `local[*]` SparkSession or attaches to a Spark cluster."""

    kind = "spark"
    pip_extra = "spark"
    data_type_modules = ("pyspark.sql",)
    system_packages = ("openjdk-17-jre-headless",)  # the driver and executors are JVMs
    engine_settings_class = SparkEngineSettings
    # Process-wide, like the environment variable it tracks (see `_create`).
    _set_connect_marker: ClassVar[bool] = False
    # What the standalone master's UI said when we last connected (None: not read).
    _cluster_version: Optional[str] = None

    @property
    def config(self) -> SparkEngineConfig:
        return self._config  # type: ignore[return-value]

    # ---- start / connect / stop ----------------------------------------------------

    def _find_user_engine(self) -> Optional["SparkSession"]:
        if "pyspark.sql" not in sys.modules:
            return None  # nobody in this process can have started Spark
        from pyspark.sql import SparkSession

        session = SparkSession.getActiveSession() or SparkSession._instantiatedSession
        return session if session is not None and _is_running(session) else None

    def _start(self, settings: SparkEngineSettings) -> "SparkSession":
        return self._build(settings)

    def _connect(self, settings: SparkEngineSettings) -> "SparkSession":
        master = self.config.master
        if master.startswith(("spark://", "sc://")):
            _probe(master, timeout=min(5.0, self.config.startup_timeout_s))
        if master.startswith("spark://"):
            self._check_cluster_version()
        return self._build(settings)

    def _check_cluster_version(self) -> None:
        """Refuse a standalone cluster of another Spark release line before our driver starts."""
        import pyspark

        cluster = _cluster_spark_version(
            self.config.master, self.config.master_ui_url, timeout=min(2.0, self.config.startup_timeout_s)
        )
        self._cluster_version = cluster
        if cluster is None:
            logger.debug("Could not read the Spark version of %s from its web UI.", self.config.master)
            return
        if _release_line(cluster) != _release_line(pyspark.__version__):
            raise EngineError(
                f"Spark master {self.config.master} runs Spark {cluster}, but this driver's pyspark "
                f"is {pyspark.__version__}: a standalone cluster accepts only drivers of its own "
                f"Spark version. Install pyspark=={_release_line(cluster)}.* here, or attach to a "
                f"Spark {_release_line(pyspark.__version__)} cluster."
            )

    def _build(self, settings: SparkEngineSettings) -> "SparkSession":
        """Start a session with the component conf and the step's static options.

        The step's runtime SQL options stay out of the start-up conf, which every later
        session inherits; `_step_view` applies them to this step alone.
        """
        conf = self._conf(settings)
        maybe_runtime = {k for k in self._step_overrides(settings) if k.startswith("spark.sql.")}
        session = self._create({k: v for k, v in conf.items() if k not in maybe_runtime})
        static_sql = {k for k in maybe_runtime if not session.conf.isModifiable(k)}
        if static_sql:  # e.g. spark.sql.warehouse.dir: only settable at start-up
            session.stop()
            session = self._create({k: v for k, v in conf.items() if k not in maybe_runtime - static_sql})
        return session

    def _create(self, conf: Dict[str, str]) -> "SparkSession":
        from pyspark import SparkContext
        from pyspark.sql import SparkSession

        # py4j logs every closed gateway connection at INFO, drowning the step logs.
        logging.getLogger("py4j").setLevel(logging.WARNING)
        if not self.config.is_connect and SparkContext._gateway is None:  # a driver JVM will launch
            self._plan_class_cache(conf)
        cache = _DRIVER_JVM.class_cache

        def get_or_create(with_cache: bool) -> "SparkSession":
            chosen = SparkSession.builder.appName(self.config.app_name)
            if self.config.is_connect:
                chosen = chosen.remote(self.config.master)
            else:
                chosen = chosen.master(self.config.master)
            options = dict(conf)
            if with_cache and cache is not None:
                ours = cache.java_options()
                mine = options.get("spark.driver.extraJavaOptions", "")
                options["spark.driver.extraJavaOptions"] = f"{mine} {ours}".strip()
            for key, value in options.items():
                chosen = chosen.config(key, value)
            if self.config.owns_engine and SparkContext._gateway is None:
                # Launched by us rather than by getOrCreate(), so that its start-up noise
                # goes to our debug log (driver_console.py).
                app = {"spark.master": self.config.master, "spark.app.name": self.config.app_name}
                driver_console.launch({**app, **options})
            return chosen.getOrCreate()

        launch_env = {}
        if conf.get("spark.driver.bindAddress") == "127.0.0.1":
            # The Spark UI binds to SPARK_LOCAL_IP or else every interface, whatever the
            # driver's bind address; the JVM reads it from our environment at launch.
            launch_env["SPARK_LOCAL_IP"] = "127.0.0.1"
        if "spark.pyspark.python" in conf and "PYSPARK_PYTHON" not in os.environ:
            # PySpark's SparkContext takes its workers' interpreter from PYSPARK_PYTHON
            # (default: `python3` on PATH, often not this virtualenv's), not from the conf.
            launch_env["PYSPARK_PYTHON"] = conf["spark.pyspark.python"]
        connect_marker_was_set = "SPARK_CONNECT_MODE_ENABLED" in os.environ
        with _environment(launch_env):
            try:
                session = get_or_create(with_cache=True)
            except Exception as e:
                # An archive the JVM cannot map kills it at launch: start once more without
                # it, and drop the archive if that was the cause. Not for any other failure,
                # nor for a start given up at its timeout (its abort already dropped the plan).
                died_at_launch = "JAVA_GATEWAY_EXITED" in str(e)
                if cache is None or cache.recording or not died_at_launch or _DRIVER_JVM.class_cache is not cache:
                    self._driver_jvm_gone(None)
                    raise
                self._abort_start()
                session = get_or_create(with_cache=False)
                cache.discard()
                _DRIVER_JVM.why_not = f"{cache.archive} would not load (removed)"
        if self.config.is_connect and not connect_marker_was_set:
            # PySpark marks the whole process (and its children) as Connect-only and never
            # unmarks it for a remote server; we do on stop, so classic Spark can follow.
            SparkEngine._set_connect_marker = True
        return session

    def _plan_class_cache(self, conf: Dict[str, str]) -> None:
        """Decide what the driver JVM about to launch does with the class archive."""
        from zenml_compute_engines.flavors.spark import class_cache

        _DRIVER_JVM.class_cache, _DRIVER_JVM.why_not = None, ""
        if not self.config.jvm_class_cache:
            _DRIVER_JVM.why_not = "off (jvm_class_cache=False)"
            return
        if re.search(r"-XX:(SharedArchiveFile|ArchiveClassesAtExit)|-Xshare", conf.get("spark.driver.extraJavaOptions", "")):
            _DRIVER_JVM.why_not = "the conf's spark.driver.extraJavaOptions sets class-data sharing"
            return
        from zenml.client import Client

        # Only where the steps run in this process (the local orchestrator, a notebook)
        # does the machine keep what a start records; a step in a container of its own
        # would pay for the recording and throw it away.
        orchestrator = Client().active_stack.orchestrator
        cache, why_not = class_cache.plan(
            conf.get("spark.driver.extraClassPath", ""), may_record=orchestrator.flavor == "local"
        )
        _DRIVER_JVM.class_cache, _DRIVER_JVM.why_not = cache, why_not
        if cache is not None and cache.recording:
            logger.info(
                "Recording the Spark driver JVM's classes in %s, once for this Spark and Java: this "
                "start and its stop take longer, later starts map the classes in.", cache.archive,
            )

    def _recording(self) -> bool:
        return _DRIVER_JVM.class_cache is not None and _DRIVER_JVM.class_cache.recording

    def _driver_jvm_gone(self, returncode: Optional[int]) -> None:
        cache, _DRIVER_JVM.class_cache = _DRIVER_JVM.class_cache, None
        if cache is not None:
            cache.jvm_exited(returncode)

    def _conf(self, settings: SparkEngineSettings) -> Dict[str, str]:
        """Start-up conf: loopback defaults, artifact-store bridge, component conf, step conf."""
        from zenml.client import Client

        from zenml_compute_engines.flavors.storage import spark_conf_for_artifact_store

        conf: Dict[str, str] = {}
        if not self.config.is_connect:
            conf["spark.ui.enabled"] = _spark_value(self.config.ui_enabled)
            hosts = [host for host, _ in _master_endpoints(self.config.master)] if self.config.address else []
            if all(host in _LOOPBACK for host in hosts):
                # Everything on this machine: bind the driver to loopback and run
                # executors on this interpreter.
                conf["spark.driver.host"] = "127.0.0.1"
                conf["spark.driver.bindAddress"] = "127.0.0.1"
                conf["spark.pyspark.python"] = sys.executable
            conf.update(spark_conf_for_artifact_store(Client().active_stack.artifact_store))
        user_conf = {k: _spark_value(v) for k, v in {**self.config.conf, **settings.conf}.items()}
        if self.config.keep_step_record and (self.config.owns_engine or self.config.master.startswith("spark://")):
            # Our driver (owned, or ours on a standalone cluster) writes the event log
            # each step's own is cut from; a spark.eventLog.* of the user's wins.
            conf.update(spark_usage.event_log_conf(user_conf))
        conf.update(user_conf)
        return conf

    def _stop(self, handle: "SparkSession", owned: bool) -> None:
        # For Spark, attached still means "our driver application on their cluster":
        # stopping it ends our application, never the cluster.
        handle.stop()
        if not self.config.is_connect:
            self._driver_jvm_gone(shutdown_driver_jvm(wait_s=120 if self._recording() else 10))
            spark_usage.forget_event_logs()
        elif SparkEngine._set_connect_marker:
            os.environ.pop("SPARK_CONNECT_MODE_ENABLED", None)
            SparkEngine._set_connect_marker = False

    def _is_alive(self, live: LiveEngine) -> bool:
        session = live.handle
        if not _is_running(session):
            return False
        if not self.config.is_connect:
            from pyspark import SparkContext

            process = getattr(SparkContext._gateway, "proc", None)
            if process is not None and process.poll() is not None:
                # The driver JVM died (killed, out of memory): known without asking it, so
                # py4j logs no connection error for a JVM long gone.
                return False
            if not _answers(session):
                return False
        if self.config.master.startswith(("spark://", "sc://")):
            try:
                _probe(self.config.master, timeout=2.0)
            except EngineError:
                return False
        if live.notes.get("executors", 0) > 0 and not _any_executor_listening(session):
            # A standalone master that restarted does not know our application, and the
            # driver waits for executors forever: it had some after an earlier step and
            # has none now, or none that still listens (counted only without dynamic
            # allocation, see below).
            return False
        return True

    def _abort_start(self) -> None:
        if "pyspark" not in sys.modules:
            return
        from pyspark import SparkContext

        process = getattr(SparkContext._gateway, "proc", None)
        if process is not None:
            process.kill()
            process.wait()
            driver_console.release(process.pid)
        self._driver_jvm_gone(None)
        SparkContext._gateway = None
        SparkContext._jvm = None
        SparkContext._active_spark_context = None
        from pyspark.sql import SparkSession

        SparkSession._instantiatedSession = None  # else getOrCreate() returns the dead one
        SparkSession._activeSession = None

    # ---- observability -------------------------------------------------------------

    def _describe(self, handle: "SparkSession") -> Dict[str, Any]:
        from zenml_compute_engines.flavors.storage import redact_conf

        facts: Dict[str, Any] = {"spark_version": handle.version}
        if self._cluster_version:
            facts["cluster_spark_version"] = self._cluster_version
        if self.config.is_connect:
            facts.update(
                master=self.config.master,
                address=self.config.master,
                application_id=handle.conf.get("spark.app.id", None),
            )
            return facts
        context = handle.sparkContext
        if _DRIVER_JVM.class_cache is not None:
            process = getattr(context._gateway, "proc", None)
            facts["jvm_class_cache"] = _DRIVER_JVM.class_cache.state(getattr(process, "pid", None))
        elif _DRIVER_JVM.why_not:
            facts["jvm_class_cache"] = f"not used: {_DRIVER_JVM.why_not}"
        facts.update(
            master=context.master,
            address=context.master,
            application_id=context.applicationId,
            conf=redact_conf(dict(context.getConf().getAll())),
        )
        if context.uiWebUrl:
            facts["spark_ui_url"] = facts["dashboard_url"] = context.uiWebUrl
        return facts

    def _step_usage(self, live: LiveEngine, view: "SparkSession", step_run_id: UUID, mark: Any) -> Optional[StepUsage]:
        """The step's jobs, counted by the driver's status store (flavors/spark/usage.py);
        None for Spark Connect, whose driver is the server's."""
        if self.config.is_connect:
            return None
        return spark_usage.step_usage(view.sparkContext, _job_tag(step_run_id))

    def _step_record(self, live: LiveEngine, view: "SparkSession", step_run_id: UUID, mark: Any) -> Optional[StepRecord]:
        """The step's own Spark event log, which Spark's History Server opens from the
        artifact's folder; None for Spark Connect, whose driver is the server's."""
        from zenml_compute_engines.materializers.engine_record import EngineRecordFile

        if self.config.is_connect:
            return None
        context = view.sparkContext
        path, jobs = spark_usage.step_event_log(context, _job_tag(step_run_id), str(step_run_id))
        return StepRecord(
            name="spark_event_log",
            data=EngineRecordFile(path, "spark event log"),
            facts={
                "history_server": _HISTORY_SERVER,
                "application_id": context.applicationId,
                "jobs": jobs,
            },
        )

    # ---- per-step settings ---------------------------------------------------------

    def _step_overrides(self, settings: SparkEngineSettings) -> Dict[str, str]:
        base = {k: _spark_value(v) for k, v in self.config.conf.items()}
        return {
            k: _spark_value(v) for k, v in settings.conf.items() if base.get(k) != _spark_value(v)
        }

    def _restart_reason(self, live: LiveEngine, settings: SparkEngineSettings) -> Optional[str]:
        session = live.handle
        changed = [
            key
            for key, value in self._step_overrides(settings).items()
            if not session.conf.isModifiable(key) and session.conf.get(key, None) != value
        ]
        if not changed:
            return None
        return f"static Spark option(s) {', '.join(sorted(changed))} differ from the running engine"

    def _step_view(self, live: LiveEngine, settings: SparkEngineSettings) -> "SparkSession":
        session = view = live.handle
        runtime = {
            k: v for k, v in self._step_overrides(settings).items() if session.conf.isModifiable(k)
        }
        if runtime:
            # A child session shares the SparkContext but has its own SQL conf, so the
            # step's options never leak into the next step.
            view = session.newSession()
            for key, value in runtime.items():
                view.conf.set(key, value)
        context = current_step_context()
        if context is not None:
            self._tag_jobs(view, _job_tag(context.step_run.id), add=True)
        return view

    def _tag_jobs(self, view: "SparkSession", tag: str, add: bool) -> None:
        """Tag (or stop tagging) the jobs this thread starts, the step's thread: Spark's
        job tags are thread-local, so jobs of other steps or threads never carry it."""
        if self.config.is_connect and add:
            view.addTag(tag)
        elif self.config.is_connect:
            view.removeTag(tag)
        elif add:
            view.sparkContext.addJobTag(tag)
        else:
            view.sparkContext.removeJobTag(tag)

    def _cancel_step_work(self, live: LiveEngine, view: "SparkSession", step_run_id: UUID) -> List[str]:
        tag = _job_tag(step_run_id)
        if self.config.is_connect:
            return [f"operation {operation}" for operation in view.interruptTag(tag)]
        context = view.sparkContext
        tracker = context._jsc.sc().statusTracker()
        running = sorted(set(tracker.getJobIdsForTag(tag)) & set(context.statusTracker().getActiveJobsIds()))
        context.cancelJobsWithTag(tag)
        return [f"job {job}" for job in running]

    def _release_step_view(self, live: LiveEngine, view: "SparkSession", step_run_id: UUID, step_failed: bool) -> None:
        try:
            self._tag_jobs(view, _job_tag(step_run_id), add=False)
        except Exception:  # the engine may be gone already (a failed step's stop follows)
            pass
        if self.config.master.startswith("spark://"):
            session = live.handle
            try:
                dynamic = session.sparkContext.getConf().get("spark.dynamicAllocation.enabled", "false")
                if dynamic.lower() != "true":  # with it, an idle application may have none
                    live.notes["executors"] = _executor_count(session)
            except Exception:  # the engine may be gone already; the next step finds out
                live.notes.pop("executors", None)
        # A Connect child session is a server-side session of its own; a classic child
        # shares the SparkContext, so stopping it would stop the engine.
        if self.config.is_connect and view is not live.handle:
            view.stop()
