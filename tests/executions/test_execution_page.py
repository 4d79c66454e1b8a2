"""The execution page: the stage graph, live updates, logs, the action bar, Abort, and access.

Executions here are real: ``run_pipeline`` creates them and ``drive`` runs their steps with the
real engine and runners in this thread (the test transaction never commits, so nothing reaches a
broker); the helpers are in ``tests/helpers/pages.py`` and ``tests/helpers/runs.py``.
"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from executions.models import Event, LogChunk, StageRun, Status, StepRun
from executions.retry import create_retry
from executions.runners.shell import LogWriter
from executions.services import abort_execution, run_pipeline
from executions.transitions import transition
from tests.helpers.factories import make_pipeline
from tests.helpers.pages import (
    SERIAL_YAML,
    action_html,
    as_user,
    count_queries,
    failed_parallel,
    failed_serial,
    graph_columns,
    htmx,
    many_stages_yaml,
    page_url,
    retried_many,
    run,
    stage_card,
)
from tests.helpers.runs import drive

# --- the stage graph ----------------------------------------------------------------------------


def test_the_page_draws_each_stage_with_its_status_duration_and_steps(client, personas):
    execution = failed_serial(personas)
    html = as_user(client, personas.viewer).get(page_url(execution)).content.decode()
    assert graph_columns(html) == [["build"], ["test"], ["deploy"]]
    assert (
        '<section class="graph-wrap scroll-x" aria-label="Stages" id="stage-graph" hx-disable>'
        in html
    )
    build, deploy = stage_card(html, "build"), stage_card(html, "deploy")
    assert 'data-status="SUCCESS"' in build and "Compile" in build
    assert re.search(r'class="stage-duration muted" title="Duration">\d+\.\d s<', build)
    assert 'data-status="FAILED"' in deploy and "exit code 3" in deploy
    step = StepRun.objects.get(execution=execution, identifier="rollout")
    assert f'data-log-url="{reverse("execution_step_log", args=[execution.pk, step.pk])}"' in deploy
    assert "Roll out" in deploy


def test_a_parallel_group_is_stacked_in_one_column(client, personas):
    execution = failed_parallel(personas)
    html = as_user(client, personas.viewer).get(page_url(execution)).content.decode()
    assert graph_columns(html) == [["build"], ["eu", "us"], ["release"]]
    assert 'data-status="NOT_STARTED"' in stage_card(html, "release")


def test_progress_counts_finished_stages_and_shows_the_time_taken(client, personas):
    execution = failed_serial(personas)
    html = as_user(client, personas.viewer).get(page_url(execution)).content.decode()
    assert "<strong>3 / 3</strong> stages done" in html
    assert re.search(r'took <strong class="elapsed">\d+\.\d s</strong>', html)

    running = run_pipeline(
        pipeline=execution.pipeline, user=personas.executor, inputs={"deploy.fail": "no"}
    )
    html = client.get(page_url(running)).content.decode()
    assert "<strong>0 / 3</strong> stages done" in html and "elapsed" in html


def test_carried_over_stages_say_where_they_came_from_and_link_there(client, personas):
    execution = failed_serial(personas)
    retry = drive(create_retry(execution=execution, user=personas.executor, from_stage="deploy"))
    html = as_user(client, personas.viewer).get(page_url(retry)).content.decode()
    build = stage_card(html, "build")
    assert "carried" in html[html.index('id="stage-build"') - 120 : html.index('id="stage-build"')]
    assert f'<a class="carried-from" href="{page_url(execution)}"' in build
    assert f"from #{execution.sequence}" in build
    assert "from #" not in stage_card(html, "deploy")


# --- live updates ---------------------------------------------------------------------------------


def test_a_running_execution_polls_every_two_seconds_and_a_finished_one_does_not(client, personas):
    pipeline = make_pipeline(personas.project, SERIAL_YAML)
    running = run_pipeline(pipeline=pipeline, user=personas.executor, inputs={})
    as_user(client, personas.viewer)
    html = client.get(page_url(running)).content.decode()
    last_event = Event.objects.filter(execution=running).order_by("-id").first()
    # The poller names the last event the page has seen; it swaps nothing itself (the answer is
    # out-of-band swaps only), so no button inherits a target or a swap from it.
    assert (
        f'<span id="live-poller" hidden hx-get="{page_url(running)}?since={last_event.pk}" '
        'hx-trigger="every 2s" hx-swap="none" data-live'
    ) in html
    assert '<div id="execution-live" class="execution-live">' in html

    finished = drive(running)
    assert finished.status == Status.SUCCESS
    html = client.get(page_url(finished)).content.decode()
    assert 'id="execution-live"' in html and '<span id="live-poller" hidden>' in html
    assert 'hx-trigger="every 2s"' not in html


def poll(client, execution, since: int) -> str:
    response = client.get(f"{page_url(execution)}?since={since}", headers=htmx("live-poller"))
    assert response.status_code == 200 and "HX-Request" in response["Vary"]
    return response.content.decode()


def cards_in(html: str) -> list[str]:
    return re.findall(r'<article class="stage-card[^>]*id="stage-(\w+)"', html)


def cursor_of(html: str) -> int:
    found = re.search(r'\?since=(\d+)"', html)
    assert found is not None, "no live poller"
    return int(found.group(1))


def age_events(execution) -> None:
    """Events older than the poll's overlap (they happened a minute ago)."""
    Event.objects.filter(execution=execution).update(at=timezone.now() - timedelta(minutes=1))


