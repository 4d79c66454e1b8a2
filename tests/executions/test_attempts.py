"""Attempts of a step (issue 13 point 5, SPEC §9): every attempt that a failure strategy's retry
starts keeps its own log, exit code, error class, start and end; the execution page shows the
latest with "attempt N of M", a picker whose earlier attempts' logs load by htmx, and a waiting
retry's "next attempt in". Real steps, run here by the real engine (``drive``)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from executions import engine, presenters
from executions.models import LogChunk, PendingWait, StageRun, StepRun
from executions.services import run_pipeline
from executions.states import Status
from pipelines.spec import parse_pipeline
from tests.helpers.factories import make_pipeline
from tests.helpers.pages import as_user, failed_serial, flaky_fetch_yaml, htmx, page_url
from tests.helpers.runs import drive

pytestmark = pytest.mark.database  # run again on PostgreSQL by the integration suite


def flaky(personas, shared_dir: Path, intervals: str = ""):
    pipeline = make_pipeline(personas.project, flaky_fetch_yaml(shared_dir, intervals))
    execution = run_pipeline(pipeline=pipeline, user=personas.executor, inputs={})
    return execution, StepRun.objects.get(execution=execution, identifier="fetch")


def log_of(step: StepRun, attempt: int) -> str:
    chunks = LogChunk.objects.filter(step_run=step, attempt=attempt).order_by("seq")
    return "".join(chunks.values_list("text", flat=True))


def log_url(step: StepRun, attempt: int | None = None, name: str = "execution_step_log") -> str:
    url = reverse(name, args=[step.execution_id, step.pk])
    return f"{url}?attempt={attempt}" if attempt is not None else url


def passed_third_time(personas, shared_dir: Path) -> StepRun:
    execution, step = flaky(personas, shared_dir)
    assert drive(execution).status == Status.SUCCESS
    return StepRun.objects.get(pk=step.pk)


def test_a_step_failing_twice_then_passing_keeps_three_attempts(personas, shared_dir):
    step = passed_third_time(personas, shared_dir)
    assert (step.status, step.attempts, step.exit_code, step.error) == (Status.SUCCESS, 3, 0, "")
    rows = presenters.attempts_of(step)
    assert [(r.number, r.status, r.exit_code, r.error_class, r.latest) for r in rows] == [
        (1, Status.FAILED, 11, "script", False),
        (2, Status.FAILED, 12, "script", False),
        (3, Status.SUCCESS, 0, "", True),
    ]
    assert [r.error for r in rows] == ["exit code 11", "exit code 12", ""]
    # Each attempt has its own start and end, one after the other.
    moments = [moment for r in rows for moment in (r.started_at, r.finished_at)]
    assert None not in moments and moments == sorted(moments)
    assert all(r.worker for r in rows) and all(r.log_bytes > 0 for r in rows)
    # Each attempt has its own log, and only its own.
    for number in (1, 2, 3):
        log = log_of(step, number)
        assert f"attempt {number} says hello" in log
        assert [n for n in (1, 2, 3) if f"attempt {n} says" in log] == [number]


def test_the_page_shows_the_latest_attempt_of_its_plan_and_a_picker(client, personas, shared_dir):
    step = passed_third_time(personas, shared_dir)
    html = as_user(client, personas.viewer).get(f"{page_url(step.execution)}?step={step.pk}")
    assert html.status_code == 200
    page = html.content.decode()
    assert "Attempt 3 of 3" in page
    picker = page[page.index('aria-label="Attempts of this step"') :]
    picker = picker[: picker.index("</nav>")]
    links = re.findall(r'data-log-url="([^"]+)"', picker)
    assert links == [log_url(step, n).replace("&", "&amp;") for n in (1, 2, 3)]
    assert re.search(r'aria-current="true">\s*<span class="attempt-number">Attempt 3<', picker)
    # The open log is the latest attempt's.
    lines = page[page.index('id="log-lines"') :]
    lines = lines[: lines.index("</pre>")]
    assert "attempt 3 says hello" in lines and "attempt 1 says" not in lines


def test_an_earlier_attempts_log_loads_by_htmx_with_its_own_facts(client, personas, shared_dir):
    step = passed_third_time(personas, shared_dir)
    as_user(client, personas.viewer)
    answer = client.get(log_url(step, 1), headers=htmx("log-panel"))
    assert answer.status_code == 200
    panel = answer.content.decode()
    assert "attempt 1 says hello" in panel
    assert "attempt 2 says" not in panel and "attempt 3 says" not in panel
    assert "Attempt 1 of 3" in panel and "an earlier attempt (the latest is 3)" in panel
    assert "script failure: exit code 11" in panel
    assert '<dd class="exit-code">11</dd>' in panel
    assert "Following the log" not in panel  # an earlier attempt's log is complete
    # Its raw log, and the links of its lines, name the attempt.
    assert f'{log_url(step, 1, "execution_step_log_download")}" download' in panel
    assert f"?step={step.pk}&amp;attempt=1" in panel
    download = client.get(log_url(step, 2, "execution_step_log_download"))
    text = b"".join(download.streaming_content).decode()
    assert "attempt 2 says hello" in text and "attempt 3" not in text
    assert "fetch-attempt2.log" in download["Content-Disposition"]
    # Without htmx, the page opens at that attempt.
    plain = client.get(log_url(step, 2))
    assert plain.status_code == 302
    assert plain["Location"].endswith(f"?step={step.pk}&attempt=2#log-panel")
    page = client.get(plain["Location"]).content.decode()
    assert "Attempt 2 of 3" in page and "attempt 2 says hello" in page


def test_an_unknown_attempt_is_a_404_that_names_the_attempts(client, personas, shared_dir):
    step = passed_third_time(personas, shared_dir)
    as_user(client, personas.viewer)
    for url in (log_url(step, 4), log_url(step, 7, "execution_step_log_download")):
        missing = client.get(url, headers=htmx("log-panel"))
        assert missing.status_code == 404
        assert "Step &#x27;fetch&#x27; has no attempt" in missing.content.decode() or (
            "Step 'fetch' has no attempt" in missing.content.decode()
        )
        assert "attempts 1 to 3" in missing.content.decode()
    bad = client.get(log_url(step) + "?attempt=first", headers=htmx("log-panel"))
    assert bad.status_code == 400
    assert "'attempt' must be an attempt number (1, 2, …), not 'first'" in bad.content.decode()
    assert client.get(f"{page_url(step.execution)}?step={step.pk}&attempt=0").status_code == 400


def test_an_attempts_log_is_for_those_who_may_see_the_execution(client, personas, shared_dir):
    step = passed_third_time(personas, shared_dir)
    for user, status in (
        (personas.viewer, 200),
        (personas.executor, 200),
        (personas.stranger, 404),
    ):
        as_user(client, user)
        answer = client.get(log_url(step, 1), headers=htmx("log-panel"))
        download = client.get(log_url(step, 1, "execution_step_log_download"))
        assert (answer.status_code, download.status_code) == (status, status)
        if status == 200:
            assert "attempt 1 says hello" in answer.content.decode()
            assert "attempt 3 says" not in answer.content.decode()
    client.logout()
    assert client.get(log_url(step, 1), headers=htmx("log-panel")).status_code == 302


def test_a_waiting_retry_shows_when_its_next_attempt_starts(client, personas, shared_dir):
    execution, step = flaky(personas, shared_dir, intervals="10m")
    engine.run_step(step.pk)  # the first attempt fails: the next one waits 10 minutes
    step = StepRun.objects.get(pk=step.pk)
    wait = PendingWait.objects.get(step_run=step, state=PendingWait.State.PENDING)
    assert (step.status, wait.kind) == (Status.QUEUED, PendingWait.Kind.RETRY)
    as_user(client, personas.viewer)
    page = client.get(f"{page_url(execution)}?step={step.pk}").content.decode()
    assert "Attempt 2 of 3" in page
    found = re.search(
        r'next attempt in <time datetime="([^"]+)" data-countdown="(\d+)">([^<]+)</time>', page
    )
    assert found is not None, "no 'next attempt in' on the page"
    assert found.group(1) == wait.due_at.isoformat()
    assert 590 <= int(found.group(2)) <= 600
    assert found.group(3) in ("9 min 59 s", "10 min 00 s", "9 min 58 s")
    # The failed first attempt is one click away, with its exit code.
    assert re.search(r"Attempt 1</span>\s*<span class=\"badge status-failed\">Failed</span>", page)
    assert "exit 11" in page


def test_a_followed_log_moves_to_the_next_attempt_once_it_has_begun(client, personas, shared_dir):
    execution, step = flaky(personas, shared_dir, intervals="10m")
    as_user(client, personas.viewer)
    panel = client.get(log_url(step), headers=htmx("log-panel")).content.decode()
    # The page follows attempt 1 (the step is queued for it): its poll names the attempt.
    assert f"{log_url(step)}?after=-1&amp;attempt=1" in panel
    engine.run_step(step.pk)  # attempt 1 fails; attempt 2 is queued
    poll = client.get(f"{log_url(step)}?after=-1&attempt=1", headers=htmx("log-lines"))
    assert poll.status_code == 200
    assert (poll["HX-Retarget"], poll["HX-Reswap"]) == ("#log-panel", "outerHTML")
    fresh = poll.content.decode()
    assert fresh.startswith('<section id="log-panel"')
    assert "Attempt 2 of 3" in fresh and "next attempt in" in fresh
    assert "attempt 1 says hello" not in fresh  # attempt 2 has no output yet
    assert "?after=-1&amp;attempt=2" in fresh


def test_a_pipeline_without_strategies_shows_no_attempts_and_pays_no_query(client, personas):
    execution = failed_serial(personas)
    step = StepRun.objects.get(execution=execution, identifier="rollout")
    as_user(client, personas.viewer)
    with CaptureQueriesContext(connection) as queries:
        page = client.get(f"{page_url(execution)}?step={step.pk}").content.decode()
        poll = client.get(f"{log_url(step)}?after=-1", headers=htmx("log-lines"))
    assert poll.status_code == 200
    assert "Attempt 1 of" not in page and "Attempts of this step" not in page
    assert "next attempt in" not in page and "attempt=" not in page
    touched = [q["sql"] for q in queries.captured_queries if "stepattempt" in q["sql"].lower()]
    assert touched == [], "a step that never retried must not look for earlier attempts"
    assert not [q for q in queries.captured_queries if "pendingwait" in q["sql"].lower()]


def test_the_admin_shows_a_steps_earlier_attempts_read_only(client, personas, shared_dir):
    step = passed_third_time(personas, shared_dir)
    as_user(client, personas.admin)  # staff, and Project Admin of the step's project
    page = client.get(reverse("admin:executions_steprun_change", args=[step.pk]))
    assert page.status_code == 200
    assert "exit code 11" in page.content.decode() and "exit code 12" in page.content.decode()
    listing = client.get(reverse("admin:executions_stepattempt_changelist")).content.decode()
    assert "fetch / attempt 1" in listing and "fetch / attempt 2" in listing
    assert client.get(reverse("admin:executions_stepattempt_add")).status_code == 403
    as_user(client, personas.stranger)  # not staff
    assert client.get(reverse("admin:executions_stepattempt_changelist")).status_code == 302


PLANNED_YAML = """
pipeline:
  name: Planned
  identifier: planned
  failure_strategies:
    - on_failure: {errors: [worker_lost], action: {type: retry, retry: {count: 1}}}
  stages:
    - stage:
        identifier: deploy
        failure_strategies:
          - on_failure: {errors: [timeout], action: {type: retry, retry: {count: 2}}}
        steps:
          - step:
              identifier: roll
              type: ShellScript
              failure_strategies:
                - on_failure: {errors: [script], exit_codes: [75], action: {type: retry, retry: {count: 4}}}
                - on_failure: {errors: [all], action: {type: ignore}}
              spec: {script: "true"}
          - step: {identifier: plain, type: ShellScript, spec: {script: "true"}}
          - step:
              identifier: gate
              type: Approval
              timeout: 1h
              failure_strategies:
                - on_failure: {errors: [approval_rejected], action: {type: retry, retry: {count: 2}}}
              spec: {message: Go?}
