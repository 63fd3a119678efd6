"""Ray engine flavor: config, settings, flavor and the runtime handle (import-light: no ray here)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Callable, Dict, Mapping, Optional, Tuple, Type

from pydantic import Field, field_validator

from zenml_compute_engines.flavors.engine import BaseEngineConfig, BaseEngineFlavor, BaseEngineSettings
from zenml_compute_engines.flavors.sizes import parse_bytes
from zenml_compute_engines.flavors.sources import recorded_as_installed

if TYPE_CHECKING:
    from zenml_compute_engines.flavors.ray.engine import RayEngine

# Ray refuses object stores below 75 MiB (ray_constants.OBJECT_STORE_MINIMUM_MEMORY_BYTES).
OBJECT_STORE_MINIMUM_BYTES = 75 * 1024 * 1024

_HOST = r"(?P<host>[A-Za-z0-9](?:[A-Za-z0-9.\-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])"
_ADDRESS = re.compile(rf"(?P<scheme>ray://)?{_HOST}:(?P<port>\d{{1,5}})")

# Options Ray accepts in `ray.remote(...)` / `.options(...)` for tasks and actors.
REMOTE_ARG_KEYS = frozenset(
    {
        "num_cpus", "num_gpus", "memory", "resources", "accelerator_type", "label_selector",
        "max_retries", "retry_exceptions", "max_restarts", "max_task_retries", "max_calls",
        "scheduling_strategy", "name", "lifetime", "max_concurrency",
    }
)


def parse_address(address: str) -> Tuple[bool, str, int]:
    """Split a validated Ray address into (is_ray_client, host, port)."""
    match = _ADDRESS.fullmatch(address)
    if match is None:
        raise ValueError(address)
    return bool(match.group("scheme")), match.group("host").strip("[]"), int(match.group("port"))


def _canonical(value: Optional[Mapping[str, Any]]) -> str:
    # dict(): a running engine's runtime_env is a read-only mapping, which json cannot encode.
    return json.dumps(dict(value or {}), sort_keys=True, default=str)


class RayEngineSettings(BaseEngineSettings):
    """Per-step Ray options (`@step(settings={"feature_store": RayEngineSettings(...)})`).

    What Ray lets us change per step, and how:

    Attributes:
        runtime_env: The *job-level* runtime environment (`env_vars`, `pip`,
            `working_dir`, `py_modules`, ...). Ray fixes it when the driver connects
            (`ray.init(runtime_env=...)`), so a step whose runtime_env differs from the
            one Ray runs with restarts an owned engine (so that step pays one more
            `ray.init`) and fails with a clear error for an attached cluster or a Ray
            the user initialized. For a single task or actor, prefer
            `fn.options(runtime_env=...)` in step code: it needs no restart.
        remote_args: Default task/actor options for this step (`num_cpus`, `num_gpus`,
            `memory`, `resources`, `max_retries`, `scheduling_strategy`, ...). Ray has
            no process-wide default for these, so they are *not* applied to your
            `@ray.remote` functions automatically: apply them with
            `ray_runtime().remote(fn)` / `ray_runtime().options(remote_fn)`, or pass
            `ray_runtime().remote_args` to Ray Data's `ray_remote_args=`. Node
            resources of an owned engine (`num_cpus`, ...) are component options.
    """

    runtime_env: Optional[Dict[str, Any]] = None
    remote_args: Dict[str, Any] = Field(default_factory=dict)

    @field_validator("remote_args")
    @classmethod
    def _check_remote_args(cls, value: Dict[str, Any]) -> Dict[str, Any]:
        unknown = sorted(set(value) - REMOTE_ARG_KEYS)
        if unknown:
            raise ValueError(
                f"remote_args has unknown Ray task option(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(REMOTE_ARG_KEYS))}"
            )
        negative = {
            key: value[key] for key in ("num_cpus", "num_gpus", "memory")
            if key in value and not (isinstance(value[key], (int, float)) and value[key] >= 0)
        }
        if negative:
            raise ValueError(f"remote_args amounts must be numbers >= 0, got {negative}")
        return value


class RayEngineConfig(BaseEngineConfig, RayEngineSettings):
    """Ray engine component config.

    Without `address` the component *owns* a local Ray (`ray.init` on this machine, every
    socket bound to 127.0.0.1), started on a step's first `ray_runtime()` call, reused by
    the run's later steps and shut down (`ray.shutdown()`: raylet, GCS and workers exit)
    after the run. With `address` it *attaches* to a running cluster and only disconnects
    its driver afterwards. A Ray the user already initialized in the process is used as is
    and never shut down.

    Attributes:
        address: `host:port`, the GCS address of a cluster's head node (what
            `ray start --head --port` prints), or `ray://host:port` for Ray Client.
            With Ray Client, tasks and objects work but Ray Data cannot execute on the
            driver (Ray limitation); the dataset materializer then runs its reads and
            writes inside a cluster task. Clusters with token authentication (Ray's
            default for `ray start`) need `RAY_AUTH_MODE=token` and the token
            (`~/.ray/auth_token` or `RAY_AUTH_TOKEN`) in the environment *before* Python
            imports ray.
        num_cpus: CPUs of an owned engine (default: Ray detects all cores).
        num_gpus: GPUs of an owned engine.
        resources: Custom node resources of an owned engine.
        object_store_memory: Object store size of an owned engine, in bytes or as
            "200MB"/"1GiB" (Ray's minimum is 75 MiB; default: Ray's, ~30% of RAM).
        include_dashboard: Start the Ray dashboard with an owned engine (needs
            `ray[default]`; adds about a second to start-up). Its URL is logged and
            recorded in step metadata; an attached cluster's dashboard URL is recorded
            whenever the cluster reports one.
        dashboard_port: Port of an owned engine's dashboard (default: Ray's, 8265 or
            the next free one).
        namespace: Ray namespace of the driver (default: a fresh anonymous one).
        log_to_driver: Forward task and actor output to the step's logs.

    `record_usage` stays on (it added ~35 ms per step to a run, owned or attached: a step
    that a later step consumes leaves its wait for its last task events to that step's
    end) and `keep_step_record` off: keeping a step's timeline as an artifact added
    0.1-0.2 s per step (docs/usage.md#ray).
    """

    address: Optional[str] = None
    num_cpus: Optional[int] = Field(default=None, gt=0)
    num_gpus: Optional[int] = Field(default=None, ge=0)
    resources: Dict[str, float] = Field(default_factory=dict)
    object_store_memory: Optional[int] = None
    include_dashboard: bool = False
    dashboard_port: Optional[int] = Field(default=None, gt=0, lt=65536)
    namespace: Optional[str] = None
    log_to_driver: bool = True

    @field_validator("resources")
    @classmethod
    def _check_resources(cls, value: Dict[str, float]) -> Dict[str, float]:
        reserved = sorted(set(value) & {"CPU", "GPU", "memory", "object_store_memory"})
        if reserved:
            raise ValueError(f"resources may not set Ray's built-in {reserved}; use num_cpus/num_gpus/object_store_memory")
        bad = {name: amount for name, amount in value.items() if not amount >= 0}
        if bad:
            raise ValueError(f"resources must be amounts >= 0, got {bad}")
        return value

    @field_validator("namespace")
    @classmethod
    def _check_namespace(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and (not value.strip() or not value.isprintable()):
            raise ValueError(f"namespace={value!r} must be a non-empty, printable name")
        return value

    @field_validator("address", mode="before")
    @classmethod
    def _check_address(cls, value: Any) -> Any:
        if value is None:
            return None
        text = str(value).strip()
        if text == "":
            return None
        try:
            _, _, port = parse_address(text)
        except ValueError:
            port = 0
        if not 0 < port < 65536:
            raise ValueError(
                f"address={value!r} is not a Ray address; use 'host:port' (the head node's "
                "GCS address, e.g. 10.0.0.5:6379) or 'ray://host:port' (Ray Client, e.g. "
                "ray://10.0.0.5:10001), or leave address unset for an owned local Ray"
            )
        return text

    @field_validator("object_store_memory", mode="before")
    @classmethod
    def _check_object_store_memory(cls, value: Any) -> Any:
        value = parse_bytes(value)
        if value is None:
            return None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if value <= 0:
                raise ValueError(f"object_store_memory={value!r} must be a positive number of bytes")
            if value < OBJECT_STORE_MINIMUM_BYTES:
                raise ValueError(
                    f"object_store_memory={value!r} is below Ray's minimum of "
                    f"{OBJECT_STORE_MINIMUM_BYTES} bytes (75 MiB)"
                )
        return value

    @property
    def is_client(self) -> bool:
        """Whether `address` is a Ray Client (`ray://`) address."""
        return bool(self.address and self.address.startswith("ray://"))


@dataclass(frozen=True)
class RayRuntime:
    """What `zenml_compute_engines.ray_runtime()` returns: the step's connected Ray, ready for
    `ray.remote`, `ray.get` and `ray.data`.

    Attributes:
        address: The cluster's GCS address (or the `ray://` address for Ray Client).
        dashboard_url: The Ray dashboard, if the cluster runs one.
        job_id: The Ray job id of this driver (one per `ray.init`).
        namespace: The Ray namespace of this driver.
        mode: "owned", "attached" or "adopted" (a Ray the user initialized).
        remote_args: The step's default task options (`RayEngineSettings.remote_args`).
        runtime_env: The job-level runtime env Ray was initialized with.
    """

    address: str
    dashboard_url: Optional[str]
    job_id: str
    namespace: str
    mode: str = "owned"
    session_name: Optional[str] = field(default=None, repr=False)
    remote_args: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}), compare=False)
    runtime_env: Optional[Mapping[str, Any]] = field(default=None, repr=False, compare=False)

    def __repr__(self) -> str:
        dashboard = self.dashboard_url or "no dashboard"
        extra = f", remote_args={dict(self.remote_args)}" if self.remote_args else ""
        return (
            f"RayRuntime({self.mode} Ray at {self.address}, job {self.job_id}, "
            f"namespace {self.namespace!r}, {dashboard}{extra})"
        )

    def remote(self, function_or_class: Callable[..., Any]) -> Any:
        """`ray.remote(**remote_args)(function_or_class)` with this step's task options."""
        import ray

        return ray.remote(**dict(self.remote_args))(function_or_class) if self.remote_args else ray.remote(
            function_or_class
        )

    def options(self, remote_function: Any) -> Any:
        """`remote_function.options(**remote_args)` with this step's task options."""
        return remote_function.options(**dict(self.remote_args)) if self.remote_args else remote_function


@recorded_as_installed
class RayEngineFlavor(BaseEngineFlavor):
    """Ray as a ZenML stack component (`--flavor=ray`)."""

    @property
    def name(self) -> str:
        return "ray"

    @property
    def config_class(self) -> Type[RayEngineConfig]:
        return RayEngineConfig

    @property
    def implementation_class(self) -> Type["RayEngine"]:
        from zenml_compute_engines.flavors.ray.engine import RayEngine

        return RayEngine