def test_a_live_poll_sends_only_the_stages_that_changed(client, personas):
    execution = run_pipeline(
        pipeline=make_pipeline(personas.project, many_stages_yaml(30)),
        user=personas.executor,
        inputs={},
    )
    as_user(client, personas.viewer)
    whole = client.get(page_url(execution), headers=htmx("execution-live")).content.decode()
    assert len(cards_in(whole)) == 30
    page = client.get(page_url(execution)).content.decode()
    age_events(execution)

    update = poll(client, execution, cursor_of(page))
    assert "<html" not in update and 'id="exec-head"' not in update, "nothing happened"
    assert update.startswith('<p class="progress-line" id="progress" hx-swap-oob="true">')
    assert cards_in(update) == ["s0"], "nothing changed: only the active stage (its time runs)"
    assert '<span id="live-poller" hidden hx-swap-oob="true" hx-get=' in update
    assert len(update) * 5 < len(whole)

    # s0's step starts, then s0 ends and s1 starts: the next poll redraws those two stages.
    s0, s1 = (StageRun.objects.get(execution=execution, identifier=i) for i in ("s0", "s1"))
    step = StepRun.objects.get(stage_run=s0)
    transition(step, to=Status.RUNNING)
    transition(step, to=Status.SUCCESS)
    transition(s0, to=Status.SUCCESS)
    transition(s1, to=Status.RUNNING)
    update = poll(client, execution, cursor_of(update))
    assert cards_in(update) == ["s0", "s1"]
    assert '<div id="exec-head" hx-swap-oob="true">' in update, "the head with its actions"
    assert update.count('hx-swap-oob="true"') == 4, "the head, two cards, the poller: not nested"
    assert 'data-status="SUCCESS" data-stage="s0"' in update
    assert "<strong>1 / 30</strong> stages done" in update

    age_events(execution)
    update = poll(client, execution, cursor_of(update))
    assert cards_in(update) == ["s1"], "s0 changed before the cursor: not sent again"

    abort_execution(execution=execution, user=personas.executor)
    update = poll(client, execution, cursor_of(update))
    assert '<span id="live-poller" hidden hx-swap-oob="true">' in update, "the poll stops"
    assert "Aborted" in update[: update.index("</h1>")]
    assert cards_in(update) == ["s1"]


def test_a_live_poll_cursor_that_is_not_a_number_is_refused(client, personas):
    execution = failed_serial(personas)
    response = as_user(client, personas.viewer).get(
        f"{page_url(execution)}?since=<b>x</b>", headers=htmx("live-poller")
    )
    assert response.status_code == 400 and response["Content-Type"].startswith("text/plain")
    assert "'since' must be an event number" in response.content.decode()


def test_the_whole_live_part_is_still_served_to_whoever_asks_for_it(client, personas):
    pipeline = make_pipeline(personas.project, SERIAL_YAML)
    running = run_pipeline(pipeline=pipeline, user=personas.executor, inputs={})
    as_user(client, personas.viewer)
    response = client.get(page_url(running), headers=htmx("execution-live"))
    html = response.content.decode()
    assert response.status_code == 200 and "HX-Request" in response["Vary"]
    assert html.startswith('<div id="execution-live"') and "<html" not in html
    assert 'hx-trigger="every 2s"' in html and 'data-status="QUEUED"' in stage_card(html, "build")


