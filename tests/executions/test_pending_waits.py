"""Durable waits of failure strategies (SPEC §9): a retry interval or an intervention timeout is
a row with a due time; the scheduler starts what is due, each wait once; an abort cancels them."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from executions.models import PendingWait, StepRun
from executions.services import abort_execution, run_pipeline
from executions.states import Status
from tests.helpers.factories import make_pipeline, serial_pipeline, shell_stage

pytestmark = pytest.mark.django_db


@pytest.fixture
def step(personas) -> StepRun:
    pipeline = make_pipeline(personas.project, serial_pipeline("waits", [shell_stage("a", "true")]))
    execution = run_pipeline(pipeline=pipeline, user=personas.executor, inputs={})
    return StepRun.objects.get(execution=execution)


def wait_for(step: StepRun, seconds: int, kind: str = PendingWait.Kind.RETRY) -> PendingWait:
    return PendingWait.objects.create(
        execution_id=step.execution_id,
        step_run=step,
        kind=kind,
        due_at=timezone.now() + timedelta(seconds=seconds),
    )


def test_only_what_is_due_and_pending_is_picked_up(step, personas):
    now = timezone.now()
    later = wait_for(step, 60)
    assert list(PendingWait.objects.due(now)) == []
    assert list(PendingWait.objects.due(now + timedelta(seconds=61))) == [later]


def test_a_due_wait_is_started_once_however_often_it_is_picked_up(step):
    wait = wait_for(step, -1)
    now = timezone.now()
    picked_twice = [list(PendingWait.objects.due(now)), list(PendingWait.objects.due(now))]
    wins = [PendingWait.objects.claim(found[0], now) for found in picked_twice]
    assert wins == [True, False]
    wait.refresh_from_db()
    assert wait.state == PendingWait.State.STARTED
    assert list(PendingWait.objects.due(now)) == []


def test_a_step_has_at_most_one_pending_wait(step):
    wait_for(step, 10)
    with pytest.raises(IntegrityError), transaction.atomic():
        wait_for(step, 20, PendingWait.Kind.INTERVENTION)


def test_abort_cancels_the_pending_waits(step, personas):
    wait = wait_for(step, 30, PendingWait.Kind.INTERVENTION)
    abort_execution(execution=step.execution, user=personas.executor)
    wait.refresh_from_db()
    assert wait.state == PendingWait.State.CANCELLED
    assert step.execution.__class__.objects.get(pk=step.execution_id).status == Status.ABORTED
    assert list(PendingWait.objects.due(timezone.now() + timedelta(minutes=1))) == []
