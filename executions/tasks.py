"""Celery tasks: thin wrappers that take ids and call the engine (no business logic here).

Tasks are acknowledged late and rejected when their worker is lost, so a task is never lost
with its worker; the engine's compare-and-set claim makes a redelivered task harmless.
"""

from __future__ import annotations

from celery import shared_task
from django.conf import settings

from executions import engine


@shared_task(name="executions.tasks.run_step", acks_late=True, reject_on_worker_lost=True)
def run_step(step_id: int) -> None:
    """Run one queued step on this worker (returns quietly if it is not QUEUED any more), and
    the steps it makes due here, for up to ``STAGELINE_TASK_BUDGET_SECONDS``."""
    engine.run_step(step_id, budget=settings.STAGELINE_TASK_BUDGET_SECONDS)


@shared_task(name="executions.tasks.advance", acks_late=True)
def advance(execution_id: int) -> None:
    engine.advance(execution_id)


@shared_task(name="executions.tasks.reap", ignore_result=True)
def reap() -> dict[str, int]:
    """Fail lost steps, expire approvals, re-send lost dispatches (Celery beat, every few s)."""
    return engine.reap()
