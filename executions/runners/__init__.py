"""Step runners: one module per step type. ``run`` picks the runner for a step."""

from __future__ import annotations

from executions.runners.base import StepResult


def run(step, step_spec, stage, execution) -> StepResult:
    from executions.runners import shell, wait

    runners = {"ShellScript": shell.run, "Wait": wait.run}
    runner = runners.get(step_spec.type)
    if runner is None:
        return StepResult(
            status="FAILED", error=f"step type {step_spec.type} does not run on a worker"
        )
    return runner(step, step_spec, stage, execution)
