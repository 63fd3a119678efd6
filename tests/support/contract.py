"""ZenML's materializer contract, as its own test helper for built-in materializers checks
it (save writes files; visualizations, metadata and loading work), but on fresh instances
as ZenML uses them, plus the content hash."""

from __future__ import annotations

import uuid
from typing import Any, List

import pytest


def check_materializer_contract(materializer_class: Any, data: Any, data_type: Any, store: Any) -> Any:
    """What ZenML's own materializer test helper checks, on *fresh* instances (as ZenML
    uses them), plus the content hash and which files the load opens on this process."""
    from zenml.enums import VisualizationType
    from zenml.metadata.metadata_types import MetadataTypeTuple

    from zenml_compute_engines.materializers import dataset

    uri = f"{store.path}/contract-{uuid.uuid4().hex[:8]}"
    store.makedirs(uri)
    before = set(store.listdir(uri))
    materializer_class(uri, artifact_store=store).save(data)
    assert set(store.listdir(uri)) - before, "save() wrote nothing"

    visualizations = materializer_class(uri, artifact_store=store).save_visualizations(data)
    assert visualizations and all(
        isinstance(path, str) and "\\" not in path and value == VisualizationType.HTML and store.exists(path)
        for path, value in visualizations.items()
    )
    metadata = materializer_class(uri, artifact_store=store).extract_full_metadata(data)
    assert metadata["num_rows"] >= 0 and all(isinstance(v, MetadataTypeTuple) for v in metadata.values())
    content_hash = materializer_class(uri, artifact_store=store).compute_content_hash(data)
    assert content_hash and content_hash == materializer_class(uri, artifact_store=store).compute_content_hash(data)

    loader = materializer_class(uri, artifact_store=store)
    loader.expected_content_hash = content_hash
    opened: List[str] = []
    real_open = store.open

    def recording_open(path: str, mode: str = "r") -> Any:
        opened.append(str(path))
        return real_open(path, mode)

    store.open = recording_open  # the store is this test's instance; restored below
    try:
        loaded = loader.load(data_type)
    finally:
        del store.open
    assert isinstance(loaded, data_type)

    # A manifest changed after the save no longer matches the hash ZenML recorded.
    changed = materializer_class(uri, artifact_store=store)
    changed.expected_content_hash = "0" * 64
    with pytest.raises(dataset.DatasetChangedError):
        changed.load(data_type)
    return loaded, opened
