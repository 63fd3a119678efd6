"""From the user's seat: this package's wheel, installed (not editable) into a fresh venv,
used from a ZenML project of the user's own laid out as ZenML's docs show, with its own
`flavors/` package (a custom artifact-store flavor) and `materializers/` package (a custom
materializer), through the README's commands; then the image ZenML would build for it.

Nothing of the test session's set-up reaches the user's commands: they run with a ZenML
config and a class-archive cache of their own, both empty at first.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
import zipfile
from pathlib import Path
from typing import Dict, List

import pytest

from tests.support import zenml_env

ROOT = Path(zenml_env.ROOT_DIR)
MARK = "ZENML_ENGINES_USER_REPO_MARK"

TEAM_STORE = '''"""The team's own artifact-store flavor: a local store that logs what it writes."""
from typing import Type

from zenml.artifact_stores import LocalArtifactStore, LocalArtifactStoreFlavor


class TeamArtifactStore(LocalArtifactStore):
    def open(self, path, mode="r"):
        if "w" in mode:
            with open(self.config.path + "/writes.log", "a") as log:
                log.write(str(path) + "\\n")
        return super().open(path, mode)


class TeamArtifactStoreFlavor(LocalArtifactStoreFlavor):
    @property
    def name(self) -> str:
        return "team_local"

    @property
    def implementation_class(self) -> Type[TeamArtifactStore]:
        return TeamArtifactStore
'''

TEAM_RECORD = '''"""The team's own artifact type and its materializer."""
import json
import os
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Tuple, Type

from zenml.enums import ArtifactType
from zenml.materializers.base_materializer import BaseMaterializer


@dataclass
class TeamRecord:
    engine: str
    rows: int


class TeamRecordMaterializer(BaseMaterializer):
    ASSOCIATED_TYPES: ClassVar[Tuple[Type[Any], ...]] = (TeamRecord,)
    ASSOCIATED_ARTIFACT_TYPE: ClassVar[ArtifactType] = ArtifactType.DATA

    def load(self, data_type: Type[Any]) -> TeamRecord:
        with self.artifact_store.open(os.path.join(self.uri, "record.json"), "r") as f:
            return TeamRecord(**json.load(f))

    def save(self, data: TeamRecord) -> None:
        with self.artifact_store.open(os.path.join(self.uri, "record.json"), "w") as f:
            json.dump(asdict(data), f)
'''

RUN = '''"""The team's pipelines: one on Spark, one on Dask, each ending in their own artifact type."""
import sys

import dask.dataframe as dd
import pandas as pd
from pyspark.sql import DataFrame
from zenml import pipeline, step

from materializers.team_record import TeamRecord
from zenml_compute_engines import dask_client, spark_session


@step
def spark_numbers(n: int) -> DataFrame:
    return spark_session().range(n)


@step
def spark_record(frame: DataFrame) -> TeamRecord:
    return TeamRecord(engine="spark", rows=frame.count())


@pipeline(enable_cache=False)
def spark_pipeline(n: int = 1000) -> None:
    spark_record(spark_numbers(n))


@step
def dask_numbers(n: int) -> dd.DataFrame:
    dask_client()
    return dd.from_pandas(pd.DataFrame({"x": range(n)}), npartitions=2)


@step
def dask_record(frame: dd.DataFrame) -> TeamRecord:
    return TeamRecord(engine="dask", rows=int(dask_client().compute(frame.shape[0]).result()))


@pipeline(enable_cache=False)
def dask_pipeline(n: int = 1000) -> None:
    dask_record(dask_numbers(n))


if __name__ == "__main__":
    engine = sys.argv[1]
    run = {"spark": spark_pipeline, "dask": dask_pipeline}[engine]()
    first = run.steps[f"{engine}_numbers"]
    record = run.steps[f"{engine}_record"].outputs["output"][0]
    print("RECORD", record.load(), record.materializer.import_path)
    print("FRAME_MATERIALIZER", first.outputs["output"][0].materializer.import_path)
    print("CLASS_ARCHIVE", first.run_metadata["compute_engine"].get("jvm_class_cache"))
    print("OURS_TWICE", sorted(m for m in sys.modules if m.split(".")[0] in ("flavors", "materializers")
                               and "team" not in m and m not in ("flavors", "materializers")))
'''

IMAGE = '''import sys
from zenml.client import Client
from zenml.config import DockerSettings
from zenml.utils.pipeline_docker_image_builder import PipelineDockerImageBuilder

files = PipelineDockerImageBuilder.gather_requirements_files(DockerSettings(), Client().active_stack, log=False)
for _, content, _ in files:
    for line in content.splitlines():
        print("REQUIREMENT", line)
