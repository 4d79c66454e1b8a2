"""Failure strategies (SPEC §9) on real steps on a real worker: each action does what the
spec says the moment a step fails."""

from __future__ import annotations

import io
import textwrap
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone

from executions import engine
from executions.models import Event, Execution, PendingWait, StepAttempt, StepRun
from executions.services import abort_execution, run_pipeline
from executions.states import Status
from tests.helpers.factories import make_pipeline
from tests.helpers.runs import log_of, wait_for, wait_for_status

pytestmark = pytest.mark.engine


def pipeline_with(personas, identifier: str, rules: str, script: str, *, after: bool = True):
    """A pipeline whose stage ``flaky`` runs ``script`` with failure ``rules`` (YAML list items
    of the step), then (``after``) a stage ``next`` that echoes."""
    body = textwrap.indent(textwrap.dedent(script).strip(), " " * 18)
    rule_lines = textwrap.indent(textwrap.dedent(rules).strip(), " " * 16)
    text = f"""pipeline:
  name: {identifier}
  identifier: {identifier}
  stages:
    - stage:
        identifier: flaky
        steps:
          - step:
              identifier: run
              type: ShellScript
              timeout: 1m
              failure_strategies:
{rule_lines}
              spec:
                script: |
{body}
"""
    if after:
        text += """    - stage:
        identifier: next
        steps:
          - step: {identifier: run, type: ShellScript, spec: {script: echo next ran}}
"""
    return make_pipeline(personas.project, text)


def run(pipeline, personas) -> Execution:
    return run_pipeline(pipeline=pipeline, user=personas.executor, inputs={})


COUNT_AND_FAIL_UNTIL_3 = """\
n=$(cat {d}/count 2>/dev/null || echo 0); n=$((n+1)); echo "$n" > {d}/count
echo "attempt $n"
[ "$n" -ge 3 ] || exit 5
"""


def step_of(execution: Execution, stage: str = "flaky") -> StepRun:
    return StepRun.objects.get(execution=execution, stage_run__identifier=stage)


def test_a_step_failing_twice_then_passing_ends_success_after_three_attempts(
    worker, personas, shared_dir: Path
):
    pipeline = pipeline_with(
        personas,
        "flaky_three",
        "- on_failure: {errors: [script], action: {type: retry, retry: {count: 3}}}",
        COUNT_AND_FAIL_UNTIL_3.format(d=shared_dir),
    )
    execution = wait_for_status(run(pipeline, personas), Status.SUCCESS)
    step = step_of(execution)
    assert (step.status, step.attempts, step.exit_code) == (Status.SUCCESS, 3, 0)
    assert (shared_dir / "count").read_text().strip() == "3"
    assert step_of(execution, "next").status == Status.SUCCESS
    retries = Event.objects.filter(step_run=step, action="strategy.retry").order_by("id")
    assert [e.message.split(" (")[0] for e in retries] == ["retry 1 of 3", "retry 2 of 3"]
    assert "script failure, attempt 1: step failure strategy at line" in retries[0].message


def test_exhausted_retries_hand_over_to_on_exhausted(worker, personas, shared_dir: Path):
    pipeline = pipeline_with(
        personas,
        "flaky_exhausted",
        "- on_failure: {errors: [all], action: {type: retry, retry: {count: 1, "
        "on_exhausted: {type: ignore}}}}",
        COUNT_AND_FAIL_UNTIL_3.format(d=shared_dir),
    )
    execution = wait_for_status(run(pipeline, personas), Status.SUCCESS)
    step = step_of(execution)
    assert (step.status, step.attempts, step.exit_code) == (Status.IGNORED, 2, 5)


def test_a_timeout_only_rule_does_not_retry_a_non_zero_exit(worker, personas, shared_dir: Path):
    pipeline = pipeline_with(
        personas,
        "timeout_only",
        "- on_failure: {errors: [timeout], action: {type: retry, retry: {count: 3}}}",
        f"echo ran >> {shared_dir}/runs; exit 3",
    )
    execution = wait_for_status(run(pipeline, personas), Status.FAILED)
    step = step_of(execution)
    assert (step.status, step.attempts, step.exit_code) == (Status.FAILED, 1, 3)
    assert (shared_dir / "runs").read_text().splitlines() == ["ran"]
    assert step_of(execution, "next").status == Status.NOT_STARTED


