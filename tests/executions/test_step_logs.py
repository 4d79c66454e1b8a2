"""Step logs and step facts on the execution page (issue 14, points 2, 10 and 12): the open log
polls for new bytes only (204 when nothing is new), stays open after an abort until the worker
has stored its last lines, can be downloaded whole; the page shows each step's exit code, times,
worker and outputs, and each approval's answer."""

from __future__ import annotations

import re
from datetime import timedelta

from django.urls import reverse
from django.utils import timezone

from executions.models import LogChunk, Status, StepRun
from executions.runners.shell import LogWriter
from executions.services import abort_execution, answer_approval, run_pipeline
from executions.transitions import transition
from tests.helpers.factories import make_pipeline
from tests.helpers.pages import (
    APPROVAL_YAML,
    SERIAL_YAML,
    as_user,
    failed_serial,
    htmx,
    page_url,
)
from tests.helpers.runs import drive, wait_for, wait_for_stage

SLEEPY_YAML = """
pipeline:
  name: Sleepy
  identifier: sleepy
  stages:
    - stage:
        identifier: nap
        name: Nap
        steps:
          - step:
              identifier: snooze
              name: Snooze
              type: ShellScript
              spec:
                script: |
                  echo "falling asleep"
                  sleep 60
"""


def running_step(personas) -> StepRun:
    """The first step of a new execution, claimed by a (pretend) worker that holds its lease."""
    pipeline = make_pipeline(personas.project, SERIAL_YAML)
    execution = run_pipeline(pipeline=pipeline, user=personas.executor, inputs={})
    step = StepRun.objects.get(execution=execution, identifier="compile")
    transition(step, to=Status.RUNNING, lease_expires_at=timezone.now() + timedelta(seconds=30))
    return step


def write(step: StepRun, text: str) -> None:
    writer = LogWriter(step, [], seq=LogChunk.objects.filter(step_run=step).count())
    writer.feed(text.encode())
    writer.flush(final=True)


def log_url(step: StepRun, name: str = "execution_step_log") -> str:
    return reverse(name, args=[step.execution_id, step.pk])


def test_a_running_log_is_polled_every_half_second_and_nothing_new_is_a_204(client, personas):
    step = running_step(personas)
    write(step, "first line\n")
    as_user(client, personas.viewer)
    panel = client.get(log_url(step), headers=htmx("log-panel")).content.decode()
    assert 'hx-trigger="every 500ms"' in panel
    cursor = LogChunk.objects.get(step_run=step).seq
    nothing_new = client.get(f"{log_url(step)}?after={cursor}", headers=htmx("log-lines"))
    assert nothing_new.status_code == 204 and nothing_new.content == b""
    write(step, "second line\n")
    update = client.get(f"{log_url(step)}?after={cursor}", headers=htmx("log-lines"))
    assert update.status_code == 200 and "second line" in update.content.decode()
    assert "first line" not in update.content.decode()


def test_an_aborted_log_stays_open_until_the_worker_has_stored_its_last_lines(client, personas):
    step = running_step(personas)
    write(step, "working\n")
    abort_execution(execution=step.execution, user=personas.executor)
    step.refresh_from_db()
    assert step.status == Status.ABORTED
    as_user(client, personas.viewer)
    cursor = LogChunk.objects.get(step_run=step).seq
    # The worker still holds the step: it is killing the processes and writes what they said.
    panel = client.get(log_url(step), headers=htmx("log-panel")).content.decode()
    assert "Following the log" in panel and "End of the log" not in panel
    assert (
        client.get(f"{log_url(step)}?after={cursor}", headers=htmx("log-lines")).status_code == 204
    )

    write(step, "[stageline] aborted: the step's processes were killed\n")
    StepRun.objects.filter(pk=step.pk).update(lease_expires_at=None)  # what engine.run_step does
    final = client.get(f"{log_url(step)}?after={cursor}", headers=htmx("log-lines"))
    text = final.content.decode()
    assert final.status_code == 200 and "aborted: the step&#x27;s processes were killed" in text
    assert "End of the log." in text and "hx-trigger" not in text


def test_a_lapsed_lease_ends_the_log_of_an_aborted_step(client, personas):
    """A worker that died while aborting never releases the lease: the log ends when it lapses."""
    step = running_step(personas)
    write(step, "working\n")
    abort_execution(execution=step.execution, user=personas.executor)
    StepRun.objects.filter(pk=step.pk).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    panel = as_user(client, personas.viewer).get(log_url(step), headers=htmx("log-panel"))
    assert "End of the log." in panel.content.decode()