# --- logs -----------------------------------------------------------------------------------------


def test_the_failed_steps_log_opens_escaped_inside_an_hx_disable_region(client, personas):
    execution = failed_serial(personas)
    html = as_user(client, personas.viewer).get(page_url(execution)).content.decode()
    log = html[
        html.index('<pre id="log-lines"') : html.index("</pre>", html.index('<pre id="log-lines"'))
    ]
    assert log.startswith('<pre id="log-lines" class="log" hx-disable>')
    assert "health check failed" in log
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in log
    assert '<b hx-get="/admin/">' not in html and "<script>alert" not in html
    assert "End of the log." in html and 'id="log-poller"' in html


def test_a_step_log_fragment_follows_a_running_step_from_its_cursor(client, personas):
    pipeline = make_pipeline(personas.project, SERIAL_YAML)
    execution = run_pipeline(pipeline=pipeline, user=personas.executor, inputs={})
    step = StepRun.objects.get(execution=execution, identifier="compile")
    transition(step, to=Status.RUNNING)
    writer = LogWriter(step, [])
    writer.feed(b"first line\n")
    writer.flush(final=True)
    url = reverse("execution_step_log", args=[execution.pk, step.pk])
    as_user(client, personas.viewer)

    panel = client.get(url, headers=htmx("log-panel")).content.decode()
    assert panel.startswith('<section id="log-panel"') and "first line" in panel
    first_seq = LogChunk.objects.get(step_run=step).seq
    assert (
        f'hx-get="{url}?after={first_seq}" hx-trigger="every 500ms" hx-target="#log-lines" hx-swap="beforeend"'
        in panel
    )

    writer.feed(b"second <line>\n")
    writer.flush(final=True)
    update = client.get(f"{url}?after={first_seq}", headers=htmx("log-lines")).content.decode()
    assert "second &lt;line&gt;" in update and "first line" not in update
    assert (
        f'?after={first_seq + 1}" hx-trigger="every 500ms"' in update
        and 'hx-swap-oob="true"' in update
    )
    # What is not out of band (the poller, the status) lands in the <pre>: the new text alone.
    out_of_band = r'<p id="log-poller" [^>]*hx-swap-oob="true".*?</p>|<span id="log-status" [^>]*hx-swap-oob="true">.*</span>$'
    assert re.sub(out_of_band, "", update, flags=re.S) == "<span>second &lt;line&gt;\n</span>"

    nothing_new = client.get(f"{url}?after={first_seq + 1}", headers=htmx("log-lines"))
    assert nothing_new.status_code == 204 and not nothing_new.content

    assert '<span class="badge status-running">Running</span>' in update

    transition(step, to=Status.SUCCESS)
    done = client.get(f"{url}?after={first_seq + 1}", headers=htmx("log-lines")).content.decode()
    assert "hx-trigger" not in done and "End of the log." in done
    assert '<span class="badge status-success">Success</span>' in done, (
        "the panel's status follows the step"
    )


def test_a_log_cursor_that_is_not_a_number_is_refused(client, personas):
    execution = failed_serial(personas)
    step = StepRun.objects.get(execution=execution, identifier="rollout")
    url = reverse("execution_step_log", args=[execution.pk, step.pk])
    response = as_user(client, personas.viewer).get(f"{url}?after=abc", headers=htmx("log-lines"))
    assert response.status_code == 400
    assert "whole number" in response.content.decode()


def test_a_carried_over_step_shows_the_log_of_the_run_it_came_from(client, personas):
    execution = failed_serial(personas)
    retry = drive(create_retry(execution=execution, user=personas.executor, from_stage="deploy"))
    carried = StepRun.objects.get(execution=retry, identifier="compile")
    assert not LogChunk.objects.filter(step_run=carried).exists()
    url = reverse("execution_step_log", args=[retry.pk, carried.pk])
    html = as_user(client, personas.viewer).get(url, headers=htmx("log-panel")).content.decode()
    assert "building 1.0-gold" in html
    assert f"from #{execution.sequence}" in html and "hx-trigger" not in html


