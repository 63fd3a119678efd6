"""Engine bundle flavor: several engine components in the stack's one feature_store slot
(import-light: no engine library here)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, List, Set, Type

from pydantic import Field, field_validator, model_validator
from zenml.feature_stores.base_feature_store import BaseFeatureStoreConfig

from zenml_compute_engines.flavors.bigquery.flavor import BigQueryEngineSettings
from zenml_compute_engines.flavors.dask.flavor import DaskEngineSettings
from zenml_compute_engines.flavors.engine import BaseEngineFlavor, reject_unknown_options
from zenml_compute_engines.flavors.ray.flavor import RayEngineSettings
from zenml_compute_engines.flavors.spark.flavor import SparkEngineSettings
from zenml_compute_engines.flavors.sources import recorded_as_installed

if TYPE_CHECKING:
    from zenml_compute_engines.flavors.bundle.engine import EngineBundle


class EngineBundleSettings(
    SparkEngineSettings, DaskEngineSettings, RayEngineSettings, BigQueryEngineSettings
):
    """Per-step settings of a bundle's members, given as any member's settings class.

    `@step(settings={"feature_store": SparkEngineSettings(conf={...})})` reaches the
    bundle's Spark member: ZenML converts the step's settings to this class (which holds
    every engine's fields; their names do not overlap), and each member takes the fields
    its own class defines (Spark `conf`; Dask `resources`, `annotations`; Ray
    `runtime_env`, `remote_args`; BigQuery `maximum_bytes_billed`, `dry_run_limit_bytes`,
    `labels`). So step code stays the same on a one-engine stack and on a bundle.
    """

    @classmethod
    def _known_options(cls) -> Set[str]:
        # The bundle's config is not built on this class (it has no engine fields).
        return set(cls.model_fields) | set(EngineBundleConfig.model_fields)


class EngineBundleConfig(BaseFeatureStoreConfig):
    """Engine bundle config.

    Attributes:
        engines: Names (or ids) of registered engine components (`feature_store`s of the
            spark, dask, ray or bigquery flavors), at most one per engine kind. Each keeps
            its own options and lifecycle; the bundle only delegates to them.
    """

    engines: List[str] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _reject_unknown_options(cls, values: Any) -> Any:
        return reject_unknown_options(cls.__name__, set(cls.model_fields), values)

    @field_validator("engines")
    @classmethod
    def _names(cls, value: List[str]) -> List[str]:
        names = [name.strip() for name in value]
        if any(not name for name in names):
            raise ValueError("engines holds an empty component name")
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"engines names {', '.join(duplicates)} more than once")
        return names

    @property
    def is_local(self) -> bool:
        return False  # the members say for themselves where they run


@recorded_as_installed
class EngineBundleFlavor(BaseEngineFlavor):
    """Several engine components as one stack component (`--flavor=engines`)."""

    @property
    def name(self) -> str:
        return "engines"

    @property
    def config_class(self) -> Type[EngineBundleConfig]:
        return EngineBundleConfig

    @property
    def implementation_class(self) -> Type["EngineBundle"]:
        from zenml_compute_engines.flavors.bundle.engine import EngineBundle

        return EngineBundle
