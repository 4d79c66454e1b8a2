"""Answering a step waiting for intervention from the execution page (SPEC §9): the banner,
the dialog (htmx and a page of its own), who may answer, each answer end to end, two answers
at once, a timeout's outcome; and the executions lists' marker and filter."""

from __future__ import annotations

import re
import textwrap
import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from executions import engine
from executions.models import Event, Execution, PendingWait, Status, StepRun
from executions.services import run_pipeline
from executions.states import TERMINAL
from tests.helpers.factories import make_pipeline
from tests.helpers.pages import as_user, htmx, page_url
from tests.helpers.runs import drive, wait_for_status


def mend_yaml(script: str, on_timeout: str = "mark_as_failure", identifier: str = "mend") -> str:
    body = textwrap.indent(textwrap.dedent(script).strip(), " " * 18)
    return f"""
pipeline:
  name: Mend
  identifier: {identifier}
  stages:
    - stage:
        identifier: flaky
        name: Flaky
        steps:
          - step:
              identifier: run
              name: Fetch
              type: ShellScript
              failure_strategies:
                - on_failure: {{errors: [all], action: {{type: manual_intervention, timeout: 30m, on_timeout: {{type: {on_timeout}}}}}}}
              spec:
                script: |
{body}
    - stage:
        identifier: next
        name: Next
        steps:
          - step: {{identifier: echo, name: Echo, type: ShellScript, spec: {{script: echo next ran}}}}
"""


FAILS = 'echo "disk <b>full</b>" >&2; exit 4'


def waiting(personas, script: str = FAILS, **kwargs) -> Execution:
    pipeline = make_pipeline(personas.project, mend_yaml(script, **kwargs))
    execution = drive(run_pipeline(pipeline=pipeline, user=personas.executor, inputs={}))
    assert execution.status == Status.INTERVENTION_WAITING
    return execution


def fetch(execution: Execution) -> StepRun:
    return StepRun.objects.get(execution=execution, stage_run__identifier="flaky")


def url(execution: Execution, **params: str) -> str:
    base = reverse("execution_intervention", args=[execution.pk])
    return base + ("?" + "&".join(f"{k}={v}" for k, v in params.items()) if params else "")


ANSWERS = ("retry", "ignore", "mark_as_success", "mark_as_failure", "abort")


def answer_events(execution: Execution) -> list[Event]:
    return list(
        Event.objects.filter(
            execution=execution, step_run__isnull=False, actor__isnull=False
        ).order_by("id")
    )


def banner(html: str) -> str:
    start = html.index('id="interventions"')
    return html[start : html.index("</section>", start)]


# --- the banner -------------------------------------------------------------------------------


def test_the_banner_shows_the_error_the_time_left_and_the_answers_to_an_executor(client, personas):
    execution = waiting(personas)
    step = fetch(execution)
    PendingWait.objects.filter(step_run=step).update(
        due_at=timezone.now() + timedelta(minutes=25, seconds=30)
    )
    html = banner(as_user(client, personas.executor).get(page_url(execution)).content.decode())
    assert "Flaky › Fetch needs intervention." in html
    assert '<span class="intervention-error">exit code 4</span>' in html
    assert re.search(r'<strong class="time-left">25 min \d\d s left</strong>', html), html
    assert "then, without an answer: <strong>mark as failure</strong>" in html
    for answer, label in zip(
        ANSWERS, ("Retry", "Ignore", "Mark as success", "Mark as failure", "Abort"), strict=True
    ):
        link = url(execution, step="flaky.run", action=answer).replace("&", "&amp;")
        assert (
            f'id="intervene-{step.pk}-{answer}" href="{link}" hx-get="{link}" '
            f'hx-target="#modal-body" aria-haspopup="dialog">{label}</a>'
        ) in html
    assert "disabled" not in html