"""


def row(number: int, error_class: str = "", exit_code: int | None = None) -> presenters.AttemptRow:
    return presenters.AttemptRow(
        number, "FAILED" if error_class else "RUNNING", "", exit_code, error_class, "", "",
        None, None, None, 0, False, False,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("step", "rows", "planned"),
    [
        # Before any failure: the most a rule could give (script exit 75: 4 retries).
        ("roll", [row(1)], 5),
        # Its latest failure decides: exit 75 (step rule, 4), a timeout ('all' at step level
        # is nearer than the stage's timeout rule: ignore, no retry), another exit code.
        ("roll", [row(1, "script", 75), row(2)], 5),
        ("roll", [row(1, "timeout"), row(2)], 2),
        ("roll", [row(1, "script", 1)], 1),
        # No step rule: the stage's timeout retry (2), else the pipeline's worker_lost (1).
        ("plain", [row(1)], 3),
        ("plain", [row(1, "worker_lost"), row(2)], 2),
        ("plain", [row(1, "script", 3)], 1),
        # An approval: its rejection retried twice.
        ("gate", [row(1)], 3),
        # Never fewer than it has had (an intervention's Retry past the plan).
        ("plain", [row(1, "timeout"), row(2, "timeout"), row(3, "timeout"), row(4)], 4),
    ],
)
def test_planned_attempts_come_from_the_rule_that_decides(step, rows, planned):
    spec = parse_pipeline(PLANNED_YAML)
    run = StepRun(identifier=step, stage_run=StageRun(identifier="deploy"))
    assert presenters.planned_attempts(spec, run, rows) == planned