'''


def _wheel(into: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(into), str(ROOT)],
        check=True, capture_output=True, timeout=300,
    )
    (wheel,) = into.glob("zenml_compute_engines-*.whl")
    return wheel


def _venv(path: Path, *requirements: str) -> Path:
    """A fresh venv with `requirements` installed by pip (from its cache, mostly)."""
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, timeout=120)
    done = subprocess.run(
        [str(path / "bin" / "pip"), "install", "-q", *requirements], capture_output=True, text=True, timeout=1200
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return path / "bin"


def _user_env(bin_dir: Path, home: Path, marker: str) -> Dict[str, str]:
    """The user's shell: their venv first on PATH, a ZenML config and a class-archive cache
    of their own, none of the test session's ZenML settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ZENML_", "PYTHON"))}
    return {
        **env, "PATH": f"{bin_dir}:{env['PATH']}", "VIRTUAL_ENV": str(bin_dir.parent),
        "ZENML_CONFIG_PATH": str(home / "zenml-config"), "ZENML_ENGINES_CACHE_DIR": str(home / "cache"),
        "ZENML_ANALYTICS_OPT_IN": "false", "ZENML_ENABLE_RICH_TRACEBACK": "false", "AUTO_OPEN_DASHBOARD": "false",
        MARK: marker,
    }


def _sh(command: str, cwd: Path, env: Dict[str, str], ok: bool = True, timeout: float = 600) -> str:
    done = subprocess.run(command, shell=True, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    output = done.stdout + done.stderr
    assert (done.returncode == 0) == ok, f"$ {command}\n{output[-4000:]}"
    return output


def _lines(output: str, tag: str) -> List[str]:
    return [line.split(" ", 1)[1] for line in output.splitlines() if line.startswith(f"{tag} ")]


@pytest.mark.slow  # two fresh venvs and a class-archive recording: about 5 minutes
def test_the_wheel_in_a_users_own_repo_with_its_own_flavors_and_materializers(tmp_path):
    wheel = _wheel(tmp_path / "dist")
    names = zipfile.ZipFile(wheel).namelist()
    assert {name.split("/")[0] for name in names if ".dist-info/" not in name} == {"zenml_compute_engines"}
    sources = {f"zenml_compute_engines/{path.relative_to(ROOT)}" for folder in ("flavors", "materializers")
               for path in (ROOT / folder).rglob("*.py")}
    assert sources <= set(names), sources - set(names)

    bin_dir = _venv(tmp_path / "venv", f"{wheel}[spark,dask]")
    repo, marker = tmp_path / "team-repo", uuid.uuid4().hex
    for relative, text in {"flavors/__init__.py": "", "flavors/team_store.py": TEAM_STORE,
                           "materializers/__init__.py": "", "materializers/team_record.py": TEAM_RECORD,
                           "run.py": RUN, "image.py": IMAGE}.items():
        (repo / relative).parent.mkdir(parents=True, exist_ok=True)
        (repo / relative).write_text(text)
    store = tmp_path / "team-store"
    store.mkdir()
    env = _user_env(bin_dir, tmp_path, marker)

    # The README's commands, in the user's repo.
    _sh("zenml init", repo, env)
    registered = _sh("zenml-compute-engines register", repo, env)
    for flavor in ("spark", "dask", "ray", "bigquery", "engines"):
        assert f"feature_store flavor {flavor}: registered (zenml_compute_engines.flavors." in registered, registered
    assert "Recording the Spark driver JVM's class archive" in registered and "Recorded the Spark class archive" in registered
    again = _sh("python -m zenml_compute_engines register", repo, env)
    assert again.count(": unchanged (") == 5 and "The Spark class archive exists" in again, again
    _sh("zenml artifact-store flavor register flavors.team_store.TeamArtifactStoreFlavor", repo, env)
    _sh(f"zenml artifact-store register team_store --flavor=team_local --path={store}", repo, env)
    typo = _sh("zenml feature-store register typo --flavor=spark --mastr=local[2]", repo, env, ok=False)
    assert "mastr" in typo
    _sh("zenml feature-store register spark_local --flavor=spark", repo, env)
    _sh("zenml feature-store register dask_local --flavor=dask --n_workers=1", repo, env)
    _sh("zenml stack register spark_stack -o default -a team_store -f spark_local --set", repo, env)
    _sh("zenml stack register dask_stack -o default -a team_store -f dask_local", repo, env)

    seconds = []
    for _ in range(2):  # the first run maps the archive `register` recorded, like every later one
        began = time.time()
        output = _sh("python run.py spark", repo, env)
        seconds.append(round(time.time() - began, 1))
        assert _lines(output, "RECORD") == [
            "TeamRecord(engine='spark', rows=1000) materializers.team_record.TeamRecordMaterializer"
        ], output[-3000:]
        assert _lines(output, "FRAME_MATERIALIZER") == [
            "zenml_compute_engines.materializers.spark_dataframe.SparkDataFrameMaterializer"
        ]
        assert _lines(output, "CLASS_ARCHIVE") == ["used"] and _lines(output, "OURS_TWICE") == ["[]"]
    print(f"RESULT user_repo_spark_run_s first={seconds[0]} second={seconds[1]}")

    _sh("zenml stack set dask_stack", repo, env)
    output = _sh("python run.py dask", repo, env)
    assert _lines(output, "RECORD") == [
        "TeamRecord(engine='dask', rows=1000) materializers.team_record.TeamRecordMaterializer"
    ], output[-3000:]
    assert (store / "writes.log").read_text().count("\n") >= 6  # the team's store wrote every artifact

    # The image ZenML builds for this repo asks for this package, pinned, with the extra.
    requirements = _lines(_sh("python image.py", repo, env), "REQUIREMENT")
    version = re.search(r"zenml_compute_engines-([^-]+)-", wheel.name).group(1)
    assert f"zenml-compute-engines[dask]=={version}" in requirements, requirements
    assert zenml_env.processes_marked(MARK, marker, settle_s=15) == []

    # A fresh venv with exactly those requirements (and the ZenML the image starts from),
    # our wheel served from a local directory, can load the component's implementation.
    zenml_version = _sh("python -c 'import zenml; print(zenml.__version__)'", repo, env).strip().splitlines()[-1]
    image_bin = _venv(tmp_path / "image-venv", "--find-links", str(wheel.parent), f"zenml=={zenml_version}", *requirements)
    loaded = subprocess.run(
        [str(image_bin / "python"), "-c",
         "from zenml.utils import source_utils\n"
         "flavor = source_utils.load('zenml_compute_engines.flavors.dask.flavor.DaskEngineFlavor')()\n"
         "print('IMPLEMENTATION', flavor.implementation_class.__module__)"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert "IMPLEMENTATION zenml_compute_engines.flavors.dask.engine" in loaded.stdout, loaded.stderr[-3000:]