def test_ignore_lets_the_run_go_on_and_end_success_with_the_step_ignored(worker, personas):
    pipeline = pipeline_with(
        personas,
        "ignored",
        "- on_failure: {errors: [script], exit_codes: [4], action: {type: ignore}}",
        "echo broken; exit 4",
    )
    execution = wait_for_status(run(pipeline, personas), Status.SUCCESS)
    step = step_of(execution)
    assert (step.status, step.exit_code) == (Status.IGNORED, 4)
    assert step.stage_run.status == Status.SUCCESS
    assert "next ran" in log_of(execution, "next")
    assert Event.objects.filter(step_run=step, to_status=Status.IGNORED).exists()


def test_mark_as_success_ends_the_step_success_without_outputs(worker, personas):
    pipeline = pipeline_with(
        personas,
        "marked",
        "- on_failure: {errors: [all], action: {type: mark_as_success}}",
        'echo "image=x" >> "$STAGELINE_OUTPUT"; exit 9',
    )
    execution = wait_for_status(run(pipeline, personas), Status.SUCCESS)
    step = step_of(execution)
    assert (step.status, step.outputs, step.exit_code) == (Status.SUCCESS, {}, 9)
    assert step.error == "marked as success by strategy"


def test_abort_kills_the_other_running_steps_of_a_parallel_group(worker, personas):
    text = """pipeline:
  name: Par abort
  identifier: par_abort
  stages:
    - parallel:
        - stage:
            identifier: slow
            steps:
              - step: {identifier: run, type: ShellScript, spec: {script: echo started; sleep 600}}
        - stage:
            identifier: bad
            steps:
              - step:
                  identifier: run
                  type: ShellScript
                  failure_strategies:
                    - on_failure: {errors: [all], action: {type: abort}}
                  spec: {script: sleep 1; exit 2}
"""
    execution = run(make_pipeline(personas.project, text), personas)
    execution = wait_for_status(execution, Status.ABORTED)
    slow, bad = step_of(execution, "slow"), step_of(execution, "bad")
    assert bad.status == Status.ABORTED and bad.exit_code == 2
    assert slow.status == Status.ABORTED
    assert "aborted by failure strategy: step 'run' failed" in execution.error
    wait_for(
        lambda: "aborted" in log_of(execution, "slow"),
        timeout=15,
        message="the worker to kill the slow step",
    )


def test_a_retry_interval_is_a_durable_wait_started_once_when_due(worker, personas, shared_dir):
    pipeline = pipeline_with(
        personas,
        "interval",
        "- on_failure: {errors: [script], action: {type: retry, retry: {count: 1, "
        "intervals: [10m]}}}",
        f"echo ran >> {shared_dir}/runs; [ -e {shared_dir}/ok ] || {{ touch {shared_dir}/ok; exit 1; }}",
    )
    execution = run(pipeline, personas)
    wait = wait_for(
        lambda: PendingWait.objects.filter(execution=execution).first(),
        message="the retry's wait",
    )
    assert (wait.kind, wait.state) == (PendingWait.Kind.RETRY, PendingWait.State.PENDING)
    assert wait.due_at > timezone.now() + timedelta(minutes=9)
    assert step_of(execution).status == Status.QUEUED
    engine.reap()  # not due yet: nothing starts
    assert (shared_dir / "runs").read_text().splitlines() == ["ran"]
    PendingWait.objects.filter(pk=wait.pk).update(due_at=timezone.now() - timedelta(seconds=1))
    engine.reap()
    engine.reap()  # a second pick-up starts nothing twice
    execution = wait_for_status(execution, Status.SUCCESS)
    assert (shared_dir / "runs").read_text().splitlines() == ["ran", "ran"]
    assert step_of(execution).attempts == 2
    assert PendingWait.objects.get(pk=wait.pk).state == PendingWait.State.STARTED


def test_manual_intervention_waits_and_its_timeout_applies_on_timeout(worker, personas, client):
    pipeline = pipeline_with(
        personas,
        "intervene",
        "- on_failure: {errors: [all], action: {type: manual_intervention, timeout: 1h, "
        "on_timeout: {type: ignore}}}",
        "exit 1",
    )
    execution = wait_for_status(run(pipeline, personas), Status.INTERVENTION_WAITING)
    step = step_of(execution)
    assert step.status == Status.INTERVENTION_WAITING
    assert step.stage_run.status == Status.INTERVENTION_WAITING
    wait = PendingWait.objects.get(step_run=step)
    assert (wait.kind, wait.on_timeout) == (PendingWait.Kind.INTERVENTION, "ignore")
    client.force_login(personas.viewer)
    page = client.get(reverse("execution", args=[execution.pk])).content.decode()
    assert "Needs intervention" in page
    PendingWait.objects.filter(pk=wait.pk).update(due_at=timezone.now() - timedelta(seconds=1))
    engine.reap()
    execution = wait_for_status(execution, Status.SUCCESS)
    step = step_of(execution)
    assert step.status == Status.IGNORED
    assert "nobody intervened in time: on_timeout ignore" in (
        Event.objects.get(step_run=step, to_status=Status.IGNORED).message
    )
    page = client.get(reverse("execution", args=[execution.pk])).content.decode()
    assert "Failed, ignored" in page


