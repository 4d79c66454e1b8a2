"""Audit of failure strategies (SPEC §9): each automatic action and each intervention is an
event saying who (a person) or which rule, when, why and the comment; the execution page shows
them (escaped) and the admin lists them, filterable by action."""

from __future__ import annotations

import textwrap
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from executions import engine
from executions.models import Event, Execution, PendingWait
from executions.services import answer_intervention, run_pipeline
from executions.states import Status
from tests.helpers.factories import make_pipeline
from tests.helpers.runs import step_of, wait_for, wait_for_status

pytestmark = pytest.mark.engine


def one_step(personas, identifier: str, rules: str, script: str):
    """A pipeline of one stage ``work`` whose step ``run`` has the failure ``rules`` (the first
    rule is on line 12)."""
    rule_lines = textwrap.indent(textwrap.dedent(rules).strip(), " " * 16)
    text = f"""pipeline:
  name: {identifier}
  identifier: {identifier}
  stages:
    - stage:
        identifier: work
        steps:
          - step:
              identifier: run
              type: ShellScript
              failure_strategies:
{rule_lines}
              spec: {{script: '{script}'}}
"""
    return make_pipeline(personas.project, text)


def events(execution: Execution, prefix: str = "") -> list[Event]:
    return list(
        Event.objects.filter(execution=execution, action__startswith=prefix)
        .exclude(action="")
        .order_by("id")
    )


def make_due(execution: Execution) -> None:
    PendingWait.objects.filter(execution=execution, state=PendingWait.State.PENDING).update(
        due_at=timezone.now() - timedelta(seconds=1)
    )


def test_a_retry_after_its_interval_and_exhausted_retries_are_events_naming_the_rule(
    worker, personas
):
    pipeline = one_step(
        personas,
        "audited_retry",
        "- on_failure: {errors: [script], action: {type: retry, retry: {count: 1, "
        "intervals: [10m]}}}",
        "exit 3",
    )
    execution = run_pipeline(pipeline=pipeline, user=personas.executor, inputs={})
    wait_for(lambda: PendingWait.objects.filter(execution=execution).exists(), message="a wait")
    make_due(execution)
    engine.reap()
    execution = wait_for_status(execution, Status.FAILED)
    trail = [(e.action, e.actor_id, e.message) for e in events(execution, "strategy.")]
    assert [(action, actor) for action, actor, _ in trail] == [
        ("strategy.retry", None),
        ("strategy.retry_started", None),
        ("strategy.marked_as_failure", None),
    ]
    assert (
        "retry 1 of 1 (script failure, attempt 1: step failure strategy at line 12)"
        in (trail[0][2])
    )
    assert trail[1][2].startswith("attempt 2 sent to a worker: its retry interval ended (waited ")
    assert trail[2][2] == (
        "marked as failure (script failure, attempt 2: step failure strategy at line 12, "
        "retries exhausted)"
    )
    step = step_of(execution, "work")
    assert all(e.step_run_id == step.pk for e in events(execution, "strategy."))
    assert (step.status, step.attempts, step.exit_code) == (Status.FAILED, 2, 3)


def test_a_rule_that_marks_a_timeout_as_failure_names_itself_and_keeps_expired(worker, personas):
    text = """pipeline:
  name: slow
  identifier: slow
  stages:
    - stage:
        identifier: work
        steps:
          - step:
              identifier: run
              type: ShellScript
              timeout: 1s
              failure_strategies:
                - on_failure: {errors: [timeout], action: {type: mark_as_failure}}
              spec: {script: sleep 30}
"""
    execution = run_pipeline(
        pipeline=make_pipeline(personas.project, text), user=personas.executor, inputs={}
    )
    execution = wait_for_status(execution, Status.EXPIRED)
    event = Event.objects.get(execution=execution, action="strategy.marked_as_failure")
    assert event.to_status == Status.EXPIRED
    assert "timeout failure, attempt 1: step failure strategy at line 13" in event.message


