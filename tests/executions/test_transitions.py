"""The status table is enforced: for executions, stage runs and step runs, every pair of
statuses is tried; an allowed move is written with its event, a forbidden one raises and
changes nothing (no row change, no event)."""

from __future__ import annotations

import itertools

import pytest

from executions.models import Event, StageRun, StepRun
from executions.services import run_pipeline
from executions.states import EXECUTION_STATUSES, TRANSITIONS, Status, is_allowed, worst
from executions.transitions import IllegalTransition, transition
from tests.helpers.factories import make_pipeline, serial_pipeline, shell_stage

pytestmark = pytest.mark.django_db


@pytest.fixture
def rows(personas):
    pipeline = make_pipeline(personas.project, serial_pipeline("pairs", [shell_stage("a", "true")]))
    execution = run_pipeline(pipeline=pipeline, user=personas.executor, inputs={})
    stage = StageRun.objects.get(execution=execution)
    step = StepRun.objects.get(stage_run=stage)
    return {"execution": execution, "stage": stage, "step": step}


def _statuses(kind: str) -> list[str]:
    return sorted(EXECUTION_STATUSES if kind == "execution" else set(Status))


@pytest.mark.parametrize("kind", ["execution", "stage", "step"])
def test_every_pair_of_statuses_is_allowed_or_refused_by_the_table(rows, kind):
    obj = rows[kind]
    model = type(obj)
    tried = allowed = 0
    for source, to in itertools.product(_statuses(kind), repeat=2):
        model.objects.filter(pk=obj.pk).update(status=source)  # the test sets the scene
        fresh = model.objects.get(pk=obj.pk)
        before = model.objects.filter(pk=obj.pk).values().get()
        events = Event.objects.count()
        tried += 1
        if is_allowed(source, to, execution=kind == "execution"):
            allowed += 1
            assert transition(fresh, to=to) is True
            assert model.objects.get(pk=obj.pk).status == to
            event = Event.objects.order_by("-id").first()
            assert Event.objects.count() == events + 1
            assert (event.from_status, event.to_status) == (source, to)
        else:
            with pytest.raises(IllegalTransition):
                transition(fresh, to=to, message="must not be written")
            assert model.objects.filter(pk=obj.pk).values().get() == before
            assert Event.objects.count() == events
    assert tried == len(_statuses(kind)) ** 2
    assert 0 < allowed < tried


def test_an_execution_is_never_skipped():
    assert not is_allowed(Status.NOT_STARTED, Status.SKIPPED, execution=True)
    assert is_allowed(Status.NOT_STARTED, Status.SKIPPED)


def test_terminal_statuses_never_change_and_the_moves_the_engine_makes_are_allowed():
    for status in (Status.SUCCESS, Status.FAILED, Status.ABORTED, Status.SKIPPED):
        assert TRANSITIONS[status] == frozenset()
    # An approval step waits without being queued; a stage whose condition fails never runs.
    assert is_allowed(Status.NOT_STARTED, Status.WAITING)
    assert is_allowed(Status.NOT_STARTED, Status.FAILED)
    # Abort touches active rows only; an execution is RUNNING before anything ends.
    assert not is_allowed(Status.NOT_STARTED, Status.ABORTED)
    assert not is_allowed(Status.QUEUED, Status.EXPIRED)
    assert not is_allowed(Status.QUEUED, Status.REJECTED)


def test_the_moves_of_failure_strategies_are_allowed_and_ignored_is_final():
    # SPEC §9: a failed attempt is queued again (retry), ignored, or waits for a person, whose
    # answer (or the timeout) queues a new attempt or ends the step.
    for to in (Status.QUEUED, Status.IGNORED, Status.INTERVENTION_WAITING):
        assert is_allowed(Status.RUNNING, to)
    for to in (Status.QUEUED, Status.IGNORED, Status.SUCCESS, Status.FAILED, Status.ABORTED):
        assert is_allowed(Status.INTERVENTION_WAITING, to)
    assert TRANSITIONS[Status.IGNORED] == frozenset()
    # An execution whose failures were ignored ends SUCCESS: it is never IGNORED itself.
    assert not is_allowed(Status.RUNNING, Status.IGNORED, execution=True)
    assert is_allowed(Status.RUNNING, Status.INTERVENTION_WAITING, execution=True)
    # Nothing goes back to NOT_STARTED, and nothing skips the wait for a person.
    assert not is_allowed(Status.INTERVENTION_WAITING, Status.NOT_STARTED)
    assert not is_allowed(Status.NOT_STARTED, Status.INTERVENTION_WAITING)


def test_a_lost_compare_and_set_writes_nothing(rows):
    step = rows["step"]
    StepRun.objects.filter(pk=step.pk).update(status=Status.RUNNING)
    step.status = Status.QUEUED  # read before someone else claimed it
    events = Event.objects.count()
    assert transition(step, to=Status.ABORTED) is False
    assert StepRun.objects.get(pk=step.pk).status == Status.RUNNING
    assert Event.objects.count() == events


def test_the_worst_status_of_a_group_is_the_same_for_the_engine_and_the_retry_planner():
    assert worst([Status.FAILED, Status.ABORTED]) == Status.ABORTED
    assert worst([Status.SUCCESS, Status.EXPIRED, Status.REJECTED]) == Status.EXPIRED
    assert worst([Status.SUCCESS, Status.SKIPPED]) == Status.SKIPPED
    assert worst([Status.SUCCESS, Status.IGNORED]) == Status.IGNORED
    assert worst([Status.FAILED, Status.INTERVENTION_WAITING]) == Status.FAILED
