"""Step runners: one module per step type. ``run`` picks the runner for a step."""

from __future__ import annotations

from executions.runners import shell, wait
from executions.runners.base import StepResult
from executions.states import Status

RUNNERS = {"ShellScript": shell.run, "Wait": wait.run}


def run(step, step_spec, stage, execution) -> StepResult:
    runner = RUNNERS.get(step_spec.type)
    if runner is None:
        return StepResult(
            status=Status.FAILED, error=f"step type {step_spec.type} does not run on a worker"
        )
    return runner(step, step_spec, stage, execution)
