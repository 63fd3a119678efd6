"""What ZenML puts in a remote orchestrator's image for a stack with our engines.

ZenML's own image builder writes the requirements files and the Dockerfile without a
Docker daemon (there is none here); these tests read what it would install. Here the
package is installed editable from this checkout, the pipelines' source root, so the
image is told to install it from the copied code; installed from a wheel, the image asks
for `zenml-compute-engines[<extra>]==<version>` (tests/integration/test_user_repo.py).
"""

from __future__ import annotations

import uuid
from importlib.metadata import version

import pytest

from tests.support import zenml_env

# The image gets the engine library at the version installed here (the one the user's
# cluster matches), with the extras our package asks for.
ENGINES = {
    "spark": ({"master": "local[2]"}, f"pyspark[connect]=={version('pyspark')}", ["openjdk-17-jre-headless"]),
    "dask": ({}, f"dask[dataframe,distributed]=={version('dask')}", []),
    "ray": ({}, f"ray[data,default]=={version('ray')}", []),
    "bigquery": ({"project": "acme-analytics"}, f"google-cloud-bigquery=={version('google-cloud-bigquery')}", []),
}
BASE = {f"pyarrow=={version('pyarrow')}", f"fsspec=={version('fsspec')}"}


def _image(stack_model):
    from zenml.config import DockerSettings
    from zenml.stack import Stack
    from zenml.utils.pipeline_docker_image_builder import PipelineDockerImageBuilder

    stack = Stack.from_model(stack_model)
    settings = DockerSettings()
    files = PipelineDockerImageBuilder.gather_requirements_files(settings, stack, log=False)
    dockerfile = PipelineDockerImageBuilder._generate_zenml_pipeline_dockerfile(
        parent_image="zenmldocker/zenml:0.98.0-py3.11",
        docker_settings=settings,
        requirements_files=files,
        apt_packages=stack.apt_packages,
    )
    requirements = {line for _, content, _ in files for line in content.splitlines()}
    return requirements, dockerfile


@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_the_image_installs_what_each_engine_needs(zen, engine, caplog):
    from zenml_compute_engines.flavors.requirements import own_requirement

    own_requirement.cache_clear()  # it says once per process where the package comes from
    config, library, apt = ENGINES[engine]
    with caplog.at_level("INFO", logger="zenml_compute_engines"):
        requirements, dockerfile = _image(zenml_env.register_engine_stack(engine, config))
    assert library in requirements
    assert BASE <= requirements
    assert not any(line.startswith(("zenml-compute-engines", "zenml=")) for line in requirements)
    assert 'local_project_install_command="pip install --no-deps ."' in caplog.text
    for package in apt:
        assert "apt-get install" in dockerfile and package in dockerfile
    if not apt:
        assert "openjdk" not in dockerfile


def test_a_bundle_image_installs_every_members_needs(zen):
    from zenml.enums import StackComponentType

    names = []
    for engine in ("spark", "bigquery"):
        name = f"{engine}-{uuid.uuid4().hex[:6]}"
        zen.create_stack_component(name=name, flavor=engine, component_type=StackComponentType.FEATURE_STORE,
                                   configuration=ENGINES[engine][0])
        names.append(name)
    requirements, dockerfile = _image(zenml_env.register_engine_stack("engines", {"engines": names}))
    assert {ENGINES["spark"][1], ENGINES["bigquery"][1]} <= requirements
    assert "openjdk-17-jre-headless" in dockerfile


def test_requirements_fall_back_to_our_range_when_the_local_version_is_absent_or_outside(monkeypatch):
    import importlib.metadata

    from packaging.requirements import Requirement

    from zenml_compute_engines.flavors.requirements import _pinned_to_local

    def fake_version(name):
        if name == "pyspark":
            return "4.2.0"  # below our range: the image must not get it
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", fake_version)
    assert str(_pinned_to_local(Requirement("pyspark[connect]>=4.3,<5"))) == "pyspark[connect]<5,>=4.3"
    assert str(_pinned_to_local(Requirement("ray[data]>=2.40"))) == "ray[data]>=2.40"
