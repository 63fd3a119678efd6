"""`EngineRecordFile`: a file an engine wrote about a step, kept as is in the artifact's folder."""

from __future__ import annotations

import uuid
from datetime import datetime

from zenml.artifact_stores.local_artifact_store import LocalArtifactStore, LocalArtifactStoreConfig
from zenml.enums import StackComponentType

from zenml_compute_engines.materializers.engine_record import EngineRecordFile, EngineRecordFileMaterializer


def _local_store(path):
    now = datetime.now()
    return LocalArtifactStore(
        name="records", id=uuid.uuid4(), config=LocalArtifactStoreConfig(path=str(path)), flavor="local",
        type=StackComponentType.ARTIFACT_STORE, user=None, created=now, updated=now,
    )


def test_the_file_is_kept_under_its_own_name_and_loads_back(tmp_path):
    written = tmp_path / "local-1765000000000-step"
    written.write_bytes(b'{"Event":"SparkListenerLogStart","Spark Version":"4.3.0"}\n' * 3)
    store = _local_store(tmp_path / "store")
    uri = str(tmp_path / "store" / "record")

    materializer = EngineRecordFileMaterializer(uri, artifact_store=store)
    materializer.save(EngineRecordFile(str(written), "spark event log"))
    metadata = materializer.extract_metadata(EngineRecordFile(str(written), "spark event log"))

    # The folder holds the file as written, so an engine's viewer opens the folder (Spark's
    # History Server lists it as its log directory and skips the hidden kind file).
    kept = sorted(p.name for p in (tmp_path / "store" / "record").iterdir())
    assert kept == [".kind", "local-1765000000000-step"]
    assert (tmp_path / "store" / "record" / written.name).read_bytes() == written.read_bytes()
    assert metadata == {"kind": "spark event log", "file": written.name, "bytes": written.stat().st_size}

    loaded = EngineRecordFileMaterializer(uri, artifact_store=store).load(EngineRecordFile)
    assert (loaded.kind, loaded.filename) == ("spark event log", written.name)
    assert open(loaded.path, "rb").read() == written.read_bytes()
    assert repr(loaded) == f"EngineRecordFile(spark event log: {loaded.path})"
