"""An archive of the Spark driver JVM's classes, kept between runs (class-data sharing).

A Spark driver JVM loads and verifies some 14,000 classes from Spark's jars at every start;
given a class-data sharing (CDS) archive of them it maps them in instead. Measured here
(2 cores, Spark 4.3, Java 17): the start took 6.1 s instead of 9.7, the first job 2.7 s
instead of 4.8, and the JVM 36% less CPU. The JVM records the archive itself as it exits
(`-XX:ArchiveClassesAtExit`, Java 13 and later), once per Spark and Java installation: that
start takes about 6 s longer and its exit about 17 s. `python -m zenml_compute_engines.flavors.spark.class_cache`
records it ahead of time (a Docker image build, a CI setup step).

An archive is only ever used whole: the JVM writes a part file of its own, renamed into
place after the JVM exited cleanly, because a truncated archive crashes the JVM that maps
it (SIGBUS). Should one ever fail to load anyway, the start is retried without it and the
archive removed. The JVM itself refuses, silently, an archive of another Java build or
class path, or one whose class path files changed since (a reinstalled pyspark); the key
below keeps those apart so each setup has its own, and a new recording removes the ones
its setup's changed files made useless.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Callable, Optional, Tuple

from zenml.logger import get_logger

logger = get_logger(__name__)

CACHE_DIR_ENV = "ZENML_ENGINES_CACHE_DIR"
_MIN_JAVA = 13  # the first Java that records an archive at exit
_QUIET = "-Xlog:cds*=off"  # the JVM warns on stdout about every class it cannot archive
_STALE_CLAIM_S = 15 * 60


def cache_dir() -> Path:
    """Where archives are kept: $ZENML_ENGINES_CACHE_DIR, else the user's cache directory."""
    configured = os.environ.get(CACHE_DIR_ENV)
    if configured:
        return Path(configured).expanduser() / "spark-jvm"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "zenml-compute-engines" / "spark-jvm"


def _java() -> Optional[Path]:
    """The java that pyspark's launcher runs: $JAVA_HOME/bin/java, else `java` on PATH."""
    home = os.environ.get("JAVA_HOME")
    found = os.path.join(home, "bin", "java") if home else shutil.which("java")
    return Path(os.path.realpath(found)) if found and os.path.exists(found) else None


def _java_release(java: Path) -> dict:
    """The `release` file of the Java installation (JAVA_VERSION, JAVA_RUNTIME_VERSION, ...)."""
    try:
        text = (java.parent.parent / "release").read_text(errors="replace")
    except OSError:
        return {}
    return dict(re.findall(r'^(\w+)="?([^"\n]*)"?$', text, flags=re.MULTILINE))