@pytest.mark.parametrize("persona", ["viewer", "approver"])
def test_who_may_not_execute_sees_the_banner_with_the_answers_disabled(client, personas, persona):
    execution = waiting(personas)
    html = banner(
        as_user(client, getattr(personas, persona)).get(page_url(execution)).content.decode()
    )
    assert "Flaky › Fetch needs intervention." in html and "exit code 4" in html
    assert html.count(" disabled aria-describedby=") == 5 and "hx-get" not in html
    assert "You need the Execute permission on pipeline mend." in html


def test_a_page_without_interventions_has_no_banner(client, personas):
    pipeline = make_pipeline(personas.project, mend_yaml("echo fine"))
    execution = drive(run_pipeline(pipeline=pipeline, user=personas.executor, inputs={}))
    assert execution.status == Status.SUCCESS
    html = as_user(client, personas.executor).get(page_url(execution)).content.decode()
    assert 'id="interventions"' not in html


# --- who may answer ---------------------------------------------------------------------------


@pytest.mark.parametrize("hx", [False, True], ids=["page", "htmx"])
def test_only_those_with_execute_may_answer_and_strangers_see_nothing(client, personas, hx):
    execution = waiting(personas)
    headers = htmx("modal-body") if hx else {}
    dialog = url(execution, step="flaky.run", action="ignore")
    post = {"step": "flaky.run", "action": "ignore"}
    for name, status in {"viewer": 403, "approver": 403, "stranger": 404}.items():
        as_user(client, getattr(personas, name))
        got = client.get(dialog, headers=headers)
        posted = client.post(url(execution), post, headers=headers)
        assert (got.status_code, posted.status_code) == (status, status), name
        if status == 403:
            for response in (got, posted):
                text = response.content.decode()
                assert "You need the Execute permission on pipeline mend." in text
                assert 'name="action"' not in text, "no answer offered"
        else:
            assert "Fetch" not in posted.content.decode()
    assert fetch(execution).status == Status.INTERVENTION_WAITING
    assert answer_events(execution) == []
    as_user(client, personas.admin)
    assert client.get(dialog, headers=headers).status_code == 200


# --- the dialog -------------------------------------------------------------------------------


def test_the_dialog_says_what_the_answer_does_and_asks_for_a_comment(client, personas):
    execution = waiting(personas)
    as_user(client, personas.executor)
    html = client.get(
        url(execution, step="flaky.run", action="mark_as_failure"), headers=htmx()
    ).content.decode()
    assert '<h2 id="modal-title">Mark as failure Flaky › Fetch</h2>' in html
    assert "ends the step as Failed: its stage fails, and the run with it." in html
    assert "exit code 4" in html and "then, without an answer: mark as failure" in html
    assert (
        'name="comment"' in html and '<input type="hidden" name="step" value="flaky.run">' in html
    )
    assert '<button type="submit" name="action" value="mark_as_failure"' in html
    assert f'hx-post="{url(execution)}"' in html
    # Without JavaScript the same dialog is a page of its own, with a way back.
    page = client.get(url(execution, step="flaky.run", action="retry")).content.decode()
    assert '<h1 id="modal-title">Retry Flaky › Fetch</h1>' in page and "<html" in page
    assert f'<form method="post" action="{url(execution)}">' in page
    assert f'href="{page_url(execution)}">Back to the execution</a>' in page


RETRY_THEN_PASS = """\
if [ -e {d}/failed ]; then echo "second attempt passes"; else touch {d}/failed; echo "disk <b>full</b>" >&2; exit 4; fi
"""
# What each answer leaves: the step, the execution (once it ran to its end), the event.
OUTCOMES = {
    "retry": (Status.SUCCESS, Status.SUCCESS, "strategy.retry"),
    "ignore": (Status.IGNORED, Status.SUCCESS, "strategy.ignored"),
    "mark_as_success": (Status.SUCCESS, Status.SUCCESS, "strategy.marked_as_success"),
    "mark_as_failure": (Status.FAILED, Status.FAILED, "strategy.marked_as_failure"),
    "abort": (Status.ABORTED, Status.ABORTED, "strategy.aborted"),
}
LABELS = {
    "retry": "Retry",
    "ignore": "Ignore",
    "mark_as_success": "Mark as success",
    "mark_as_failure": "Mark as failure",
    "abort": "Abort",
}


