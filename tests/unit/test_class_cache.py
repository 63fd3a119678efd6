"""The Spark driver JVM's class archive: which start records it, when one is put in place.

These use a stand-in Java installation (a `release` file and an empty `bin/java`);
tests/integration/test_spark_engine.py records and maps a real archive.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from zenml_compute_engines.flavors.spark import class_cache


@pytest.fixture
def java(tmp_path, monkeypatch):
    """Point the cache and JAVA_HOME at temporary directories; returns a version setter."""
    home = tmp_path / "jdk"
    (home / "bin").mkdir(parents=True)
    (home / "bin" / "java").touch()
    monkeypatch.setenv("JAVA_HOME", str(home))
    monkeypatch.setenv(class_cache.CACHE_DIR_ENV, str(tmp_path / "cache"))

    def version(number: str) -> None:
        (home / "release").write_text(f'JAVA_VERSION="{number}"\nJAVA_RUNTIME_VERSION="{number}+1"\n')

    version("17.0.15")
    return version


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_java_older_than_13_records_nothing_and_says_why(java):
    java("11.0.22")
    assert class_cache.plan() == (None, "Java 11 cannot record class archives (Java 13+ can)")
    java("1.8.0_392")
    assert class_cache.plan() == (None, "Java 8 cannot record class archives (Java 13+ can)")


def test_one_process_records_at_a_time_and_a_dead_ones_claim_is_taken_over(java):
    first, _ = class_cache.plan()
    assert first is not None and first.recording
    assert "-XX:ArchiveClassesAtExit=" in first.java_options()
    assert class_cache.plan() == (None, "another process is recording the archive")

    claim = first.archive.with_name(first.archive.name + ".recording")
    claim.write_text(str(_dead_pid()))  # its recorder was killed
    second, _ = class_cache.plan()
    assert second is not None and second.recording


def test_only_a_whole_recording_is_put_in_place(java):
    cache, _ = class_cache.plan()
    part = cache.archive.with_name(f"{cache.archive.name}.{os.getpid()}.part")
    part.write_bytes(b"half an archive")
    cache.jvm_exited(None)  # the JVM was killed mid-way
    assert sorted(p.name for p in cache.archive.parent.iterdir()) == []

    cache, _ = class_cache.plan()
    part.write_bytes(b"an archive")
    cache.jvm_exited(0)
    assert [p.name for p in cache.archive.parent.iterdir()] == [cache.archive.name]
    using, _ = class_cache.plan()
    assert not using.recording
    assert f"-XX:SharedArchiveFile={cache.archive}" in using.java_options()


def test_a_recording_that_wrote_nothing_is_not_tried_again(java):
    cache, _ = class_cache.plan()
    cache.jvm_exited(0)
    assert class_cache.plan() == (None, "an earlier recording produced no archive")


def test_each_java_build_and_driver_class_path_has_its_own_archive(java):
    plain, _ = class_cache.archive_path()
    with_jars, _ = class_cache.archive_path("/opt/extra.jar")
    java("17.0.16")
    newer_java, _ = class_cache.archive_path()
    assert len({plain, with_jars, newer_java}) == 3
    assert plain.name.startswith("spark-") and "-java17-" in plain.name


def test_a_changed_class_path_file_gets_a_new_archive_which_replaces_the_old(java, tmp_path):
    # The JVM refuses an archive once a file on its class path changed (a reinstalled
    # pyspark keeps its version and path): that must not keep the old archive in use.
    jar = tmp_path / "extra.jar"
    jar.write_bytes(b"classes")
    old, _ = class_cache.plan(str(jar))
    old.archive.write_bytes(b"an archive")
    old.jvm_exited(None)  # (drops the claim)
    assert not class_cache.plan(str(jar))[0].recording

    os.utime(jar, ns=(0, 0))  # reinstalled
    new, _ = class_cache.plan(str(jar))
    assert new.recording and new.archive != old.archive
    assert not old.archive.exists()  # never to be mapped again


def test_a_part_file_of_a_process_that_is_gone_is_removed(java):
    archive, _ = class_cache.archive_path()
    archive.parent.mkdir(parents=True)
    orphan = archive.with_name(f"{archive.name}.{_dead_pid()}.part")
    orphan.write_bytes(b"x" * 100)
    class_cache.plan()
    assert not orphan.exists()


def test_steps_that_run_elsewhere_use_an_archive_but_never_record_one(java):
    assert class_cache.plan(may_record=False)[0] is None
    recorded, _ = class_cache.plan()
    recorded.archive.write_bytes(b"an archive")
    using, _ = class_cache.plan(may_record=False)
    assert using is not None and not using.recording
