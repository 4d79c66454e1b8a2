"""Running and watching executions in tests.

- ``drive(execution)``: run its queued steps here, with the real engine and runners, until none
  is left (tests without a worker: the test transaction never commits, nothing reaches a broker);
- ``wait_for``, ``wait_for_status``, ``wait_for_stage``: poll the database while a real worker
  runs them, and fail with what was there instead;
- ``log_of``, ``step_of``, ``worker_pid``: what a run left behind.
"""

from __future__ import annotations

import socket
import time

from django.utils import timezone

from executions import engine
from executions.models import Execution, LogChunk, StageRun, Status, StepRun


def drive(execution: Execution) -> Execution:
    """Run every queued step of ``execution`` here with the real engine, until none is left
    (the execution has ended, waits for an approval, or waits for a retry's interval). Returns
    the fresh row."""
    for _ in range(500):
        # An approval step QUEUED for its next ask (a failure strategy's retry interval) is
        # never sent to a worker: the reaper asks for it again when it is due. Nor is a step
        # whose next attempt waits for its interval (its ``queued_at`` is the due time): the
        # reaper starts it then, as it would on a real worker.
        step = (
            StepRun.objects.filter(execution=execution, status=Status.QUEUED)
            .exclude(queued_at__gt=timezone.now())
            .exclude(type="Approval")
            .order_by("id")
            .first()
        )
        if step is None:
            break
        engine.run_step(step.pk)
    return Execution.objects.get(pk=execution.pk)


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.05, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")


def wait_for_status(execution, statuses, timeout: float = 60.0):
    """Poll until the execution's status is one of ``statuses``; return the fresh row."""
    if isinstance(statuses, str):
        statuses = {statuses}

    def check():
        fresh = Execution.objects.get(pk=execution.pk)
        return fresh if fresh.status in statuses else None

    try:
        return wait_for(check, timeout, message=f"execution {execution.pk} to reach {statuses}")
    except AssertionError:
        fresh = Execution.objects.get(pk=execution.pk)
        runs = [(r.identifier, r.status, r.error) for r in fresh.stage_runs.all()]
        raise AssertionError(f"execution {execution.pk} is {fresh.status}, stages {runs}") from None


def wait_for_stage(execution, stage: str, statuses, timeout: float = 60.0):
    """Poll until ``stage`` of the execution has one of ``statuses``; return its stage run."""
    if isinstance(statuses, str):
        statuses = {statuses}
    return wait_for(
        lambda: StageRun.objects.filter(
            execution=execution, identifier=stage, status__in=statuses
        ).first(),
        timeout,
        message=f"stage {stage} to reach {statuses}",
    )


def log_of(execution: Execution, stage: str) -> str:
    chunks = LogChunk.objects.filter(
        step_run__execution=execution, step_run__stage_run__identifier=stage
    )
    return "".join(chunk.text for chunk in chunks.order_by("step_run__position", "seq"))


def step_of(execution: Execution, stage: str) -> StepRun:
    return StepRun.objects.get(execution=execution, stage_run__identifier=stage)


def worker_pid(step: StepRun) -> int:
    """The pid of the process that ran ``step`` (``StepRun.worker`` is ``hostname:pid``)."""
    host, _, pid = step.worker.rpartition(":")
    assert host == socket.gethostname(), f"step {step.identifier} ran on {step.worker!r}"
    return int(pid)