@pytest.mark.parametrize("answer", ANSWERS)
def test_each_answer_does_what_it_says_end_to_end(client, personas, shared_dir, answer):
    execution = waiting(personas, RETRY_THEN_PASS.format(d=shared_dir))
    step_status, final, event_action = OUTCOMES[answer]
    as_user(client, personas.executor)
    response = client.post(
        url(execution),
        {"step": "flaky.run", "action": answer, "comment": "disk <i>swapped</i>"},
        headers=htmx(),
    )
    assert response.status_code == 200 and response["HX-Redirect"] == page_url(execution)
    execution = drive(execution)
    step = fetch(execution)
    assert (step.status, execution.status) == (step_status, final)
    assert (step.decided_by, step.comment) == (personas.executor, "disk <i>swapped</i>")
    assert step.attempts == (2 if answer == "retry" else 1)
    next_echo = StepRun.objects.get(execution=execution, identifier="echo")
    assert (next_echo.status == Status.SUCCESS) is (final == Status.SUCCESS)
    [event] = answer_events(execution)
    assert (event.action, event.actor) == (event_action, personas.executor)
    assert "answered by executor: disk <i>swapped</i>" in event.message
    assert PendingWait.objects.get(step_run=step).state == PendingWait.State.CANCELLED
    html = client.get(page_url(execution)).content.decode()
    assert f"{LABELS[answer]}: step &#x27;Flaky › Fetch&#x27; of #1" in html  # the flash message
    assert f"executor chose <strong>{LABELS[answer]}</strong>, <time" in banner(
        html
    ) and "“disk &lt;i&gt;swapped&lt;/i&gt;”." in banner(html)
    assert "needs intervention." not in html
    assert "Approved by" not in html, "an answered intervention is no approval"


def test_an_answer_without_javascript_goes_back_to_the_page(client, personas):
    execution = waiting(personas)
    response = as_user(client, personas.admin).post(
        url(execution), {"step": "flaky.run", "action": "ignore"}
    )
    assert response.status_code == 302 and response["Location"] == page_url(execution)
    assert fetch(execution).status == Status.IGNORED


@pytest.mark.parametrize(
    ("post", "status", "message"),
    [
        (
            {"step": "flaky.run", "action": "explode"},
            400,
            "&#x27;explode&#x27; is not an answer (use retry, ignore, mark_as_success, "
            "mark_as_failure, abort).",
        ),
        ({"step": "flaky.run"}, 400, "&#x27;&#x27; is not an answer"),
        ({"action": "retry"}, 400, "Say which step to answer (STAGE.STEP)."),
        ({"step": "ghost", "action": "retry"}, 404, "Execution #1 has no step &#x27;ghost&#x27;."),
        (
            {"step": "next.echo", "action": "retry"},
            409,
            "Nothing to answer: &#x27;next.echo&#x27; is not started",
        ),
        (
            {"step": "flaky.run", "action": "retry", "comment": "x" * 2001},
            400,
            "at most 2000 characters",
        ),
    ],
    ids=["tampered-answer", "no-answer", "no-step", "unknown-step", "not-waiting", "long-comment"],
)
def test_a_bad_answer_is_refused_naming_the_problem_and_changes_nothing(
    client, personas, post, status, message
):
    execution = waiting(personas)
    response = as_user(client, personas.executor).post(url(execution), post, headers=htmx())
    assert response.status_code == status
    assert response["HX-Retarget"] == "#modal-body"
    assert message in response.content.decode()
    assert fetch(execution).status == Status.INTERVENTION_WAITING
    assert answer_events(execution) == []
    assert PendingWait.objects.get(step_run=fetch(execution)).state == PendingWait.State.PENDING


