"""What every runner shares: the result type and the lease that proves the worker is alive."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from executions.models import Status, StepRun


@dataclass
class StepResult:
    status: str
    exit_code: int | None = None
    outputs: dict[str, str] = field(default_factory=dict)
    error: str = ""


class Lease:
    """Renews a running step's lease and tells the runner when the step was aborted.

    ``still_running()`` is cheap to call often: it reads the step's status at most once a
    second and renews the lease every ``STAGELINE_HEARTBEAT_SECONDS``.
    """

    CHECK_EVERY = 0.5

    def __init__(self, step: StepRun):
        self.step_id = step.pk
        self.last_check = 0.0
        self.last_renewal = time.monotonic()
        self.running = True

    def still_running(self) -> bool:
        now = time.monotonic()
        if not self.running or now - self.last_check < self.CHECK_EVERY:
            return self.running
        self.last_check = now
        if now - self.last_renewal >= settings.STAGELINE_HEARTBEAT_SECONDS:
            self.last_renewal = now
            expires = timezone.now() + timedelta(seconds=settings.STAGELINE_STEP_LEASE_SECONDS)
            renewed = StepRun.objects.filter(pk=self.step_id, status=Status.RUNNING).update(
                lease_expires_at=expires
            )
            self.running = bool(renewed)
        else:
            self.running = StepRun.objects.filter(pk=self.step_id, status=Status.RUNNING).exists()
        return self.running