def test_the_worker_stores_the_kill_notice_before_the_log_ends(worker, client, personas):
    pipeline = make_pipeline(personas.project, SLEEPY_YAML)
    execution = run_pipeline(pipeline=pipeline, user=personas.executor, inputs={})
    wait_for_stage(execution, "nap", Status.RUNNING)
    step = StepRun.objects.get(execution=execution)
    wait_for(lambda: LogChunk.objects.filter(step_run=step).exists(), message="the first line")
    abort_execution(execution=execution, user=personas.executor)
    as_user(client, personas.viewer)

    def ended() -> str:
        html = client.get(log_url(step), headers=htmx("log-panel")).content.decode()
        return html if "End of the log." in html else ""

    html = wait_for(ended, timeout=30, interval=0.2, message="the end of the log")
    assert "falling asleep" in html
    assert "aborted: the step&#x27;s processes were killed" in html, "the kill notice came first"
    step.refresh_from_db()
    assert step.status == Status.ABORTED and step.log_closed and step.exit_code is not None


def test_the_raw_log_downloads_whole_as_a_text_file_with_secrets_masked(client, personas):
    execution = failed_serial(personas)
    step = StepRun.objects.get(execution=execution, identifier="rollout")
    response = as_user(client, personas.viewer).get(log_url(step, "execution_step_log_download"))
    assert response.status_code == 200
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    assert response["Content-Disposition"] == (
        f'attachment; filename="web-{execution.sequence}-deploy-rollout.log"'
    )
    body = b"".join(response.streaming_content).decode()
    stored = "".join(LogChunk.objects.filter(step_run=step).values_list("text", flat=True))
    assert body == stored and "deploying app:1.0 with token ***" in body
    assert "s3cr3t-t0ken" not in body and '<script>alert("x")</script>' in body  # raw, as written
    stranger = as_user(client, personas.stranger).get(log_url(step, "execution_step_log_download"))
    assert stranger.status_code == 404


def test_the_open_step_shows_its_exit_code_times_worker_and_masked_outputs(client, personas):
    execution = failed_serial(personas)
    compile_step = StepRun.objects.get(execution=execution, identifier="compile")
    StepRun.objects.filter(pk=compile_step.pk).update(
        outputs={"image": "app:1.0", "token": "s3cr3t-t0ken"}  # as if stored unmasked
    )
    html = as_user(client, personas.viewer).get(log_url(compile_step), headers=htmx("log-panel"))
    facts = html.content.decode()
    facts = facts[facts.index('<dl id="step-facts"') : facts.index("</dl>")]
    assert '<dt>Exit code</dt><dd class="exit-code">0</dd>' in facts
    assert f'<dd class="worker">{compile_step.worker}</dd>' in facts and compile_step.worker
    assert facts.count("<time datetime=") == 2  # started and ended
    assert re.search(r"<dt>Duration</dt><dd>\d+\.\d s</dd>", facts)
    assert "<code>image</code> = <code>app:1.0</code>" in facts
    assert "<code>token</code> = <code>***</code>" in facts and "s3cr3t" not in facts

    failed = StepRun.objects.get(execution=execution, identifier="rollout")
    page = client.get(page_url(execution)).content.decode()  # the failed step's log opens
    assert f'data-step="{failed.pk}"' in page
    assert '<dt>Exit code</dt><dd class="exit-code">3</dd>' in page


def test_an_answered_approval_shows_who_answered_when_and_the_comment(client, personas):
    pipeline = make_pipeline(personas.project, APPROVAL_YAML)
    execution = drive(run_pipeline(pipeline=pipeline, user=personas.executor, inputs={}))
    answer_approval(
        execution=execution,
        stage="approve",
        user=personas.approver,
        approve=False,
        comment="not <b>today</b>",
    )
    gate = StepRun.objects.get(execution=execution, identifier="gate")
    as_user(client, personas.viewer)
    page = client.get(page_url(execution)).content.decode()
    assert "Rejected by approver · <time datetime=" in page
    assert "“not &lt;b&gt;today&lt;/b&gt;”" in page
    panel = client.get(log_url(gate), headers=htmx("log-panel")).content.decode()
    assert "<dt>Answered by</dt><dd>approver</dd>" in panel
    assert "<dt>Comment</dt><dd>not &lt;b&gt;today&lt;/b&gt;</dd>" in panel
    assert "<dt>Answered</dt><dd><time datetime=" in panel
