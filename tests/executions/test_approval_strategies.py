"""Failure strategies on approvals (SPEC §9 error classes ``approval_rejected`` and
``approval_expired``): a rejected or expired approval goes through the same rules as a failed
step. Retry asks again (a new attempt with a new deadline, at once or after its durable
interval), ignore and mark as success let the run go on, abort ends it, manual intervention
waits for a person; a rule that does not name the class leaves the old outcome."""

from __future__ import annotations

import textwrap
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from executions import engine
from executions.models import Event, Execution, PendingWait, StepAttempt, StepRun
from executions.services import answer_approval, answer_intervention, run_pipeline
from executions.states import Status, is_allowed
from stageline.errors import Conflict
from tests.helpers.factories import make_pipeline
from tests.helpers.runs import drive

pytestmark = pytest.mark.django_db

HOW = ("rejected", "expired")
ERROR_CLASS = {"rejected": "approval_rejected", "expired": "approval_expired"}
# What the approval ends as when no rule takes its failure (as before strategies).
PLAIN_END = {"rejected": Status.REJECTED, "expired": Status.EXPIRED}


def gated(personas, identifier: str, rules: str):
    """build (a script) → gate (an approval, 1h, with ``rules`` as its step's failure
    strategies) → ship (a script)."""
    rule_lines = textwrap.indent(textwrap.dedent(rules).strip(), " " * 16)
    return make_pipeline(
        personas.project,
        f"""pipeline:
  name: {identifier}
  identifier: {identifier}
  stages:
    - stage:
        identifier: build
        steps:
          - step: {{identifier: s, type: ShellScript, spec: {{script: echo built}}}}
    - stage:
        identifier: gate
        steps:
          - step:
              identifier: ok
              type: Approval
              timeout: 1h
              failure_strategies:
{rule_lines}
              spec: {{message: Ship it?}}
    - stage:
        identifier: ship
        steps:
          - step: {{identifier: s, type: ShellScript, spec: {{script: echo shipped}}}}
""",
    )


def start(pipeline, personas) -> Execution:
    execution = drive(run_pipeline(pipeline=pipeline, user=personas.executor, inputs={}))
    assert execution.status == Status.WAITING
    return execution


def gate(execution: Execution) -> StepRun:
    return StepRun.objects.select_related("stage_run").get(
        execution=execution, stage_run__identifier="gate"
    )


def fail(execution: Execution, how: str, personas) -> Execution:
    """Reject the waiting approval (as the approver, with a comment), or let its deadline pass
    and run the reaper; then run what is queued. The fresh execution."""
    if how == "rejected":
        answer_approval(
            execution=execution, stage="gate", user=personas.approver, approve=False, comment="no"
        )
    else:
        StepRun.objects.filter(pk=gate(execution).pk).update(
            deadline=timezone.now() - timedelta(seconds=1)
        )
        assert engine.reap()["approvals_expired"] == 1
    return drive(execution)


def approve(execution: Execution, personas) -> Execution:
    answer_approval(execution=execution, stage="gate", user=personas.approver, approve=True)
    return drive(execution)


def step_events(step: StepRun) -> list[tuple[str, str, str, str]]:
    """(from, to, action, actor) of the step's events, oldest first."""
    return [
        (e.from_status, e.to_status, e.action, e.actor.username if e.actor else "")
        for e in Event.objects.filter(step_run=step).order_by("id")
    ]


def failure_event(how: str) -> tuple[str, str, str, str]:
    """The event that says the approval failed: who rejected it, or that nobody answered."""
    return ("", "", how, "approver" if how == "rejected" else "")


def stage_statuses(execution: Execution) -> dict[str, str]:
    return {run.identifier: run.status for run in execution.stage_runs.all()}


@pytest.mark.parametrize("how", HOW)
def test_retry_asks_for_the_approval_again_with_a_new_deadline_then_an_approval_goes_on(
    personas, how, client
):
    pipeline = gated(
        personas,
        f"again_{how}",
        f"- on_failure: {{errors: [{ERROR_CLASS[how]}], action: {{type: retry, retry: {{count: 1}}}}}}",
    )
    execution = start(pipeline, personas)
    first = gate(execution)
    assert first.attempts == 1
    before = timezone.now()

    execution = fail(execution, how, personas)
    step = gate(execution)
    assert (step.status, step.attempts) == (Status.WAITING, 2)
    assert step.deadline > before + timedelta(minutes=59), "the new ask has a deadline of its own"
    assert (step.decided_by, step.comment, step.error) == (None, "", "")
    assert (
        execution.status == Status.WAITING and stage_statuses(execution)["gate"] == Status.WAITING
    )
    assert step_events(step)[-3:] == [
        failure_event(how),
        (Status.WAITING, Status.QUEUED, "strategy.retry", ""),
        (Status.QUEUED, Status.WAITING, "approval.asked", ""),
    ]
    # The first ask is archived as a failed attempt of its own.
    archived = StepAttempt.objects.get(step_run=step)
    assert (archived.number, archived.status, archived.error_class) == (
        1,
        PLAIN_END[how],
        ERROR_CLASS[how],
    )
    expected = "rejected by approver: no" if how == "rejected" else "nobody answered"
    assert archived.error.startswith(expected)
    retry = Event.objects.get(step_run=step, action="strategy.retry")
    assert retry.message.startswith(f"retry 1 of 1 ({ERROR_CLASS[how]} failure, attempt 1: ")
    assert "step failure strategy at line" in retry.message

    # The page counts the asks as attempts, the earlier one listed.
    client.force_login(personas.viewer)
    page = client.get(reverse("execution", args=[execution.pk]) + f"?step={step.pk}")
    html = page.content.decode()
    assert ">Attempt 2 of 2<" in html and "?attempt=1" in html

    execution = approve(execution, personas)
    assert execution.status == Status.SUCCESS
    assert stage_statuses(execution) == dict.fromkeys(("build", "gate", "ship"), Status.SUCCESS)
    assert gate(execution).decided_by == personas.approver