@pytest.mark.parametrize(
    ("query", "status", "message"),
    [
        ({"step": "flaky.run", "action": "bogus"}, 400, "&#x27;bogus&#x27; is not an answer"),
        ({"action": "retry"}, 400, "Say which step to answer (STAGE.STEP)."),
        ({"step": "nope", "action": "retry"}, 404, "has no step &#x27;nope&#x27;"),
    ],
)
def test_a_bad_dialog_link_is_refused_naming_the_problem(client, personas, query, status, message):
    execution = waiting(personas)
    response = as_user(client, personas.executor).get(url(execution, **query), headers=htmx())
    assert response.status_code == status and message in response.content.decode()
    assert 'name="action"' not in response.content.decode()


# --- two answers at once ----------------------------------------------------------------------


def test_the_second_answer_is_a_conflict_saying_what_the_step_is_now(client, personas):
    execution = waiting(personas)
    # Both open the dialog; the executor answers first.
    as_user(client, personas.admin)
    assert client.get(url(execution, step="flaky.run", action="retry")).status_code == 200
    first = Client()
    first.force_login(personas.executor)
    first.post(url(execution), {"step": "flaky.run", "action": "ignore", "comment": "known"})
    response = client.post(url(execution), {"step": "flaky.run", "action": "retry"}, headers=htmx())
    html = response.content.decode()
    assert response.status_code == 409 and response["HX-Retarget"] == "#modal-body"
    assert "Nothing to answer: &#x27;flaky.run&#x27; is failed, ignored" in html
    assert "<strong>Flaky › Fetch</strong> is now" in html and "Failed, ignored</span>" in html
    assert "answered by executor" in html and "“known”" in html
    assert "executor chose Ignore" in html
    assert 'name="action"' not in html, "nothing left to answer"
    step = fetch(execution)
    assert (step.status, step.decided_by, step.attempts) == (Status.IGNORED, personas.executor, 1)
    assert [e.action for e in answer_events(execution)] == ["strategy.ignored"]
    # Without JavaScript: the same, as a page.
    page = client.post(url(execution), {"step": "flaky.run", "action": "retry"})
    assert page.status_code == 409 and "is now" in page.content.decode()