def test_a_step_whose_worker_is_lost_gets_a_new_attempt_with_a_worker_lost_rule(
    worker, personas, shared_dir: Path
):
    pipeline = pipeline_with(
        personas,
        "lost",
        "- on_failure: {errors: [worker_lost], action: {type: retry, retry: {count: 1}}}",
        f"echo run >> {shared_dir}/runs; [ $(wc -l < {shared_dir}/runs) -ge 2 ] || sleep 600",
    )
    execution = run(pipeline, personas)
    wait_for(lambda: (shared_dir / "runs").exists(), message="the first attempt to start")
    # The worker stops renewing the lease (as a killed worker would): the reaper finds it lapsed.
    StepRun.objects.filter(execution=execution).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert engine.reap()["worker_lost"] == 1
    execution = wait_for_status(execution, Status.SUCCESS)
    step = step_of(execution)
    assert (step.status, step.attempts) == (Status.SUCCESS, 2)
    assert (shared_dir / "runs").read_text().splitlines() == ["run", "run"]
    retry = Event.objects.get(step_run=step, action="strategy.retry")
    assert "worker_lost failure, attempt 1" in retry.message
    # The lost attempt is kept, with its class and error; the step holds the one that passed.
    lost = StepAttempt.objects.get(step_run=step)
    assert (lost.number, lost.status, lost.error_class) == (1, Status.FAILED, "worker_lost")
    assert lost.error.startswith("worker lost") and step.error == ""


def intervene(*args: str) -> str:
    out = io.StringIO()
    call_command("intervene", *args, stdout=out)
    return out.getvalue().strip()


def intervene_refused(*args: str) -> str:
    with pytest.raises(CommandError) as refused:
        intervene(*args)
    assert refused.value.returncode == 2
    return str(refused.value)


def test_an_intervention_answered_retry_runs_a_second_attempt(worker, personas, shared_dir):
    pipeline = pipeline_with(
        personas,
        "answered",
        "- on_failure: {errors: [all], action: {type: manual_intervention, timeout: 1h}}",
        f"echo ran >> {shared_dir}/runs; [ -e {shared_dir}/ok ] || {{ touch {shared_dir}/ok; exit 1; }}",
    )
    execution = wait_for_status(run(pipeline, personas), Status.INTERVENTION_WAITING)
    eid = str(execution.pk)
    # Viewers and strangers may not answer; an unknown step or answer is refused.
    assert intervene_refused(eid, "run", "--action", "retry", "--as", "viewer") == (
        "You need the Execute permission on pipeline answered."
    )
    assert "may not see it" in intervene_refused(
        eid, "run", "--action", "retry", "--as", "stranger"
    )
    assert "has no step 'nope'" in intervene_refused(
        eid, "nope", "--action", "retry", "--as", "executor"
    )
    assert intervene(
        eid, "flaky.run", "--action", "retry", "--comment", "flaky disk", "--as", "executor"
    ) == (f"retry: step flaky.run of #{execution.sequence}")
    # A second answer is refused and says what happened.
    second = intervene_refused(eid, "run", "--action", "ignore", "--as", "admin")
    assert "Nothing to answer: 'flaky.run' is" in second
    execution = wait_for_status(execution, Status.SUCCESS)
    step = step_of(execution)
    assert (step.status, step.attempts, step.decided_by, step.comment) == (
        Status.SUCCESS,
        2,
        personas.executor,
        "flaky disk",
    )
    assert PendingWait.objects.get(step_run=step).state == PendingWait.State.CANCELLED
    answer = Event.objects.get(step_run=step, action="strategy.retry")
    assert answer.actor == personas.executor
    assert "answered by executor: flaky disk" in answer.message


def test_an_intervention_answered_abort_ends_the_execution_aborted(worker, personas):
    pipeline = pipeline_with(
        personas,
        "answered_abort",
        "- on_failure: {errors: [all], action: {type: manual_intervention, timeout: 1h}}",
        "exit 1",
    )
    execution = wait_for_status(run(pipeline, personas), Status.INTERVENTION_WAITING)
    intervene(str(execution.pk), "run", "--action", "abort", "--as", "executor")
    execution = wait_for_status(execution, Status.ABORTED)
    assert step_of(execution).status == Status.ABORTED
    assert "aborted by executor" in execution.error


