"""An orchestrator that runs every step as its own process through ZenML's real step
entrypoint (`python -m zenml.entrypoints.entrypoint ... StepEntrypointConfiguration`).

This is what a container orchestrator (Kubernetes, Vertex, SageMaker) does for each step,
minus the container: a fresh interpreter that loads the snapshot from the store, runs one
step and exits. Like theirs, its init and cleanup hooks run at step level, so an engine
lives for one step. Steps run one after another in the snapshot's order.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from typing import Any, Dict, Optional, Type

from zenml.entrypoints.step_entrypoint_configuration import StepEntrypointConfiguration
from zenml.orchestrators import BaseOrchestrator, BaseOrchestratorConfig, BaseOrchestratorFlavor

RUN_ID_ENV = "ZENML_PROCESS_ORCHESTRATOR_RUN_ID"


class ProcessPerStepOrchestrator(BaseOrchestrator):
    def get_orchestrator_run_id(self) -> str:
        return os.environ[RUN_ID_ENV]

    def submit_pipeline(
        self,
        snapshot: Any,
        stack: Any,
        base_environment: Dict[str, str],
        step_environments: Dict[str, Dict[str, str]],
        placeholder_run: Optional[Any] = None,
    ) -> None:
        command = StepEntrypointConfiguration.get_entrypoint_command()
        command = [sys.executable if part == "python" else part for part in command]
        run_id = str(uuid.uuid4())
        for step_name in snapshot.step_configurations:
            arguments = StepEntrypointConfiguration.get_entrypoint_arguments(
                step_name=step_name, snapshot_id=snapshot.id
            )
            environment = {**os.environ, **step_environments[step_name], RUN_ID_ENV: run_id}
            completed = subprocess.run(command + arguments, env=environment)
            if completed.returncode != 0:
                raise RuntimeError(
                    f"Pipeline run has failed: step '{step_name}' exited with code {completed.returncode}."
                )
        return None


class ProcessPerStepOrchestratorFlavor(BaseOrchestratorFlavor):
    @property
    def name(self) -> str:
        return "process_per_step"

    @property
    def config_class(self) -> Type[BaseOrchestratorConfig]:
        return BaseOrchestratorConfig

    @property
    def implementation_class(self) -> Type[ProcessPerStepOrchestrator]:
        return ProcessPerStepOrchestrator
