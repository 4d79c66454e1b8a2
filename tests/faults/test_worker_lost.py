"""A worker SIGKILLed in the middle of a step (SPEC §7): the step fails with "worker lost"
within the lease, the execution ends, a retry from that stage succeeds, and nothing runs twice."""

from __future__ import annotations

import os
import signal
import time

import pytest

from executions.models import Status, StepRun
from executions.retry import create_retry
from executions.services import run_pipeline
from stageline.processes import step_processes
from tests.faults.checks import assert_each_step_ran_at_most_once, assert_nothing_active
from tests.faults.servers import broker_url, forget_unacked
from tests.helpers.factories import make_pipeline, serial_pipeline, shell_stage
from tests.helpers.runs import log_of, step_of, wait_for, wait_for_status, worker_pid

pytestmark = pytest.mark.integration

QUEUE = "faults_doomed"


def fragile_pipeline(project):
    """prepare (default pool) → hold (the doomed pool; sleeps ``hold.seconds``) → after."""
    hold_extra = (
        f"\n        runs_on: {QUEUE}"
        "\n        variables:"
        '\n          - {name: seconds, type: String, value: <+input>, default: "60"}'
    )
    return make_pipeline(
        project,
        serial_pipeline(
            "fragile",
            [
                shell_stage("prepare", 'echo "artifact=a1" >> "$STAGELINE_OUTPUT"'),
                shell_stage(
                    "hold",
                    "echo started\nsleep <+stage.variables.seconds>\necho slept",
                    extra=hold_extra,
                ),
                shell_stage("after", 'echo "after <+pipeline.stages.prepare.output.artifact>"'),
            ],
        ),
    )


def start_and_wait_for_hold(pipeline, user):
    execution = run_pipeline(pipeline=pipeline, user=user, inputs={})
    wait_for(
        lambda: "started" in log_of(execution, "hold"), timeout=30, message="the hold step to start"
    )
    step = wait_for(
        lambda: StepRun.objects.filter(pk=step_of(execution, "hold").pk, pid__isnull=False).first(),
        message="the hold step's pid",
    )
    return execution, step


def kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def test_a_worker_killed_mid_step_fails_the_step_within_the_lease_and_a_retry_from_that_stage_succeeds(
    fault_workers, personas
):
    # A short visibility timeout, so that the restarted worker gets the killed task back.
    forget_unacked(broker_url())
    doomed = fault_workers(env={"STAGELINE_VISIBILITY_TIMEOUT": "2"})
    doomed.start("doomed", QUEUE, concurrency=1)
    pipeline = fragile_pipeline(personas.project)
    execution, step = start_and_wait_for_hold(pipeline, personas.executor)
    assert doomed.owner_of(worker_pid(step)) == "doomed"

    killed_at = time.monotonic()
    doomed.kill("doomed")
    try:
        wait_for(
            lambda: StepRun.objects.filter(pk=step.pk, status=Status.FAILED).exists(),
            timeout=30,
            interval=0.1,
            message="the lost step to be failed",
        )
        detected_after = time.monotonic() - killed_at
        execution = wait_for_status(execution, Status.FAILED, timeout=15)
    finally:
        kill_group(step.pid)  # the step's shell has its own session (see test_the_processes_…)

    # Lease 4 s (renewed every second) and a reaper every second: noticed within about 5 s.
    bound = doomed.lease_seconds + doomed.reaper_interval_seconds + 3
    print(f"worker lost detected after {detected_after:.1f}s (bound {bound}s)")
    assert detected_after <= bound, (
        f"the lost worker was noticed after {detected_after:.1f}s (> {bound}s)"
    )
    step.refresh_from_db()
    prepare, hold, after = execution.stage_runs.order_by("position")
    assert step.status == Status.FAILED and "worker lost" in step.error and step.attempts == 1
    assert (prepare.status, hold.status, after.status) == (
        Status.SUCCESS,
        Status.FAILED,
        Status.NOT_STARTED,
    )
    assert "worker lost" in hold.error and "worker lost" in execution.error

    # The broker still holds the killed worker's task; a new worker gets it back and must not
    # run the step again (it is FAILED now).
    doomed.start("doomed", QUEUE, concurrency=1)
    wait_for(
        lambda: f"run_step[step-{step.pk}-" in doomed.log_text("doomed"),
        timeout=20,
        message="the killed task to be delivered again",
    )
    time.sleep(1)
    step.refresh_from_db()
    assert step.status == Status.FAILED and step.attempts == 1, (
        "the redelivered task touched the lost step"
    )

    retry = create_retry(
        execution=execution, user=personas.executor, from_stage="hold", inputs={"hold.seconds": "0"}
    )
    retry = wait_for_status(retry, Status.SUCCESS, timeout=60)
    runs = {run.identifier: run for run in retry.stage_runs.all()}
    assert runs["prepare"].carried_from_id == prepare.pk
    assert doomed.owner_of(worker_pid(step_of(retry, "hold"))) == "doomed"
    assert "slept" in log_of(retry, "hold") and "after a1" in log_of(retry, "after")
    assert_each_step_ran_at_most_once(execution)
    assert_each_step_ran_at_most_once(retry)
    assert_nothing_active()