def test_an_abort_during_a_retry_interval_cancels_the_wait_and_nothing_starts_when_due(
    worker, personas, shared_dir
):
    pipeline = pipeline_with(
        personas,
        "abort_interval",
        "- on_failure: {errors: [script], action: {type: retry, retry: {count: 2, "
        "intervals: [10m]}}}",
        f"echo ran >> {shared_dir}/runs; exit 1",
    )
    execution = run(pipeline, personas)
    wait = wait_for(
        lambda: PendingWait.objects.filter(execution=execution).first(),
        message="the retry's wait",
    )
    assert (wait.kind, wait.state) == (PendingWait.Kind.RETRY, PendingWait.State.PENDING)
    abort_execution(execution=execution, user=personas.executor)
    assert PendingWait.objects.get(pk=wait.pk).state == PendingWait.State.CANCELLED
    # The interval's time comes: the scheduler starts nothing for an aborted execution.
    PendingWait.objects.filter(pk=wait.pk).update(due_at=timezone.now() - timedelta(seconds=1))
    assert engine.reap()["waits_started"] == 0
    time.sleep(2)  # a wrongly dispatched attempt would have run by now
    execution.refresh_from_db()
    step = step_of(execution)
    assert (execution.status, step.status, step.attempts) == (Status.ABORTED, Status.ABORTED, 1)
    assert (shared_dir / "runs").read_text().splitlines() == ["ran"]
    assert PendingWait.objects.get(pk=wait.pk).state == PendingWait.State.CANCELLED
    assert step_of(execution, "next").status == Status.NOT_STARTED


def test_an_abort_during_an_intervention_cancels_it_and_its_timeout_applies_nothing(
    worker, personas
):
    pipeline = pipeline_with(
        personas,
        "abort_intervention",
        "- on_failure: {errors: [all], action: {type: manual_intervention, timeout: 1h, "
        "on_timeout: {type: ignore}}}",
        "exit 1",
    )
    execution = wait_for_status(run(pipeline, personas), Status.INTERVENTION_WAITING)
    wait = PendingWait.objects.get(step_run=step_of(execution))
    abort_execution(execution=execution, user=personas.executor)
    assert PendingWait.objects.get(pk=wait.pk).state == PendingWait.State.CANCELLED
    PendingWait.objects.filter(pk=wait.pk).update(due_at=timezone.now() - timedelta(seconds=1))
    assert engine.reap()["waits_started"] == 0
    execution.refresh_from_db()
    step = step_of(execution)
    assert (execution.status, step.status, step.attempts) == (Status.ABORTED, Status.ABORTED, 1)
    assert "aborted by executor" in execution.error
    assert not Event.objects.filter(step_run=step, to_status=Status.IGNORED).exists()
    assert not Event.objects.filter(step_run=step, message__contains="on_timeout").exists()
    assert step_of(execution, "next").status == Status.NOT_STARTED


@pytest.mark.parametrize(
    "action",
    ["{type: retry, retry: {count: 3}}", "{type: ignore}"],
    ids=["retry", "ignore"],
)
def test_an_all_rule_never_matches_a_users_abort(worker, personas, shared_dir, action):
    text = f"""pipeline:
  name: Abort all
  identifier: abort_all
  failure_strategies:
    - on_failure: {{errors: [all], action: {action}}}
  stages:
    - stage:
        identifier: flaky
        steps:
          - step:
              identifier: run
              type: ShellScript
              spec: {{script: 'echo ran >> {shared_dir}/runs; echo started; sleep 30'}}
    - stage:
        identifier: next
        steps:
          - step: {{identifier: run, type: ShellScript, spec: {{script: echo next ran}}}}
"""
    execution = run(make_pipeline(personas.project, text), personas)
    wait_for(lambda: (shared_dir / "runs").exists(), message="the step to start")
    wait_for_status(execution, Status.RUNNING)
    abort_execution(execution=execution, user=personas.executor)
    wait_for(
        lambda: "aborted" in log_of(execution, "flaky"),
        timeout=15,
        message="the worker to kill the step",
    )
    engine.reap()
    time.sleep(1)  # a wrongly started attempt would have run by now
    execution.refresh_from_db()
    step = step_of(execution)
    assert (execution.status, step.status, step.attempts) == (Status.ABORTED, Status.ABORTED, 1)
    assert (shared_dir / "runs").read_text().splitlines() == ["ran"]
    assert not Event.objects.filter(execution=execution, action__startswith="strategy.").exists()
    assert not PendingWait.objects.filter(execution=execution).exists()
    assert step_of(execution, "next").status == Status.NOT_STARTED
