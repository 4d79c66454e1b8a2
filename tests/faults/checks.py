"""Assertions shared by the fault tests: "no step ran twice", "nothing is left active"."""

from __future__ import annotations

from executions.models import Event, Execution, StageRun, StepRun
from executions.states import ACTIVE, TERMINAL, Status


def assert_each_step_ran_at_most_once(execution: Execution) -> None:
    """Every step of ``execution`` was claimed (→ RUNNING) at most once and ended at most once,
    and every stage's result was written at most once."""
    problems = []
    for step in StepRun.objects.filter(execution=execution):
        events = Event.objects.filter(step_run=step).exclude(to_status="")
        started = events.filter(to_status=Status.RUNNING).count()
        ended = events.filter(to_status__in=list(TERMINAL)).count()
        if started > 1 or ended > 1:
            problems.append(
                f"step {step.stage_run.identifier}.{step.identifier}: started {started}x, ended {ended}x"
            )
    for run in StageRun.objects.filter(execution=execution):
        ended = Event.objects.filter(stage_run=run, to_status__in=list(TERMINAL)).count()
        if ended > 1:
            problems.append(f"stage {run.identifier}: its result was written {ended}x")
    ended = Event.objects.filter(
        execution=execution, stage_run=None, step_run=None, to_status__in=list(TERMINAL)
    ).count()
    if ended > 1:
        problems.append(f"execution #{execution.sequence} ended {ended}x")
    assert not problems, "; ".join(problems)


def assert_nothing_active() -> None:
    """No execution, stage or step is left QUEUED, RUNNING or WAITING."""
    left = {
        "executions": list(Execution.objects.filter(status__in=ACTIVE).values_list("pk", "status")),
        "stages": list(
            StageRun.objects.filter(status__in=ACTIVE).values_list("pk", "identifier", "status")
        ),
        "steps": list(
            StepRun.objects.filter(status__in=ACTIVE).values_list("pk", "identifier", "status")
        ),
    }
    assert not any(left.values()), f"left active: {left}"