def test_the_log_link_without_htmx_opens_the_page_at_that_step(client, personas):
    execution = failed_serial(personas)
    step = StepRun.objects.get(execution=execution, identifier="compile")
    as_user(client, personas.viewer)
    response = client.get(reverse("execution_step_log", args=[execution.pk, step.pk]))
    assert response.status_code == 302 and response["Location"].endswith(
        f"?step={step.pk}#log-panel"
    )
    html = client.get(response["Location"]).content.decode()
    assert "building 1.0-gold" in html and "health check failed" not in html


def test_a_step_of_another_execution_is_not_found(client, personas):
    execution = failed_serial(personas)
    other = run(execution.pipeline, personas.executor)
    step = StepRun.objects.get(execution=other, identifier="compile")
    as_user(client, personas.viewer)
    assert (
        client.get(
            reverse("execution_step_log", args=[execution.pk, step.pk]), headers=htmx()
        ).status_code
        == 404
    )
    assert client.get(page_url(execution) + f"?step={step.pk}").status_code == 200


def test_secret_inputs_are_never_shown(client, personas):
    execution = failed_serial(personas)
    html = as_user(client, personas.admin).get(page_url(execution)).content.decode()
    assert "s3cr3t-t0ken" not in html
    assert "deploying app:1.0 with token ***" in html
    assert '<dt>deploy.token</dt><dd class="muted">*** (secret)</dd>' in html


# --- actions --------------------------------------------------------------------------------------


def test_an_executor_may_retry_and_rerun_a_failed_execution_but_not_abort_it(client, personas):
    execution = failed_serial(personas)
    html = as_user(client, personas.executor).get(page_url(execution)).content.decode()
    retry = action_html(html, "retry")
    assert (
        f'hx-get="{reverse("execution_retry", args=[execution.pk])}" hx-target="#modal-body"'
        in retry
    )
    assert "disabled" not in retry
    assert "disabled" not in action_html(html, "rerun")
    abort = action_html(html, "abort")
    assert "disabled" in abort and "has ended (Failed): there is nothing to abort" in abort


def test_a_viewer_sees_retry_disabled_with_the_reason(client, personas):
    execution = failed_serial(personas)
    html = as_user(client, personas.viewer).get(page_url(execution)).content.decode()
    retry = action_html(html, "retry")
    assert (
        "Retry Failed Pipeline</button>" in retry and "disabled" in retry and "hx-get" not in retry
    )
    assert "You need the Execute permission on pipeline web." in retry
    assert "You need the Execute permission" in action_html(html, "rerun")


def test_a_successful_execution_offers_rerun_and_says_why_it_cannot_be_retried(client, personas):
    execution = run(make_pipeline(personas.project, SERIAL_YAML), personas.executor)
    html = as_user(client, personas.executor).get(page_url(execution)).content.decode()
    assert (
        "succeeded: only a failed, aborted, expired or rejected execution can be retried"
        in action_html(html, "retry")
    )
    assert "disabled" not in action_html(html, "rerun")


def test_a_retried_execution_links_to_its_latest_retry_and_shows_the_history(client, personas):
    execution = failed_serial(personas)
    first = drive(
        create_retry(
            execution=execution,
            user=personas.executor,
            from_stage="deploy",
            reason="flaky <network>",
        )
    )
    second = drive(
        create_retry(
            execution=first, user=personas.admin, from_stage="deploy", inputs={"deploy.fail": "no"}
        )
    )
    assert second.status == Status.SUCCESS
    as_user(client, personas.viewer)
    html = client.get(page_url(execution)).content.decode()
    banner = html[
        html.index('id="retried-banner"') : html.index("</p>", html.index('id="retried-banner"'))
    ]
    assert f'retried as <a href="{page_url(first)}">#{first.sequence}</a>' in banner
    assert f'the latest attempt is <a href="{page_url(second)}">#{second.sequence}</a>' in banner
    assert "(Success)" in banner
    assert "already retried" in action_html(html, "retry")

    html = client.get(page_url(second)).content.decode()
    assert 'id="retried-banner"' not in html
    history = html[
        html.index('id="retry-history"') : html.index("</nav>", html.index('id="retry-history"'))
    ]
    assert [int(n) for n in re.findall(r'<span class="seq">#(\d+)</span>', history)] == [
        execution.sequence,
        first.sequence,
        second.sequence,
    ]
    assert "Original" in history and "Retry 1" in history and "Retry 2" in history
    assert f'<a href="{page_url(second)}" aria-current="page">' in history
    assert "by admin · from Deploy · changed deploy.fail" in history
    assert "flaky &lt;network&gt;" in history


