"""What a step cost on its engine, and the engine's own record of it, kept with the run.

Every engine reports a step's usage in the one shape of `StepUsage` (recorded under
`compute_engine.usage` in the step's metadata), taken from the engine's own accounting,
with a field left out where the engine does not report it. An engine may also keep its
own record of the step (Spark's event log, Dask's performance report, Ray's timeline) as
an artifact of the run: a `StepRecord`, saved by the core (flavors/engine.py) at the end
of the step, after its outputs are saved and also when it failed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, Optional


@dataclass
class StepUsage:
    """One step's work on its engine, counted by the engine (docs/usage.md names each source).

    Attributes:
        source: Where the figures come from (e.g. "spark status store").
        tasks: Tasks the step ran (all attempts, finished or failed); None where the
            engine has no tasks (BigQuery).
        jobs: Spark jobs, BigQuery jobs; None where the engine has no jobs.
        stages: Spark stages; None where the engine has no stages.
        failed_tasks: Tasks that failed (retried or not).
        busy_s: Core-seconds the engine spent running the step's tasks (BigQuery: slot-seconds).
        bytes_read: Bytes the tasks read from storage (BigQuery: bytes processed).
        bytes_shuffled: Bytes moved between workers (Spark: shuffle read; Dask: transfers).
        bytes_spilled: Bytes spilled from memory to disk.
        peak_memory_bytes: The largest memory a task (Spark) or worker (Dask) reported.
    """

    source: str
    tasks: Optional[int] = None
    jobs: Optional[int] = None
    stages: Optional[int] = None
    failed_tasks: Optional[int] = None
    busy_s: Optional[float] = None
    bytes_read: Optional[int] = None
    bytes_shuffled: Optional[int] = None
    bytes_spilled: Optional[int] = None
    peak_memory_bytes: Optional[int] = None

    def as_metadata(self) -> Dict[str, Any]:
        """The fields the engine reported, rounded for reading."""
        values = {key: value for key, value in asdict(self).items() if value is not None}
        if "busy_s" in values:
            values["busy_s"] = round(values["busy_s"], 3)
        return values


@dataclass
class StepRecord:
    """The engine's own record of one step, saved by the core as an artifact of the run.

    Attributes:
        name: The artifact's last name part (`<pipeline>::<step>::<name>`).
        data: What ZenML saves (a type with a materializer: `EngineRecordFile`, `HTMLString`).
        facts: How to open it, for the step's metadata; "{uri}" in a value is replaced
            by the artifact's folder, which is also added as `uri`.
    """

    name: str
    data: Any
    facts: Dict[str, Any] = field(default_factory=dict)


# What `_step_usage` returns for usage the engine reports after the step: a function that
# waits for it (within the core's bound) and returns it, or None.
UsageLater = Callable[[], Optional[StepUsage]]
