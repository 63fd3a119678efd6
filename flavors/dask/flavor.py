"""Dask engine flavor: config, settings and flavor (import-light: no dask/distributed here)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Dict, Optional, Type, Union

from pydantic import Field, field_validator, model_validator

from zenml_compute_engines.flavors.engine import BaseEngineConfig, BaseEngineFlavor, BaseEngineSettings, Prestart
from zenml_compute_engines.flavors.sources import recorded_as_installed

if TYPE_CHECKING:
    from zenml_compute_engines.flavors.dask.engine import DaskEngine

_SCHEMES = ("tcp", "tls", "ws", "wss", "ucx")
_HOST = r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.\-]*[A-Za-z0-9])?)"
_ADDRESS = re.compile(rf"(?:(?P<scheme>[a-z]+)://)?{_HOST}:(?P<port>\d{{1,5}})")
# What dask.utils.parse_bytes accepts: a number with an optional decimal/binary unit.
_BYTES = re.compile(r"(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\s*([kmgtp]i?b?|b)?", re.IGNORECASE)
# Annotation keys with a dedicated field or a fixed type (dask.annotate checks the same).
_ANNOTATION_TYPES = {
    "priority": (int, float),
    "retries": (int,),
    "allow_other_workers": (bool,),
    "workers": (str, list),
}


def normalize_scheduler_address(value: str) -> str:
    """`tcp://host:port` for `host:port`; raises ValueError naming the field when malformed."""
    value = value.strip()
    match = _ADDRESS.fullmatch(value)
    scheme = (match.group("scheme") if match else None) or "tcp"
    port = int(match.group("port")) if match else 0
    if match is None or scheme not in _SCHEMES or not 0 < port < 65536:
        raise ValueError(
            f"scheduler_address={value!r} is not a Dask scheduler address; expected "
            f"'tcp://host:port' (scheme one of {', '.join(_SCHEMES)}; port 1-65535), e.g. "
            "'tcp://10.0.0.5:8786'. Leave scheduler_address unset for an embedded LocalCluster."
        )
    return f"{scheme}://{match.group('host')}:{port}"


class DaskEngineSettings(BaseEngineSettings):
    """Per-step Dask options.

    Both apply to every task the step submits through its client (`dask_client()`,
    `df.compute()`, `client.compute/submit/persist/map`, and the writing of the step's
    Dask outputs), from the step's first `dask_client()` call (or the loading of a Dask
    input) until its outputs are saved. They are installed with `dask.annotate(...)`,
    which `distributed.Client` merges into every graph it submits: the same semantics as
    `client.submit(..., resources=..., priority=..., retries=...)`, and arguments passed
    explicitly to those calls win. Dask's query planner warns that annotations "will be
    ignored"; that is true for annotations attached while *building* a collection, not for
    these submit-time ones, so the warning is silenced while they are active.

    Attributes:
        resources: Abstract worker resources each task of the step holds while it runs,
            e.g. `{"GPU": 1}` or `{"memory_slots": 2}`. Workers must advertise them
            (`worker_resources` for an owned LocalCluster, `dask worker --resources` for a
            cluster); a request no worker can satisfy fails the step instead of hanging.
        annotations: Other task annotations, e.g. `{"priority": 10, "retries": 2}`,
            `{"workers": ["tcp://10.0.0.7:4000"], "allow_other_workers": True}`.
    """

    resources: Dict[str, float] = Field(default_factory=dict)
    annotations: Dict[str, Any] = Field(default_factory=dict)

    @field_validator("resources")
    @classmethod
    def _check_resources(cls, value: Dict[str, float]) -> Dict[str, float]:
        bad = {name: amount for name, amount in value.items() if not amount > 0}
        if bad:
            raise ValueError(f"resources must be positive amounts, got {bad}")
        return value

    @field_validator("annotations")
    @classmethod
    def _check_annotations(cls, value: Dict[str, Any]) -> Dict[str, Any]:
        if "resources" in value:
            raise ValueError("put resources in the `resources` setting, not in `annotations`")
        for key, types in _ANNOTATION_TYPES.items():
            if key in value and (
                not isinstance(value[key], types) or (bool not in types and isinstance(value[key], bool))
            ):
                raise ValueError(
                    f"annotations[{key!r}] must be of type {' or '.join(t.__name__ for t in types)}, "
                    f"got {value[key]!r}"
                )
        return value


class DaskEngineConfig(BaseEngineConfig, DaskEngineSettings):
    """Dask engine component config.

    Without `scheduler_address` the component owns a `distributed.LocalCluster` bound to
    127.0.0.1 (scheduler, workers, nannies and the dashboard on loopback), one per
    pipeline run by default, stopped with all its worker processes when the run ends.
    With `scheduler_address` it attaches: one `Client` per process, closed when the run
    ends; the scheduler and its workers are never stopped.

    Attributes:
        scheduler_address: `tcp://host:port` (also `tls://`, `ws://`, `wss://`, `ucx://`;
            a bare `host:port` means `tcp://`) of a running Dask scheduler to attach to.
        n_workers: Worker count of the owned LocalCluster (Dask's default: by CPU count).
        threads_per_worker: Threads per owned worker (Dask's default: by CPU count).
        memory_limit: Memory limit per owned worker: `"auto"` (system memory / workers),
            bytes like `"1GiB"`, `"512MB"`, `2e9`, or a fraction of system memory like
            `0.25`; `None` for no limit. With `processes=False` Dask measures the whole
            pipeline process against it.
        processes: Owned workers as separate processes (True, Dask's default) or as
            threads of the pipeline process (False: cheapest start, shares the GIL).
        worker_resources: Abstract resources each owned worker advertises, e.g.
            `{"GPU": 1}`, so steps can request them in their `resources` setting.
        dashboard: Serve the owned cluster's dashboard on 127.0.0.1 at a free port (its
            URL goes into the step metadata). Needs `bokeh`; without it only the
            scheduler's small HTTP endpoint (health, metrics) listens, on loopback too.
        prestart: `auto` by default: the cluster's start overlaps ZenML's preparation
            of a run that will use it (see `BaseEngineConfig`).

    `record_usage` stays on (about 20 ms per step) and `keep_step_record` off: Dask's
    performance report of a step took 1.3 s and 1.7 MB per step (docs/usage.md#dask).
    """

    scheduler_address: Optional[str] = None
    n_workers: Optional[int] = Field(default=None, gt=0)
    threads_per_worker: Optional[int] = Field(default=None, gt=0)
    memory_limit: Optional[Union[str, int, float]] = "auto"
    processes: bool = True
    worker_resources: Dict[str, float] = Field(default_factory=dict)
    dashboard: bool = True
    prestart: Prestart = "auto"

    @field_validator("scheduler_address")
    @classmethod
    def _check_scheduler_address(cls, value: Optional[str]) -> Optional[str]:
        if value is None or not value.strip():
            return None
        return normalize_scheduler_address(value)

    @field_validator("n_workers", "threads_per_worker", mode="before")
    @classmethod
    def _check_int(cls, value: Any) -> Any:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError(f"must be a positive integer, got {value!r}")
        return value

    @field_validator("memory_limit", mode="before")
    @classmethod
    def _check_memory_limit(cls, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, bool):
            raise ValueError(f"memory_limit={value!r} is not a memory size")
        if isinstance(value, (int, float)):
            if value > 0:
                return value
        elif isinstance(value, str):
            text = value.strip()
            if text.lower() == "auto":
                return "auto"
            match = _BYTES.fullmatch(text)
            if match and float(match.group(1) + (match.group(3) or "")) > 0:
                return text
        raise ValueError(
            f"memory_limit={value!r} is not a memory size; use 'auto', bytes like '1GiB', "
            "'512MB' or 2e9, a fraction of system memory like 0.25, or null for no limit"
        )

    @field_validator("worker_resources")
    @classmethod
    def _check_worker_resources(cls, value: Dict[str, float]) -> Dict[str, float]:
        bad = {name: amount for name, amount in value.items() if not amount > 0}
        if bad:
            raise ValueError(f"worker_resources must be positive amounts, got {bad}")
        return value

    @model_validator(mode="after")
    def _owned_options_need_no_address(self) -> "DaskEngineConfig":
        if self.scheduler_address is None:
            return self
        owned_only = [
            name
            for name, default in (
                ("n_workers", None),
                ("threads_per_worker", None),
                ("memory_limit", "auto"),
                ("processes", True),
                ("worker_resources", {}),
            )
            if getattr(self, name) != default
        ]
        if owned_only:
            raise ValueError(
                f"{', '.join(owned_only)} size(s) an embedded LocalCluster, but scheduler_address="
                f"{self.scheduler_address!r} attaches to an existing cluster; size that cluster "
                "with `dask worker` options instead, or unset scheduler_address"
            )
        return self

    @property
    def address(self) -> Optional[str]:
        return self.scheduler_address


@recorded_as_installed
class DaskEngineFlavor(BaseEngineFlavor):
    """Dask as a ZenML stack component (`--flavor=dask`)."""

    @property
    def name(self) -> str:
        return "dask"

    @property
    def config_class(self) -> Type[DaskEngineConfig]:
        return DaskEngineConfig

    @property
    def implementation_class(self) -> Type["DaskEngine"]:
        from zenml_compute_engines.flavors.dask.engine import DaskEngine

        return DaskEngine