# --- abort ----------------------------------------------------------------------------------------


def test_an_executor_aborts_a_running_execution_from_its_dialog(client, personas):
    running = run_pipeline(
        pipeline=make_pipeline(personas.project, SERIAL_YAML), user=personas.executor, inputs={}
    )
    as_user(client, personas.executor)
    page = client.get(page_url(running)).content.decode()
    assert "disabled" not in action_html(page, "abort")
    url = reverse("execution_abort", args=[running.pk])
    dialog = client.get(url, headers=htmx("modal-body")).content.decode()
    assert 'id="modal-title"' in dialog and f'hx-post="{url}"' in dialog

    response = client.post(url, headers=htmx("modal-body"))
    assert response.status_code == 200 and response["HX-Redirect"] == page_url(running)
    running.refresh_from_db()
    assert running.status == Status.ABORTED
    assert StageRun.objects.get(execution=running, identifier="build").status == Status.ABORTED
    assert (
        f"Execution #{running.sequence} aborted." in client.get(page_url(running)).content.decode()
    )


def test_aborting_a_finished_execution_is_refused_with_the_reason(client, personas):
    execution = failed_serial(personas)
    url = reverse("execution_abort", args=[execution.pk])
    as_user(client, personas.executor)
    response = client.post(url, headers=htmx("modal-body"))
    assert response.status_code == 409 and response["HX-Retarget"] == "#modal-body"
    assert "already ended Failed" in response.content.decode()
    assert client.get(url).status_code == 409
    execution.refresh_from_db()
    assert execution.status == Status.FAILED


# --- access ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("hx", [False, True], ids=["page", "htmx"])
def test_each_persona_sees_the_page_or_a_404(client, personas, hx):
    execution = failed_serial(personas)
    step = StepRun.objects.get(execution=execution, identifier="rollout")
    headers = htmx("execution-live") if hx else {}
    for name, user in personas.all().items():
        as_user(client, user)
        expected = 404 if name == "stranger" else 200
        assert client.get(page_url(execution), headers=headers).status_code == expected, name
        log = client.get(
            reverse("execution_step_log", args=[execution.pk, step.pk]), headers=htmx()
        )
        assert log.status_code == expected, name
    client.logout()
    assert client.get(page_url(execution)).status_code == 302


@pytest.mark.parametrize("hx", [False, True], ids=["form", "htmx"])
def test_only_executors_and_admins_may_abort(client, personas, hx):
    pipeline = make_pipeline(personas.project, SERIAL_YAML)
    expected = {"viewer": 403, "approver": 403, "stranger": 404}
    headers = htmx("modal-body") if hx else {}
    for name, status in expected.items():
        running = run_pipeline(pipeline=pipeline, user=personas.executor, inputs={})
        url = reverse("execution_abort", args=[running.pk])
        as_user(client, getattr(personas, name))
        assert client.get(url, headers=headers).status_code == status, name
        response = client.post(url, headers=headers)
        assert response.status_code == status, name
        if status == 403:
            assert "You need the Execute permission on pipeline web." in response.content.decode()
        running.refresh_from_db()
        assert running.status == Status.RUNNING
    for name in ("executor", "admin"):
        running = run_pipeline(pipeline=pipeline, user=personas.executor, inputs={})
        as_user(client, getattr(personas, name))
        response = client.post(reverse("execution_abort", args=[running.pk]), headers=headers)
        assert response.status_code == (200 if hx else 302), name
        running.refresh_from_db()
        assert running.status == Status.ABORTED


# --- query counts -----------------------------------------------------------------------------------


def test_the_page_costs_the_same_queries_for_5_and_50_stages(client, personas):
    small, large = retried_many(personas, 5), retried_many(personas, 50)
    as_user(client, personas.executor)
    counts = [count_queries(client, page_url(e)) for e in (small, large)]
    assert counts[0] == counts[1], counts
    polls = [
        count_queries(client, page_url(e), headers=htmx("execution-live")) for e in (small, large)
    ]
    assert polls[0] == polls[1], polls
    live = [
        count_queries(client, f"{page_url(e)}?since=0", headers=htmx("live-poller"))
        for e in (small, large)
    ]
    assert live[0] == live[1], live
    assert counts[0] <= 25