@pytest.mark.parametrize("how", HOW)
def test_a_retried_approval_failing_again_hands_over_to_on_exhausted(personas, how):
    pipeline = gated(
        personas,
        f"exhausted_{how}",
        "- on_failure: {errors: [approval_rejected, approval_expired], action: {type: retry, "
        "retry: {count: 1}}}",
    )
    execution = fail(start(pipeline, personas), how, personas)
    assert gate(execution).status == Status.WAITING
    execution = fail(execution, how, personas)
    step = gate(execution)
    # on_exhausted defaults to mark_as_failure: the approval ends as it did before strategies.
    assert (step.status, step.attempts) == (PLAIN_END[how], 2)
    assert execution.status == PLAIN_END[how]
    assert stage_statuses(execution)["ship"] == Status.NOT_STARTED
    assert Event.objects.filter(step_run=step, action="strategy.retry").count() == 1


@pytest.mark.parametrize("how", HOW)
def test_a_retry_interval_is_a_durable_wait_before_the_approval_is_asked_again(
    personas, how, client
):
    pipeline = gated(
        personas,
        f"later_{how}",
        f"- on_failure: {{errors: [{ERROR_CLASS[how]}], action: {{type: retry, "
        "retry: {count: 2, intervals: [10m]}}}",
    )
    execution = fail(start(pipeline, personas), how, personas)
    step = gate(execution)
    wait = PendingWait.objects.get(step_run=step)
    assert (wait.kind, wait.state) == (PendingWait.Kind.RETRY, PendingWait.State.PENDING)
    client.force_login(personas.viewer)
    html = client.get(reverse("execution", args=[execution.pk]) + f"?step={step.pk}")
    assert ">Attempt 2 of 3<" in html.content.decode()  # count 2: three asks at most
    assert "next attempt in" in html.content.decode()
    assert wait.due_at > timezone.now() + timedelta(minutes=9)
    assert step.status == Status.QUEUED and execution.status == Status.RUNNING
    # Nobody can answer it during the interval, and the reaper leaves it until it is due.
    with pytest.raises(Conflict, match="is not waiting for approval"):
        answer_approval(execution=execution, stage="gate", user=personas.approver, approve=True)
    engine.reap()
    assert gate(execution).status == Status.QUEUED

    PendingWait.objects.filter(pk=wait.pk).update(due_at=timezone.now() - timedelta(seconds=1))
    assert engine.reap()["waits_started"] == 1
    assert engine.reap()["waits_started"] == 0, "a wait starts once"
    execution = drive(execution)
    step = gate(execution)
    assert (step.status, step.attempts) == (Status.WAITING, 2)
    assert execution.status == Status.WAITING
    assert step.deadline > timezone.now() + timedelta(minutes=59)
    assert approve(execution, personas).status == Status.SUCCESS


@pytest.mark.parametrize("how", HOW)
def test_ignore_lets_the_run_go_on_and_end_success_with_the_approval_ignored(personas, how, client):
    pipeline = gated(
        personas,
        f"ignore_{how}",
        f"- on_failure: {{errors: [{ERROR_CLASS[how]}], action: {{type: ignore}}}}",
    )
    execution = fail(start(pipeline, personas), how, personas)
    step = gate(execution)
    assert step.status == Status.IGNORED
    assert execution.status == Status.SUCCESS
    assert stage_statuses(execution) == {
        "build": Status.SUCCESS,
        "gate": Status.SUCCESS,
        "ship": Status.SUCCESS,
    }
    assert step_events(step)[-2:] == [
        failure_event(how),
        (Status.WAITING, Status.IGNORED, "strategy.ignored", ""),
    ]
    if how == "rejected":
        # The page says who rejected it, never that it was approved.
        client.force_login(personas.viewer)
        page = client.get(reverse("execution", args=[execution.pk])).content.decode()
        assert "Rejected by approver" in page and "Approved by" not in page
        assert "Failed, ignored" in page


