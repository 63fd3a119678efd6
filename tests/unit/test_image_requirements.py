"""What ZenML puts in a remote orchestrator's image for a stack with our engines.

ZenML's own image builder writes the requirements files and the Dockerfile without a
Docker daemon (there is none here); these tests read what it would install.
"""

from __future__ import annotations

import uuid

import pytest

from tests.support import zenml_env

ENGINES = {
    "spark": ({"master": "local[2]"}, "pyspark[connect]==4.3.0", ["openjdk-17-jre-headless"]),
    "dask": ({}, "dask[dataframe,distributed]>=2025.1", []),
    "ray": ({}, "ray[data,default]>=2.40", []),
    "bigquery": ({"project": "acme-analytics"}, "google-cloud-bigquery>=3.20", []),
}


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
def test_the_image_installs_what_each_engine_needs(zen, engine):
    config, library, apt = ENGINES[engine]
    requirements, dockerfile = _image(zenml_env.register_engine_stack(engine, config))
    assert library in requirements
    assert {"pyarrow>=15", "fsspec>=2024.1"} <= requirements
    assert not any(line.startswith(("zenml-compute-engines", "zenml=")) for line in requirements)
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
    assert {"pyspark[connect]==4.3.0", "google-cloud-bigquery>=3.20"} <= requirements
    assert "openjdk-17-jre-headless" in dockerfile
