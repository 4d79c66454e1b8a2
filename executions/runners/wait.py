"""The ``Wait`` step: sleeps for its duration while keeping its lease, stops on abort."""

from __future__ import annotations

import time

from executions.models import Status
from executions.runners.base import Lease, StepResult


def run(step, step_spec, stage, execution) -> StepResult:
    lease = Lease(step)
    deadline = time.monotonic() + min(step_spec.duration, step_spec.timeout)
    while time.monotonic() < deadline:
        if not lease.still_running():
            return StepResult(status=Status.ABORTED, error="aborted while waiting")
        time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
    if step_spec.duration > step_spec.timeout:
        return StepResult(status=Status.EXPIRED, error=f"timed out after {step_spec.timeout}s")
    return StepResult(status=Status.SUCCESS)