@pytest.mark.parametrize("how", HOW)
def test_mark_as_success_ends_the_approval_success_and_the_run_goes_on(personas, how):
    pipeline = gated(
        personas,
        f"success_{how}",
        f"- on_failure: {{errors: [{ERROR_CLASS[how]}], action: {{type: mark_as_success}}}}",
    )
    execution = fail(start(pipeline, personas), how, personas)
    step = gate(execution)
    assert (step.status, step.error) == (Status.SUCCESS, "marked as success by strategy")
    assert execution.status == Status.SUCCESS
    assert stage_statuses(execution)["ship"] == Status.SUCCESS
    assert step_events(step)[-1] == (
        Status.WAITING,
        Status.SUCCESS,
        "strategy.marked_as_success",
        "",
    )


@pytest.mark.parametrize("how", HOW)
def test_abort_ends_the_execution_aborted_and_nothing_after_runs(personas, how):
    pipeline = gated(
        personas,
        f"abort_{how}",
        f"- on_failure: {{errors: [{ERROR_CLASS[how]}], action: {{type: abort}}}}",
    )
    execution = fail(start(pipeline, personas), how, personas)
    step = gate(execution)
    assert step.status == Status.ABORTED
    assert execution.status == Status.ABORTED
    assert f"step 'ok' failed ({ERROR_CLASS[how]} failure" in execution.error
    assert stage_statuses(execution) == {
        "build": Status.SUCCESS,
        "gate": Status.ABORTED,
        "ship": Status.NOT_STARTED,
    }
    assert step_events(step)[-2:] == [
        failure_event(how),
        (Status.WAITING, Status.ABORTED, "strategy.aborted", ""),
    ]


@pytest.mark.parametrize("how", HOW)
def test_manual_intervention_waits_for_a_person_whose_retry_asks_for_the_approval_again(
    personas, how
):
    pipeline = gated(
        personas,
        f"intervene_{how}",
        f"- on_failure: {{errors: [{ERROR_CLASS[how]}], action: {{type: manual_intervention, "
        "timeout: 1h, on_timeout: {type: abort}}}",
    )
    execution = fail(start(pipeline, personas), how, personas)
    step = gate(execution)
    assert step.status == Status.INTERVENTION_WAITING
    assert execution.status == Status.INTERVENTION_WAITING
    assert stage_statuses(execution)["gate"] == Status.INTERVENTION_WAITING
    wait = PendingWait.objects.get(step_run=step)
    assert (wait.kind, wait.on_timeout) == (PendingWait.Kind.INTERVENTION, "abort")
    assert step_events(step)[-2:] == [
        failure_event(how),
        (Status.WAITING, Status.INTERVENTION_WAITING, "intervention.requested", ""),
    ]

    answer_intervention(
        execution=execution, step="gate.ok", user=personas.executor, action="retry", comment="ask"
    )
    execution = drive(execution)
    step = gate(execution)
    assert (step.status, step.attempts) == (Status.WAITING, 2)
    assert execution.status == Status.WAITING
    assert PendingWait.objects.get(pk=wait.pk).state == PendingWait.State.CANCELLED
    assert approve(execution, personas).status == Status.SUCCESS


@pytest.mark.parametrize("how", HOW)
def test_a_rule_for_other_classes_leaves_the_approval_failing_as_before(personas, how):
    # A timeout-only rule (and a rule for the other approval class) does not catch it.
    other = "approval_expired" if how == "rejected" else "approval_rejected"
    pipeline = gated(
        personas,
        f"other_{how}",
        f"- on_failure: {{errors: [timeout, {other}], action: {{type: retry, retry: {{count: 3}}}}}}",
    )
    execution = fail(start(pipeline, personas), how, personas)
    step = gate(execution)
    assert (step.status, step.attempts) == (PLAIN_END[how], 1)
    assert execution.status == PLAIN_END[how]
    assert not Event.objects.filter(step_run=step, action__startswith="strategy.").exists()
    assert not PendingWait.objects.filter(execution=execution).exists()


def test_a_pipeline_level_all_rule_catches_a_rejection(personas):
    pipeline = make_pipeline(
        personas.project,
        """pipeline:
  name: all_rule
  identifier: all_rule
  failure_strategies:
    - on_failure: {errors: [all], action: {type: ignore}}
  stages:
    - stage:
        identifier: gate
        steps:
          - step: {identifier: ok, type: Approval, timeout: 1h, spec: {message: Go?}}
""",
    )
    execution = drive(run_pipeline(pipeline=pipeline, user=personas.executor, inputs={}))
    execution = fail(execution, "rejected", personas)
    assert (gate(execution).status, execution.status) == (Status.IGNORED, Status.SUCCESS)


def test_the_status_table_allows_an_approval_to_be_asked_again_or_ignored():
    assert is_allowed(Status.WAITING, Status.QUEUED)  # retry: queued for its next ask
    assert is_allowed(Status.QUEUED, Status.WAITING)  # the next ask
    assert is_allowed(Status.WAITING, Status.IGNORED)
    assert not is_allowed(Status.WAITING, Status.IGNORED, execution=True)
    assert not is_allowed(Status.QUEUED, Status.REJECTED)
