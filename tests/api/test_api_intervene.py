"""Answering an intervention through the API (issue 17 point 1, issue 13 point 4): each answer
does to the step and the run what the page and ``manage.py intervene`` do (the same service,
``services.answer_intervention``), with the same audit event; refusals are 404 / 403 / 400 /
409 and change nothing; of two answers at once the first wins and the second says what the step
is now. Also what the execution detail shows of a waiting step (its intervention's due time and
``on_timeout``, a retry's next attempt). Who gets which status: test_api_matrix.py."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone

from api.tokens import create_token
from executions import engine
from executions.models import Event, Execution, PendingWait, StepRun
from executions.services import run_pipeline
from executions.states import Status
from tests.helpers.factories import make_pipeline
from tests.helpers.runs import drive, wait_for_status

API = "/api/v1"
MILLISECOND = timedelta(milliseconds=1)

# Stage ``flaky``: its step fails the first time (it leaves a mark in ``{d}``) and passes after;
# a failure waits for a person (1 hour, then ignored). Stage ``next`` runs after it.
INTERVENTION_YAML = """
pipeline:
  name: Needs a hand
  identifier: needs_hand
  stages:
    - stage:
        identifier: flaky
        steps:
          - step:
              identifier: run
              name: Flaky step
              type: ShellScript
              failure_strategies:
                - on_failure:
                    errors: [all]
                    action: {{type: manual_intervention, timeout: 1h, on_timeout: {{type: ignore}}}}
              spec:
                script: |
                  echo "attempt on a full disk"
                  echo done > {d}/out
                  [ -e {d}/ok ] || {{ touch {d}/ok; exit 3; }}
    - stage:
        identifier: next
        steps:
          - step: {{identifier: after, type: ShellScript, spec: {{script: echo next ran}}}}
"""

RETRY_LATER_YAML = """
pipeline:
  name: Retry later
  identifier: retry_later
  stages:
    - stage:
        identifier: flaky
        steps:
          - step:
              identifier: run
              type: ShellScript
              failure_strategies:
                - on_failure:
                    errors: [all]
                    action: {type: retry, retry: {count: 2, intervals: [10m]}}
              spec: {script: exit 4}