def test_an_intervention_answer_and_a_timeout_are_events_with_who_and_the_comment(worker, personas):
    rules = (
        "- on_failure: {errors: [all], action: {type: manual_intervention, timeout: 1h, "
        "on_timeout: {type: mark_as_success}}}"
    )
    answered = run_pipeline(
        pipeline=one_step(personas, "answered", rules, "exit 1"),
        user=personas.executor,
        inputs={},
    )
    answered = wait_for_status(answered, Status.INTERVENTION_WAITING)
    answer_intervention(
        execution=answered,
        step="run",
        user=personas.executor,
        action="ignore",
        comment="known flaky mirror",
    )
    answered = wait_for_status(answered, Status.SUCCESS)
    requested, ignored = events(answered, "intervention.") + events(answered, "strategy.")
    assert (requested.action, requested.actor_id) == ("intervention.requested", None)
    assert "step failure strategy at line 12" in requested.message
    # The answer is the event of the move it makes: the person, the reason, their comment.
    assert (ignored.action, ignored.actor, ignored.comment) == (
        "strategy.ignored",
        personas.executor,
        "known flaky mirror",
    )
    assert ignored.message == "failure ignored (answered by executor: known flaky mirror)"

    timed_out = run_pipeline(
        pipeline=one_step(personas, "timed_out", rules, "exit 1"),
        user=personas.executor,
        inputs={},
    )
    timed_out = wait_for_status(timed_out, Status.INTERVENTION_WAITING)
    make_due(timed_out)
    engine.reap()
    timed_out = wait_for_status(timed_out, Status.SUCCESS)
    event = Event.objects.get(execution=timed_out, action="intervention.timed_out")
    assert (event.actor, event.message) == (
        None,
        "nobody answered in time: on_timeout mark_as_success applied",
    )
    assert Event.objects.filter(execution=timed_out, action="strategy.marked_as_success").exists()


def test_the_execution_page_shows_the_activity_with_user_text_escaped(worker, personas, client):
    rules = "- on_failure: {errors: [all], action: {type: manual_intervention, timeout: 1h}}"
    execution = run_pipeline(
        pipeline=one_step(personas, "shown", rules, "exit 1"), user=personas.executor, inputs={}
    )
    execution = wait_for_status(execution, Status.INTERVENTION_WAITING)
    answer_intervention(
        execution=execution,
        step="run",
        user=personas.executor,
        action="mark_as_failure",
        comment='<img src=x onerror="alert(1)"> really broken',
    )
    execution = wait_for_status(execution, Status.FAILED)
    client.force_login(personas.viewer)
    page = client.get(reverse("execution", args=[execution.pk])).content.decode()
    section = page.split('id="activity"')[1].split("</section>")[0]
    items = [" ".join(item.split()) for item in section.split("<li")[1:]]
    assert [item.split('data-action="')[1].split('"')[0] for item in items] == [
        "created",
        "intervention.requested",
        "strategy.marked_as_failure",
    ]
    requested, answer = items[1:]
    assert "Intervention requested" in requested and "by failure strategy" in requested
    assert "step failure strategy at line 12" in requested
    assert "Intervention answered: mark as failure" in answer and "by executor" in answer
    assert "work › run" in answer
    comment = answer.split('class="activity-comment">')[1].split("</q>")[0]
    assert comment == "&lt;img src=x onerror=&quot;alert(1)&quot;&gt; really broken"
    assert "<img src=x" not in page
    assert "hx-disable" in page.split('id="activity"')[1].split(">")[0]


def test_the_admin_lists_the_events_with_who_and_comment_filterable_by_action(
    worker, personas, client
):
    rules = "- on_failure: {errors: [all], action: {type: manual_intervention, timeout: 1h}}"
    execution = run_pipeline(
        pipeline=one_step(personas, "admin_seen", rules, "exit 1"),
        user=personas.executor,
        inputs={},
    )
    execution = wait_for_status(execution, Status.INTERVENTION_WAITING)
    answer_intervention(
        execution=execution,
        step="run",
        user=personas.executor,
        action="ignore",
        comment="ok to skip today",
    )
    wait_for_status(execution, Status.SUCCESS)
    url = reverse("admin:executions_event_changelist")
    client.force_login(personas.admin)  # staff, Project Admin of acme/web
    page = client.get(url, {"action": "strategy.ignored"})
    assert page.status_code == 200
    body = page.content.decode()
    assert '<td class="field-short_comment">ok to skip today</td>' in body
    assert '<td class="field-who">executor</td>' in body
    assert '<td class="field-step">work.run</td>' in body
    assert "failure ignored (answered by executor: ok to skip today)" in body
    assert "needs intervention" not in body  # the filter leaves the request out
    assert "strategy.ignored" in body.split('id="changelist-filter"')[1]  # a filter choice
    everything = client.get(url).content.decode()
    assert "needs intervention" in everything and "failure strategy" in everything
    # A staff admin of another project sees none of them.
    personas.stranger.is_staff = True
    personas.stranger.save(update_fields=["is_staff"])
    client.force_login(personas.stranger)
    other = client.get(url, {"action": "strategy.ignored"})
    assert other.status_code == 200 and "ok to skip today" not in other.content.decode()