def _feature_version(version: str) -> Optional[int]:
    """17 for "17.0.15", 8 for "1.8.0_392"."""
    numbers = re.findall(r"\d+", version)
    if not numbers:
        return None
    return int(numbers[1]) if numbers[0] == "1" and len(numbers) > 1 else int(numbers[0])


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class JvmClassCache:
    """What one driver JVM start does with the archive: use it, or record it."""

    def __init__(self, archive: Path, recording: bool) -> None:
        self.archive = archive
        self.recording = recording
        self._part = archive.with_name(f"{archive.name}.{os.getpid()}.part") if recording else None
        self._claim = archive.with_name(f"{archive.name}.recording") if recording else None

    def __repr__(self) -> str:
        return f"<JvmClassCache {'recording' if self.recording else 'using'} {self.archive}>"

    def java_options(self) -> str:
        if self.recording:
            return f"-XX:ArchiveClassesAtExit={self._part} {_QUIET}"
        # A JVM that crashes writes its report here rather than in the working directory
        # (the report's path is on the JVM's stderr either way).
        crash_report = self.archive.with_name("hs_err_pid%p.log")
        return f"-XX:SharedArchiveFile={self.archive} -XX:ErrorFile={crash_report} {_QUIET}"

    def state(self, jvm_pid: Optional[int]) -> str:
        """For step metadata: `recording`, `used` (the JVM mapped it), or why not."""
        if self.recording:
            return "recording"
        maps = Path(f"/proc/{jvm_pid}/maps")
        if jvm_pid is None or not maps.exists():
            return "offered"  # no /proc here to check whether the JVM took it
        try:
            mapped = str(self.archive) in maps.read_text(errors="replace")
        except OSError:
            return "offered"
        return "used" if mapped else "refused by the JVM"

    def jvm_exited(self, returncode: Optional[int]) -> None:
        """After the driver JVM is gone: put a recorded archive in place, if it is whole."""
        if not self.recording:
            return
        part, claim = self._part, self._claim
        assert part is not None and claim is not None
        try:
            if returncode == 0 and part.exists() and part.stat().st_size > 0:
                os.replace(part, self.archive)
                logger.info("Recorded the Spark driver JVM's classes in %s: later starts map them in.", self.archive)
            elif returncode == 0:
                # The JVM wrote nothing (e.g. a non-empty directory on its class path):
                # do not make every later start pay for recording again.
                self.archive.with_name(f"{self.archive.name}.failed").touch()
                logger.info("The Spark driver JVM recorded no class archive; not trying again for %s.", self.archive)
        finally:
            part.unlink(missing_ok=True)
            claim.unlink(missing_ok=True)

    def discard(self) -> None:
        """The archive would not load: remove it (the next start records a new one)."""
        logger.warning("The Spark driver JVM could not start with the class archive %s; removed it.", self.archive)
        self.archive.unlink(missing_ok=True)


def archive_path(extra_class_path: str = "") -> Tuple[Optional[Path], str]:
    """The archive for this Java, Spark and driver class path, or None and why not."""
    java = _java()
    if java is None:
        return None, "no java found"
    release = _java_release(java)
    feature = _feature_version(release.get("JAVA_VERSION", ""))
    if feature is None:
        return None, f"the version of {java} is unknown"
    if feature < _MIN_JAVA:
        return None, f"Java {feature} cannot record class archives (Java {_MIN_JAVA}+ can)"
    import pyspark
    from pyspark.find_spark_home import _find_spark_home

    spark_home = os.path.realpath(_find_spark_home())
    setup = "\n".join(
        [str(java), release.get("JAVA_RUNTIME_VERSION", ""), pyspark.__version__, spark_home, extra_class_path]
    )
    setup_digest = hashlib.sha256(setup.encode()).hexdigest()[:12]
    files_digest = hashlib.sha256(_class_path_files(spark_home, extra_class_path).encode()).hexdigest()[:8]
    return cache_dir() / f"spark-{pyspark.__version__}-java{feature}-{setup_digest}-{files_digest}.jsa", ""


def _class_path_files(spark_home: str, extra_class_path: str) -> str:
    """Name, size and mtime of every file on the driver's class path. The JVM refuses an
    archive when any of them changed (a reinstalled pyspark has the same version and
    path, but new files), so a changed file must give a new archive."""
    jars = os.path.join(spark_home, "jars")
    entries = [os.path.join(jars, name) for name in sorted(os.listdir(jars))] if os.path.isdir(jars) else []
    entries += [entry for entry in extra_class_path.split(os.pathsep) if entry]
    lines = []
    for entry in entries:
        try:
            stat = os.stat(entry)
        except OSError:
            continue
        lines.append(f"{entry} {stat.st_size} {stat.st_mtime_ns}")
    return "\n".join(lines)


