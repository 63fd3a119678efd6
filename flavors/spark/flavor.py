"""Spark engine flavor: config, settings and flavor (import-light: no pyspark here)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Dict, Optional, Type, Union

from pydantic import Field, field_validator, model_validator

from zenml_compute_engines.flavors.engine import BaseEngineConfig, BaseEngineFlavor, BaseEngineSettings, Prestart
from zenml_compute_engines.flavors.sources import recorded_as_installed

if TYPE_CHECKING:
    from zenml_compute_engines.flavors.spark.engine import SparkEngine

_HOST_PORT = r"[A-Za-z0-9.\-]+:\d{1,5}"
_MASTER_PATTERNS = {
    "local[*] / local[N]": re.compile(r"local(\[(\*|[1-9]\d*)(,\s*[1-9]\d*)?\])?"),
    "spark://host:port": re.compile(rf"spark://{_HOST_PORT}(,{_HOST_PORT})*"),
    "yarn": re.compile(r"yarn"),
    "k8s://https://host:port": re.compile(r"k8s://(https?://)?[A-Za-z0-9.\-]+(:\d{1,5})?"),
    "sc://host:port": re.compile(r"sc://[A-Za-z0-9.\-]+(:\d{1,5})?(/;.*)?"),
}
_UI_URL = re.compile(r"https?://[A-Za-z0-9.\-]+(:\d{1,5})?/?")


class SparkEngineSettings(BaseEngineSettings):
    """Per-step Spark options.

    Attributes:
        conf: Spark options for the step. Runtime SQL options (e.g.
            `spark.sql.shuffle.partitions`) apply to this step only, through
            `spark.newSession()`. Static options (e.g. `spark.executor.memory`)
            restart an owned engine and are refused for an attached one.
    """

    conf: Dict[str, Union[str, int, float, bool]] = Field(default_factory=dict)

    @field_validator("conf")
    @classmethod
    def _check_conf(cls, value: Dict[str, Any]) -> Dict[str, Any]:
        # Spark ignores (with a warning in the JVM log) any key outside spark.*.
        ignored = sorted(key for key in value if not key.startswith("spark."))
        if ignored:
            raise ValueError(f"conf keys must be Spark options (spark.*); Spark would ignore {ignored}")
        return value


class SparkEngineConfig(BaseEngineConfig, SparkEngineSettings):
    """Spark engine component config.

    Attributes:
        master: `local[*]` or `local[N]` for an embedded engine this component owns;
            `spark://host:port`, `yarn`, `k8s://...` or `sc://host:port` (Spark Connect)
            to attach to a cluster it never stops.
        app_name: The Spark application name.
        ui_enabled: Start the Spark UI (its URL is logged and recorded as metadata).
        master_ui_url: The web UI of a `spark://` master (default: port 8080 of the
            master's host). Read before our driver starts, to refuse a cluster whose
            Spark version (major.minor) differs from this environment's pyspark with an
            error naming both, instead of the driver's retries and Java stack traces.
        jvm_class_cache: Keep an archive of the driver JVM's classes (class-data
            sharing, Java 13+) under `$ZENML_ENGINES_CACHE_DIR` or
            `~/.cache/zenml-compute-engines`, one per Spark and Java installation (about
            150 MB), so drivers start in about a third less time. The first start records
            it, which makes that start and its stop slower once; recording ahead of time:
            `python -m zenml_compute_engines.flavors.spark.class_cache`.
        prestart: `auto` by default: a driver's start (seconds) overlaps ZenML's
            preparation of a run that will use it (see `BaseEngineConfig`).
        keep_step_record: Off by default (`BaseEngineConfig`): keeping a step's event
            log took 280 ms at the end of each step (bench/usage_cost.py: 50 ms to cut it,
            170 ms for ZenML to save the artifact), above the max(3%, 50 ms) a default may
            add. On, our driver starts with its event log on (docs/usage.md#spark).
    """

    master: str = "local[*]"
    app_name: str = "zenml"
    ui_enabled: bool = True
    master_ui_url: Optional[str] = None
    jvm_class_cache: bool = True
    prestart: Prestart = "auto"

    @field_validator("master")
    @classmethod
    def _check_master(cls, value: str) -> str:
        value = value.strip()
        if any(pattern.fullmatch(value) for pattern in _MASTER_PATTERNS.values()):
            return value
        raise ValueError(
            f"master={value!r} is not a Spark master URL; use one of: "
            + ", ".join(_MASTER_PATTERNS)
        )

    @field_validator("master_ui_url")
    @classmethod
    def _check_master_ui_url(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and not _UI_URL.fullmatch(value.strip()):
            raise ValueError(f"master_ui_url={value!r} must be an http(s)://host[:port] URL")
        return value.strip() if value is not None else None

    @model_validator(mode="after")
    def _ui_url_needs_a_standalone_master(self) -> "SparkEngineConfig":
        if self.master_ui_url is not None and not self.master.startswith("spark://"):
            raise ValueError(
                f"master_ui_url applies to spark:// (standalone) masters only, not master={self.master!r}"
            )
        return self

    @field_validator("app_name")
    @classmethod
    def _check_app_name(cls, value: str) -> str:
        if not value.strip() or not value.isprintable():
            raise ValueError(f"app_name={value!r} must be a non-empty, printable name")
        return value

    @property
    def address(self) -> Optional[str]:
        return None if self.master.startswith("local") else self.master

    @property
    def is_connect(self) -> bool:
        return self.master.startswith("sc://")


@recorded_as_installed
class SparkEngineFlavor(BaseEngineFlavor):
    """Spark as a ZenML stack component (`--flavor=spark`)."""

    @property
    def name(self) -> str:
        return "spark"

    @property
    def config_class(self) -> Type[SparkEngineConfig]:
        return SparkEngineConfig

    @property
    def implementation_class(self) -> Type["SparkEngine"]:
        from zenml_compute_engines.flavors.spark.engine import SparkEngine

        return SparkEngine