def test_the_processes_of_a_step_whose_worker_was_killed_are_gone_once_the_step_is_failed(
    fault_workers, personas
):
    """Otherwise a retry runs the stage while the lost run is still going: twice at once."""
    doomed = fault_workers()
    doomed.start("doomed", QUEUE, concurrency=1)
    pipeline = fragile_pipeline(personas.project)
    execution, step = start_and_wait_for_hold(pipeline, personas.executor)
    assert len(step_processes(step.pid)) >= 2, "bash and its sleep should be running"

    doomed.kill("doomed")
    try:
        wait_for_status(execution, Status.FAILED, timeout=30)
        left = step_processes(step.pid)
        assert not left, (
            f"the lost step's processes {left} still run after the step was failed: a retry "
            "would run the stage a second time beside them"
        )
    finally:
        kill_group(step.pid)


def test_a_worker_killed_in_a_step_it_claimed_itself_is_detected_the_same_way(
    fault_workers, personas
):
    """The engine's fast path (docs/performance.md): ``warm`` ends on the doomed worker, which
    claims ``hold`` in the same transaction and runs it in the same task, without the broker.
    Killed there, the worker leaves ``hold`` RUNNING with a lease, which lapses: the reaper
    fails it as any lost step, the task delivered again (``warm``'s) runs nothing, and a retry
    from ``hold`` succeeds."""
    forget_unacked(broker_url())
    doomed = fault_workers(env={"STAGELINE_VISIBILITY_TIMEOUT": "2"})
    doomed.start("doomed", QUEUE, concurrency=1)
    on_doomed = f"\n        runs_on: {QUEUE}"
    pipeline = make_pipeline(
        personas.project,
        serial_pipeline(
            "handover",
            [
                shell_stage("warm", 'echo "artifact=w1" >> "$STAGELINE_OUTPUT"', extra=on_doomed),
                shell_stage(
                    "hold",
                    'echo "started <+pipeline.stages.warm.output.artifact>"\n'
                    "sleep <+stage.variables.seconds>",
                    extra=on_doomed
                    + "\n        variables:"
                    + '\n          - {name: seconds, type: String, value: <+input>, default: "60"}',
                ),
                shell_stage("after", "echo after", extra=on_doomed),
            ],
        ),
    )
    execution, step = start_and_wait_for_hold(pipeline, personas.executor)
    warm = step_of(execution, "warm")
    assert step.worker == warm.worker and doomed.owner_of(worker_pid(step)) == "doomed"
    assert step.queued_at == step.started_at, "hold was claimed by warm's task, not sent"
    assert f"run_step[step-{step.pk}-" not in doomed.log_text("doomed")

    killed_at = time.monotonic()
    doomed.kill("doomed")
    try:
        wait_for(
            lambda: StepRun.objects.filter(pk=step.pk, status=Status.FAILED).exists(),
            timeout=30,
            interval=0.1,
            message="the lost step to be failed",
        )
        detected_after = time.monotonic() - killed_at
        execution = wait_for_status(execution, Status.FAILED, timeout=15)
    finally:
        kill_group(step.pid)
    bound = doomed.lease_seconds + doomed.reaper_interval_seconds + 3
    assert detected_after <= bound, f"noticed after {detected_after:.1f}s (> {bound}s)"
    step.refresh_from_db()
    assert step.status == Status.FAILED and "worker lost" in step.error and step.attempts == 1
    statuses = list(execution.stage_runs.order_by("position").values_list("status", flat=True))
    assert statuses == [Status.SUCCESS, Status.FAILED, Status.NOT_STARTED]

    # The task the broker still holds is warm's: delivered again, it finds warm done.
    doomed.start("doomed", QUEUE, concurrency=1)
    wait_for(
        lambda: f"run_step[step-{warm.pk}-" in doomed.log_text("doomed"),
        timeout=20,
        message="the killed task to be delivered again",
    )
    time.sleep(1)
    warm.refresh_from_db()
    step.refresh_from_db()
    assert (warm.status, warm.attempts) == (Status.SUCCESS, 1)
    assert (step.status, step.attempts) == (Status.FAILED, 1)

    retry = create_retry(
        execution=execution, user=personas.executor, from_stage="hold", inputs={"hold.seconds": "0"}
    )
    retry = wait_for_status(retry, Status.SUCCESS, timeout=60)
    assert "started w1" in log_of(retry, "hold") and "after" in log_of(retry, "after")
    assert_each_step_ran_at_most_once(execution)
    assert_each_step_ran_at_most_once(retry)
    assert_nothing_active()