@pytest.mark.engine  # a real worker; the integration suite runs it on PostgreSQL
def test_two_answers_at_the_same_moment_one_wins_the_other_is_told(worker, personas):
    pipeline = make_pipeline(personas.project, mend_yaml(FAILS))
    execution = wait_for_status(
        run_pipeline(pipeline=pipeline, user=personas.executor, inputs={}),
        Status.INTERVENTION_WAITING,
    )
    barrier = threading.Barrier(2)
    results: dict[str, object] = {}

    def answer(user, action: str) -> None:
        try:
            client = Client()
            client.force_login(user)
            barrier.wait()
            response = client.post(url(execution), {"step": "flaky.run", "action": action})
            results[user.username] = (response.status_code, response.content.decode())
        except Exception as exc:  # noqa: BLE001 - reported below
            results[user.username] = exc
        finally:
            connection.close()

    threads = [
        threading.Thread(target=answer, args=(personas.executor, "mark_as_failure")),
        threading.Thread(target=answer, args=(personas.admin, "ignore")),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    statuses = sorted(r[0] for r in results.values() if isinstance(r, tuple))
    assert statuses == [302, 409], results
    winner = next(name for name, r in results.items() if r[0] == 302)  # type: ignore[index]
    loser_html = next(r[1] for r in results.values() if r[0] == 409)  # type: ignore[index]
    step = fetch(execution)
    assert step.decided_by.username == winner
    assert f"is {step.get_status_display().lower()}" in loser_html
    assert f"answered by {winner}" in loser_html
    assert len(answer_events(execution)) == 1
    # Let the worker finish the run before the database is reset (a flush while the worker
    # still writes can deadlock on PostgreSQL).
    wait_for_status(execution, TERMINAL)


# --- a timeout ------------------------------------------------------------------------------


def test_a_timed_out_intervention_says_what_its_timeout_did(client, personas):
    execution = waiting(personas, on_timeout="mark_as_failure")
    step = fetch(execution)
    PendingWait.objects.filter(step_run=step).update(
        created_at=timezone.now() - timedelta(minutes=30, seconds=1),
        due_at=timezone.now() - timedelta(seconds=1),
    )
    html = as_user(client, personas.executor).get(page_url(execution)).content.decode()
    assert "<strong>mark as failure</strong> applies at the scheduler's next round" in banner(
        html
    ), "overdue, not yet applied"
    engine.reap()
    execution = drive(execution)
    assert (fetch(execution).status, execution.status) == (Status.FAILED, Status.FAILED)
    html = banner(client.get(page_url(execution)).content.decode())
    assert "nobody intervened within 30 min 00 s: marked as failure (on_timeout)" in html
    assert "needs intervention." not in html
    # A late answer is told the same.
    response = client.post(url(execution), {"step": "flaky.run", "action": "retry"}, headers=htmx())
    assert response.status_code == 409
    assert "Nobody intervened within 30 min 00 s: marked as failure" in response.content.decode()


# --- the executions lists ---------------------------------------------------------------------

MARKER = "⚑ step waits for intervention</a>"


def list_url(personas, pipeline=None, **params: str) -> str:
    org, slug = personas.project.organization.slug, personas.project.slug
    base = (
        reverse("pipeline", args=[org, slug, pipeline.identifier])
        if pipeline is not None
        else reverse("project", args=[org, slug])
    )
    return base + ("?" + "&".join(f"{k}={v}" for k, v in params.items()) if params else "")


def listed(html: str) -> list[int]:
    """The ids of the executions listed, in order."""
    return [int(pk) for pk in re.findall(r'<a class="seq" href="/executions/(\d+)/">', html)]


def test_the_lists_mark_and_filter_the_executions_that_need_an_intervention(client, personas):
    execution = waiting(personas)
    pipeline = execution.pipeline
    fine = drive(
        run_pipeline(
            pipeline=make_pipeline(personas.project, mend_yaml("echo ok", identifier="mend_ok")),
            user=personas.executor,
            inputs={},
        )
    )
    assert fine.status == Status.SUCCESS
    # A parallel group's other stage may still run: the execution is RUNNING, a step waits.
    running = waiting(personas, identifier="mend_two")
    Execution.objects.filter(pk=running.pk).update(status=Status.RUNNING)
    as_user(client, personas.viewer)
    html = client.get(list_url(personas)).content.decode()
    rows = {
        number: row
        for number, row in zip(listed(html), html.split('<a class="seq"')[1:], strict=True)
    }
    marker = f'<a class="chip needs-intervention" href="{page_url(execution)}#interventions"'
    assert marker in html and html.count(MARKER) == 2
    assert len(rows) == 3 and MARKER not in rows[fine.pk].split("</tr>")[0]
    assert (
        '<select name="needs"' in html and '<option value="intervention">Needs intervention' in html
    )
    for pipeline_arg in (None, pipeline):
        filtered = client.get(list_url(personas, pipeline_arg, needs="intervention"))
        numbers = listed(filtered.content.decode())
        expected = [execution] if pipeline_arg else [running, execution]
        assert numbers == [e.pk for e in expected], pipeline_arg
        assert "Clear filters" in filtered.content.decode()
    answered = Client()
    answered.force_login(personas.executor)
    answered.post(url(execution), {"step": "flaky.run", "action": "ignore"})
    assert (
        listed(client.get(list_url(personas, pipeline, needs="intervention")).content.decode())
        == []
    )


def test_a_bad_needs_value_is_refused_like_the_other_filters(client, personas):
    waiting(personas)
    response = as_user(client, personas.viewer).get(list_url(personas, needs="coffee"))
    html = response.content.decode()
    assert response.status_code == 400
    assert "These filters cannot be used:" in html
    assert "Needs: Unknown need &#x27;coffee&#x27;. Use: intervention." in html
    assert listed(html) == []


def test_the_markers_cost_no_query_per_row(client, personas):
    waiting(personas)
    as_user(client, personas.viewer)

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert client.get(list_url(personas)).status_code == 200
        return len(captured.captured_queries)

    few = queries()
    for index in range(4):
        waiting(personas, identifier=f"mend_{index}")
    assert client.get(list_url(personas)).content.decode().count(MARKER) == 5
    assert queries() == few
