"""Attempts in the API (issue 13 point 5, issue 17 point 1 "execution detail with stages,
steps and attempts"): the execution detail lists each attempt of a step with its own result,
as the page's attempt selector does (``presenters.attempts_context``), and the ranged step log
reads one attempt's log (``?attempt=N``), 404 for an attempt the step has not had."""

from __future__ import annotations

from pathlib import Path

import pytest

from api.tokens import create_token
from executions.models import StepAttempt, StepRun
from executions.services import run_pipeline
from executions.states import Status
from tests.helpers.factories import make_pipeline
from tests.helpers.runs import drive

API = "/api/v1"

# Stage ``flaky``: fails (exit 5) on its first two attempts, passes on the third; retried at
# once up to 3 times. Each attempt prints its number.
TWICE_THEN_PASS_YAML = """
pipeline:
  name: Twice then pass
  identifier: twice
  stages:
    - stage:
        identifier: flaky
        steps:
          - step:
              identifier: run
              type: ShellScript
              failure_strategies:
                - on_failure: {{errors: [script], action: {{type: retry, retry: {{count: 3}}}}}}
              spec:
                script: |
                  n=$(cat {d}/count 2>/dev/null || echo 0); n=$((n+1)); echo "$n" > {d}/count
                  echo "attempt $n says hello"
                  [ "$n" -ge 3 ] || exit 5
"""


def bearer(user) -> dict[str, str]:
    return {"Authorization": f"Bearer {create_token(user=user, name='test', scope='read')[1]}"}


@pytest.fixture
def retried(personas, shared_dir: Path):
    """An execution whose step failed twice, then passed (run here)."""
    pipeline = make_pipeline(personas.project, TWICE_THEN_PASS_YAML.format(d=shared_dir))
    execution = drive(run_pipeline(pipeline=pipeline, user=personas.executor, inputs={}))
    assert execution.status == Status.SUCCESS, execution.error
    step = StepRun.objects.get(execution=execution)
    assert StepAttempt.objects.filter(step_run=step).count() == 2
    return execution, step


def test_a_step_that_failed_twice_then_passed_lists_three_attempts(client, personas, retried):
    execution, step = retried
    detail = client.get(f"{API}/executions/{execution.pk}", headers=bearer(personas.viewer))
    assert detail.status_code == 200, detail.content
    [shown] = detail.json()["stages"][0]["steps"]
    assert (shown["status"], shown["attempts"], shown["attempts_planned"]) == (
        Status.SUCCESS,
        3,
        4,
    )
    history = shown["attempt_history"]
    assert [
        (a["number"], a["status"], a["exit_code"], a["error_class"], a["latest"]) for a in history
    ] == [
        (1, Status.FAILED, 5, "script", False),
        (2, Status.FAILED, 5, "script", False),
        (3, Status.SUCCESS, 0, "", True),
    ]
    for attempt in history:
        assert attempt["started_at"] and attempt["finished_at"], attempt
        assert attempt["started_at"] <= attempt["finished_at"]
        assert attempt["worker"], "where it ran"
        assert attempt["log_bytes"] == len(f"attempt {attempt['number']} says hello\n")
    assert history[0]["finished_at"] <= history[1]["started_at"] <= history[2]["started_at"]
    assert history[0]["log_url"] == (
        f"{API}/executions/{execution.pk}/steps/{step.pk}/log?attempt=1"
    )


def test_an_earlier_attempts_log_holds_only_that_attempts_text(client, personas, retried):
    execution, step = retried
    auth = bearer(personas.viewer)
    url = f"{API}/executions/{execution.pk}/steps/{step.pk}/log"
    first = client.get(f"{url}?attempt=1", headers=auth)
    assert first.status_code == 200, first.content
    body = first.json()
    assert body["text"] == "attempt 1 says hello\n"
    assert (body["attempt"], body["latest"], body["exit_code"]) == (1, False, 5)
    assert body["complete"] and not body["more"]
    second = client.get(f"{url}?attempt=2&after=8", headers=auth).json()
    assert (second["text"], second["offset"]) == ("2 says hello\n", 8)
    latest = client.get(url, headers=auth).json()
    assert latest["text"] == "attempt 3 says hello\n"
    assert (latest["attempt"], latest["latest"], latest["exit_code"]) == (3, True, 0)


@pytest.mark.parametrize(
    ("query", "status", "says"),
    [
        ("attempt=4", 404, "has no attempt 4: it has attempts 1 to 3"),
        ("attempt=0", 400, "attempt"),
        ("attempt=two", 400, "attempt"),
        ("attempt=40000", 400, "attempt"),
    ],
)
def test_an_attempt_the_step_has_not_had_is_refused(client, personas, retried, query, status, says):
    execution, step = retried
    got = client.get(
        f"{API}/executions/{execution.pk}/steps/{step.pk}/log?{query}",
        headers=bearer(personas.viewer),
    )
    assert got.status_code == status, got.content
    body = got.json()
    assert says in (body["detail"] if status == 404 else " ".join(body["errors"]))


def test_a_step_that_ran_once_has_one_attempt(client, personas, shared_dir):
    pipeline = make_pipeline(personas.project, TWICE_THEN_PASS_YAML.format(d=shared_dir))
    count = shared_dir / "count"
    count.write_text("2\n")  # its first attempt is the passing one
    count.chmod(0o666)  # the step may run as the step user
    execution = drive(run_pipeline(pipeline=pipeline, user=personas.executor, inputs={}))
    [shown] = client.get(
        f"{API}/executions/{execution.pk}", headers=bearer(personas.viewer)
    ).json()["stages"][0]["steps"]
    assert [(a["number"], a["status"], a["latest"]) for a in shown["attempt_history"]] == [
        (1, Status.SUCCESS, True)
    ]
    assert shown["attempts_planned"] == 4, "the rule gives it up to three more"
    missing = client.get(
        f"{API}/executions/{execution.pk}/steps/{shown['id']}/log?attempt=2",
        headers=bearer(personas.viewer),
    )
    assert missing.status_code == 404 and "it has attempt 1 only" in missing.json()["detail"]