"""


def bearer(user, scope: str = "read-write") -> dict[str, str]:
    return {"Authorization": f"Bearer {create_token(user=user, name='test', scope=scope)[1]}"}


def answer(client, execution: Execution, step: StepRun, body, headers):
    return client.post(
        f"{API}/executions/{execution.pk}/steps/{step.pk}/intervention",
        body,
        content_type="application/json",
        headers=headers,
    )


def flaky(execution: Execution) -> StepRun:
    return StepRun.objects.get(execution=execution, stage_run__identifier="flaky")


def step_in(execution: Execution, stage: str) -> StepRun:
    return StepRun.objects.get(execution=execution, stage_run__identifier=stage)


def waiting(personas, shared_dir: Path) -> Execution:
    """An execution whose step ``flaky.run`` failed and waits for intervention (run here)."""
    pipeline = make_pipeline(personas.project, INTERVENTION_YAML.format(d=shared_dir))
    execution = drive(run_pipeline(pipeline=pipeline, user=personas.executor, inputs={}))
    assert execution.status == Status.INTERVENTION_WAITING, execution.error
    return execution


def state(execution: Execution) -> tuple:
    """What a refused answer must leave alone."""
    return (
        Execution.objects.get(pk=execution.pk).status,
        list(execution.step_runs.order_by("pk").values_list("status", "attempts", "comment")),
        list(PendingWait.objects.filter(execution=execution).values_list("state", flat=True)),
        Event.objects.filter(execution=execution).count(),
    )


def test_the_detail_shows_the_waiting_intervention_with_its_due_time_and_on_timeout(
    client, personas, shared_dir
):
    execution = waiting(personas, shared_dir)
    before = timezone.now()
    detail = client.get(f"{API}/executions/{execution.pk}", headers=bearer(personas.viewer)).json()
    assert (detail["status"], detail["status_label"]) == (
        Status.INTERVENTION_WAITING,
        "needs intervention",
    )
    flaky_stage, next_stage = detail["stages"]
    assert flaky_stage["status"] == Status.INTERVENTION_WAITING
    assert next_stage["status"] == Status.NOT_STARTED
    [step] = flaky_stage["steps"]
    assert step["status"] == Status.INTERVENTION_WAITING and step["exit_code"] == 3
    wait = PendingWait.objects.get(step_run_id=step["id"], state=PendingWait.State.PENDING)
    intervention = step["intervention"]
    assert intervention["on_timeout"] == "ignore"
    due = timezone.datetime.fromisoformat(intervention["due_at"])
    assert abs(due - wait.due_at) < MILLISECOND  # JSON keeps milliseconds
    assert before + timedelta(minutes=59) < due < before + timedelta(hours=1)
    assert intervention["answer_url"] == (
        f"{API}/executions/{execution.pk}/steps/{step['id']}/intervention"
    )
    assert next_stage["steps"][0]["intervention"] is None, "only the waiting step has one"


def test_the_detail_shows_when_a_waiting_retry_starts_its_next_attempt(client, personas):
    pipeline = make_pipeline(personas.project, RETRY_LATER_YAML)
    execution = run_pipeline(pipeline=pipeline, user=personas.executor, inputs={})
    engine.run_step(flaky(execution).pk)  # the first attempt only (``drive`` knows no waits)
    wait = PendingWait.objects.get(execution=execution, state=PendingWait.State.PENDING)
    assert wait.kind == PendingWait.Kind.RETRY
    detail = client.get(f"{API}/executions/{execution.pk}", headers=bearer(personas.viewer)).json()
    step = detail["stages"][0]["steps"][0]
    assert (step["status"], step["attempts"], step["intervention"]) == (Status.QUEUED, 1, None)
    assert abs(timezone.datetime.fromisoformat(step["next_attempt_at"]) - wait.due_at) < MILLISECOND
    assert wait.due_at > timezone.now() + timedelta(minutes=9)


# What each answer makes of the step, the execution once run on, and the next stage.
EFFECTS = {
    "retry": (Status.SUCCESS, Status.SUCCESS, Status.SUCCESS, 2, "strategy.retry"),
    "ignore": (Status.IGNORED, Status.SUCCESS, Status.SUCCESS, 1, "strategy.ignored"),
    "mark_as_success": (
        Status.SUCCESS,
        Status.SUCCESS,
        Status.SUCCESS,
        1,
        "strategy.marked_as_success",
    ),
    "mark_as_failure": (
        Status.FAILED,
        Status.FAILED,
        Status.NOT_STARTED,
        1,
        "strategy.marked_as_failure",
    ),
    "abort": (Status.ABORTED, Status.ABORTED, Status.NOT_STARTED, 1, "strategy.aborted"),
}


@pytest.mark.parametrize("action", list(EFFECTS))
def test_each_answer_does_what_it_says(client, personas, shared_dir, action):
    step_status, run_status, next_status, attempts, event_action = EFFECTS[action]
    execution = waiting(personas, shared_dir)
    step = flaky(execution)
    got = answer(
        client,
        execution,
        step,
        {"action": action, "comment": "disk cleaned"},
        bearer(personas.executor),
    )
    assert got.status_code == 200, got.content
    body = got.json()
    assert body["step"]["id"] == step.pk and body["step"]["intervention"] is None
    assert body["step"]["decided_by"] == "executor" and body["step"]["comment"] == "disk cleaned"
    assert body["execution"]["id"] == execution.pk
    if action == "retry":  # a new attempt, queued at once
        assert body["step"]["status"] == Status.QUEUED
    else:
        assert body["step"]["status"] == step_status

    execution = drive(execution)
    step = flaky(execution)
    assert (step.status, step.attempts) == (step_status, attempts)
    assert (step.decided_by, step.comment) == (personas.executor, "disk cleaned")
    assert execution.status == run_status
    assert step_in(execution, "next").status == next_status
    wait = PendingWait.objects.get(step_run=step)
    assert wait.state == PendingWait.State.CANCELLED, "the timeout will not apply any more"
    event = Event.objects.get(step_run=step, action=event_action)
    assert event.actor == personas.executor
    assert "answered by executor: disk cleaned" in event.message
    if action == "mark_as_success":
        assert step.outputs == {}
    detail = client.get(f"{API}/executions/{execution.pk}", headers=bearer(personas.viewer)).json()
    shown = detail["stages"][0]["steps"][0]
    assert (shown["status"], shown["decided_by"]) == (step_status, "executor")
    if action == "ignore":
        assert shown["status_label"] == "failed, ignored" and detail["status"] == Status.SUCCESS
    if action == "retry":  # the failed attempt is kept with its own result and log
        first, second = shown["attempt_history"]
        assert (first["status"], first["exit_code"], first["error_class"]) == (
            Status.FAILED,
            3,
            "script",
        )
        assert (second["status"], second["latest"]) == (Status.SUCCESS, True)
        log = client.get(first["log_url"], headers=bearer(personas.viewer)).json()
        assert log["text"] == "attempt on a full disk\n" and log["attempt"] == 1


def test_a_second_answer_is_409_saying_what_the_step_is_now(client, personas, shared_dir):
    execution = waiting(personas, shared_dir)
    step = flaky(execution)
    first = answer(client, execution, step, {"action": "ignore"}, bearer(personas.executor))
    assert first.status_code == 200, first.content
    before = state(execution)
    second = answer(client, execution, step, {"action": "retry"}, bearer(personas.admin))
    assert second.status_code == 409, second.content
    body = second.json()
    assert "Nothing to answer: 'flaky.run' is failed, ignored" in body["detail"]
    assert (body["step_status"], body["decided_by"]) == (Status.IGNORED, "executor")
    assert state(execution) == before


def test_a_step_that_is_not_waiting_for_intervention_is_409(client, personas, shared_dir):
    execution = waiting(personas, shared_dir)
    later = step_in(execution, "next")
    before = state(execution)
    got = answer(client, execution, later, {"action": "ignore"}, bearer(personas.executor))
    assert got.status_code == 409
    assert "'next.after' is not started" in got.json()["detail"]
    assert got.json()["step_status"] == Status.NOT_STARTED
    assert state(execution) == before


@pytest.mark.parametrize(
    ("persona", "scope", "status", "says"),
    [
        ("viewer", "read-write", 403, "You need the Execute permission on pipeline needs_hand"),
        ("approver", "read-write", 403, "You need the Execute permission"),
        ("executor", "read", 403, "may only read"),
        ("stranger", "read-write", 404, "may not see it"),
    ],
)
def test_who_may_not_answer_is_refused_and_nothing_changes(
    client, personas, shared_dir, persona, scope, status, says
):
    execution = waiting(personas, shared_dir)
    before = state(execution)
    got = answer(
        client,
        execution,
        flaky(execution),
        {"action": "retry"},
        bearer(getattr(personas, persona), scope),
    )
    assert got.status_code == status, got.content
    assert says in got.json()["detail"]
    assert state(execution) == before


@pytest.mark.parametrize(
    ("body", "field", "says"),
    [
        ({"action": "reboot"}, "action", "'reboot' is not an answer: use one of retry, ignore"),
        ({}, "action", "Field required"),
        ({"action": ["retry"]}, "action", "string"),
        ({"action": "retry", "comment": {"a": 1}}, "comment", "string"),
    ],
)
def test_a_bad_answer_is_400_naming_the_field(client, personas, shared_dir, body, field, says):
    execution = waiting(personas, shared_dir)
    before = state(execution)
    got = answer(client, execution, flaky(execution), body, bearer(personas.executor))
    assert got.status_code == 400, got.content
    assert says in got.json()["errors"][field], got.json()
    assert state(execution) == before


def test_a_step_of_another_execution_is_404(client, personas, shared_dir):
    execution = waiting(personas, shared_dir)
    other = run_pipeline(pipeline=execution.pipeline, user=personas.executor, inputs={})
    got = answer(client, other, flaky(execution), {"action": "retry"}, bearer(personas.executor))
    assert got.status_code == 404
    assert f"has no step {flaky(execution).pk}" in got.json()["detail"]
    missing = client.post(
        f"{API}/executions/{execution.pk}/steps/0/intervention",
        {"action": "retry"},
        content_type="application/json",
        headers=bearer(personas.executor),
    )
    assert missing.status_code == 400 and "step_pk" in missing.json()["errors"]


def test_the_schema_lists_the_answers(client):
    schema = client.get(f"{API}/schema").json()
    assert "/api/v1/executions/{pk}/steps/{step_pk}/intervention" in schema["paths"]
    answer_in = schema["components"]["schemas"]["InterventionIn"]
    assert answer_in["properties"]["action"]["enum"] == [
        "retry",
        "ignore",
        "mark_as_success",
        "mark_as_failure",
        "abort",
    ]


@pytest.mark.engine  # a real worker; the integration suite runs it on PostgreSQL
def test_two_answers_at_once_one_wins_the_other_is_told(worker, personas, shared_dir):
    pipeline = make_pipeline(personas.project, INTERVENTION_YAML.format(d=shared_dir))
    execution = wait_for_status(
        run_pipeline(pipeline=pipeline, user=personas.executor, inputs={}),
        Status.INTERVENTION_WAITING,
    )
    step = flaky(execution)
    url = f"{API}/executions/{execution.pk}/steps/{step.pk}/intervention"
    callers = [(bearer(personas.executor), "retry"), (bearer(personas.admin), "ignore")]
    barrier = threading.Barrier(len(callers))
    answers: dict[str, object] = {}

    def post(headers: dict[str, str], action: str) -> None:
        try:
            barrier.wait(timeout=30)
            answers[action] = Client().post(
                url, {"action": action}, content_type="application/json", headers=headers
            )
        finally:
            connection.close()

    threads = [threading.Thread(target=post, args=caller) for caller in callers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    statuses = {action: got.status_code for action, got in answers.items()}  # type: ignore[attr-defined]
    assert sorted(statuses.values()) == [200, 409], statuses
    won = next(action for action, code in statuses.items() if code == 200)
    lost = answers["ignore" if won == "retry" else "retry"].json()  # type: ignore[attr-defined]
    winner = {"retry": "executor", "ignore": "admin"}[won]
    assert "Nothing to answer: 'flaky.run' is" in lost["detail"]
    assert lost["decided_by"] == winner
    execution = wait_for_status(execution, Status.SUCCESS)
    step = flaky(execution)
    assert step.decided_by.username == winner
    expected = (Status.SUCCESS, 2) if won == "retry" else (Status.IGNORED, 1)
    assert (step.status, step.attempts) == expected
    answered = Event.objects.filter(
        step_run=step, action__in=["strategy.retry", "strategy.ignored"], actor__isnull=False
    )
    assert answered.count() == 1, "one answer was applied"


def test_the_lists_filter_and_mark_the_executions_that_need_an_intervention(
    client, personas, shared_dir
):
    execution = waiting(personas, shared_dir)
    # The same pipeline again: its step passes now (the mark is there), nothing waits.
    fine = drive(run_pipeline(pipeline=execution.pipeline, user=personas.executor, inputs={}))
    assert fine.status == Status.SUCCESS
    # A parallel group's other stage may still run: the execution is RUNNING, a step waits.
    other = make_pipeline(
        personas.project,
        INTERVENTION_YAML.format(d=shared_dir / "other").replace("needs_hand", "needs_two"),
    )
    (shared_dir / "other").mkdir(mode=0o777)
    (shared_dir / "other").chmod(0o777)
    running = drive(run_pipeline(pipeline=other, user=personas.executor, inputs={}))
    assert running.status == Status.INTERVENTION_WAITING
    Execution.objects.filter(pk=running.pk).update(status=Status.RUNNING)
    auth = bearer(personas.viewer)
    project_list = f"{API}/projects/acme/web/executions"
    everything = client.get(project_list, headers=auth).json()["items"]
    assert [(row["id"], row["needs_intervention"]) for row in everything] == [
        (running.pk, True),
        (fine.pk, False),
        (execution.pk, True),
    ]
    needing = client.get(f"{project_list}?needs=intervention", headers=auth).json()["items"]
    assert [row["id"] for row in needing] == [running.pk, execution.pk]
    one = client.get(
        f"{API}/projects/acme/web/pipelines/needs_hand/executions?needs=intervention", headers=auth
    ).json()["items"]
    assert [row["id"] for row in one] == [execution.pk]
    answer(client, execution, flaky(execution), {"action": "ignore"}, bearer(personas.executor))
    needing = client.get(f"{project_list}?needs=intervention", headers=auth).json()["items"]
    assert [row["id"] for row in needing] == [running.pk], "an answered one needs nothing"
    bad = client.get(f"{project_list}?needs=coffee", headers=auth)
    assert bad.status_code == 400
    assert bad.json()["errors"]["needs"] == "Unknown need 'coffee'. Use: intervention."
    schema = client.get(f"{API}/schema").json()
    parameters = schema["paths"]["/api/v1/projects/{org}/{project}/executions"]["get"]["parameters"]
    needs = next(p for p in parameters if p["name"] == "needs")
    assert "intervention (needs intervention)" in needs["description"]