def plan(extra_class_path: str = "", may_record: bool = True) -> Tuple[Optional[JvmClassCache], str]:
    """What the next driver JVM start does with the archive, or None and why nothing.
    `may_record`: whether recording pays here (not in a container that is thrown away
    after one step, where every start would pay for it and keep nothing)."""
    archive, why_not = archive_path(extra_class_path)
    if archive is None:
        return None, why_not
    if archive.exists():
        return JvmClassCache(archive, recording=False), ""
    if not may_record:
        return None, "no archive here, and steps that run elsewhere do not record one (see python -m zenml_compute_engines.flavors.spark.class_cache)"
    if archive.with_name(f"{archive.name}.failed").exists():
        return None, "an earlier recording produced no archive"
    try:
        archive.parent.mkdir(parents=True, exist_ok=True)
        _forget_abandoned_recordings(archive)
        fd = os.open(archive.with_name(f"{archive.name}.recording"), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return None, "another process is recording the archive"
    except OSError as e:
        return None, f"cannot write {archive.parent}: {e.strerror}"
    with os.fdopen(fd, "w") as claim:
        claim.write(str(os.getpid()))
    _remove_superseded(archive)
    return JvmClassCache(archive, recording=True), ""


def _remove_superseded(archive: Path) -> None:
    """Remove the archives of this setup recorded against class path files that have since
    changed: no JVM will map them again. (A JVM mapping one now keeps its mapping: removing
    a file does not truncate it.)"""
    setup_prefix = archive.name.rsplit("-", 1)[0]
    for other in archive.parent.glob(f"{setup_prefix}-*.jsa"):
        if other != archive:
            other.unlink(missing_ok=True)
            other.with_name(f"{other.name}.failed").unlink(missing_ok=True)


def _forget_abandoned_recordings(archive: Path) -> None:
    """Remove a recording claim whose process is gone (killed mid-run) or that is older
    than any recording takes, and part files whose process is gone."""
    claim = archive.with_name(f"{archive.name}.recording")
    try:
        pid = int(claim.read_text() or 0)
        if not _pid_alive(pid) or time.time() - claim.stat().st_mtime > _STALE_CLAIM_S:
            claim.unlink(missing_ok=True)
    except (OSError, ValueError):
        pass
    for part in archive.parent.glob(f"{archive.name}.*.part"):
        pid_text = part.suffixes[-2].lstrip(".") if len(part.suffixes) >= 2 else ""
        if not pid_text.isdigit() or not _pid_alive(int(pid_text)):
            part.unlink(missing_ok=True)


def record(say: Callable[[str], None] = print) -> bool:
    """Record the archive now (start a local Spark driver, run a small job, stop it), saying
    what happens as it goes. Whether all is well: an archive exists, or another process is
    recording it, or an earlier recording showed this setup produces none."""
    import logging

    from pyspark.sql import SparkSession

    from zenml_compute_engines.flavors.spark.engine import shutdown_driver_jvm

    logging.getLogger("py4j").setLevel(logging.WARNING)
    cache, why_not = plan()
    if cache is None:
        say(f"No Spark class archive recorded: {why_not}.")
        return why_not.startswith(("another process", "an earlier"))
    if not cache.recording:
        say(f"The Spark class archive exists: {cache.archive}")
        return True
    began = time.time()
    say(
        f"Recording the Spark driver JVM's class archive in {cache.archive}, once for this Spark and "
        "Java (about 30 s; later driver starts map the classes in). Starting a local driver..."
    )
    returncode = None
    try:
        session = (
            SparkSession.builder.master("local[1]").appName("record-class-archive")
            .config("spark.ui.enabled", "false")
            .config("spark.driver.extraJavaOptions", cache.java_options())
            .getOrCreate()
        )
        say(f"  driver started ({time.time() - began:.0f} s); running a small job...")
        session.range(1000).selectExpr("sum(id)").collect()
        session.stop()
        say(f"  job done ({time.time() - began:.0f} s); the JVM writes the archive as it exits...")
        returncode = shutdown_driver_jvm(wait_s=300)
    finally:
        cache.jvm_exited(returncode)
    if not cache.archive.exists():
        say(f"No Spark class archive recorded (the driver JVM exited with {returncode}).")
        return False
    size_mb = cache.archive.stat().st_size / 2**20
    say(f"Recorded the Spark class archive ({size_mb:.0f} MB) in {time.time() - began:.0f} s: {cache.archive}")
    return True


if __name__ == "__main__":
    sys.exit(0 if record() else 1)
