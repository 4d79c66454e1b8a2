"""Pipelines on separate worker processes: pools chosen by ``runs_on``, a worker lost mid-step,
an abort that reaches into another process, and RabbitMQ as the broker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from executions.models import Execution, StepRun
from executions.services import abort_execution, run_pipeline
from executions.states import ACTIVE, Status
from stageline.processes import is_alive, parent_of, step_processes
from stageline.workers import ROOT
from tests.helpers.factories import make_pipeline, serial_pipeline, shell_stage
from tests.helpers.runs import log_of, step_of, wait_for, wait_for_status, worker_pid

pytestmark = pytest.mark.integration

AMQP_URL = os.environ.get("STAGELINE_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")


def on(queue: str) -> str:
    """The YAML that sends a stage (``shell_stage(extra=…)``) to the workers of ``queue``."""
    return f"\n        runs_on: {queue}"


def test_each_stage_runs_on_a_worker_of_the_pool_named_by_runs_on(workers, personas):
    workers.start("pool_a", "pool_a", concurrency=1, wait=False)
    workers.start("pool_b", "pool_b", concurrency=1, wait=False)
    workers.wait_until_ready("pool_a", "pool_b")
    pipeline = make_pipeline(
        personas.project,
        serial_pipeline(
            "pools",
            [
                shell_stage(
                    "build", 'echo "artifact=built-on-a" >> "$STAGELINE_OUTPUT"', extra=on("pool_a")
                ),
                shell_stage(
                    "deploy",
                    'echo "deploying <+pipeline.stages.build.output.artifact>"',
                    extra=on("pool_b"),
                ),
                shell_stage("notify", "echo done"),
            ],
        ),
    )
    execution = wait_for_status(
        run_pipeline(pipeline=pipeline, user=personas.executor, inputs={}), Status.SUCCESS
    )

    ran_on = {
        stage: workers.owner_of(worker_pid(step_of(execution, stage)))
        for stage in ("build", "deploy", "notify")
    }
    assert ran_on == {"build": "pool_a", "deploy": "pool_b", "notify": "w1"}
    assert "deploying built-on-a" in log_of(execution, "deploy")


def test_a_worker_killed_mid_step_is_reaped_within_the_lease_and_a_fresh_run_then_succeeds(
    workers, personas
):
    workers.start("doomed", "doomed", concurrency=1)
    pipeline = make_pipeline(
        personas.project,
        serial_pipeline(
            "fragile",
            [
                shell_stage(
                    "hold", "echo started; sleep <+pipeline.variables.seconds>", extra=on("doomed")
                ),
                shell_stage("after", "echo after"),
            ],
            variables='- {name: seconds, type: String, value: <+input>, default: "60"}',
        ),
    )
    execution = run_pipeline(pipeline=pipeline, user=personas.executor, inputs={})
    wait_for(lambda: "started" in log_of(execution, "hold"), message="the step to start")
    step = wait_for(
        lambda: StepRun.objects.filter(pk=step_of(execution, "hold").pk, pid__isnull=False).first()
    )
    assert workers.owner_of(worker_pid(step)) == "doomed"

    killed_at = time.monotonic()
    workers.kill("doomed")
    try:
        execution = wait_for_status(execution, Status.FAILED, timeout=30)
        took = time.monotonic() - killed_at
    finally:
        # The step's shell runs in its own session, so it outlives its SIGKILLed worker.
        try:
            os.killpg(step.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    # The lease is 4 s, the heartbeat 1 s and the reaper runs every second (tests/helpers/workers.py).
    bound = workers.lease_seconds + workers.reaper_interval_seconds + 3
    assert took <= bound, f"the lost worker was noticed after {took:.1f}s, more than {bound}s"
    step.refresh_from_db()
    hold, after = execution.stage_runs.order_by("position")
    assert step.status == Status.FAILED and "worker lost" in step.error
    assert hold.status == Status.FAILED and "worker lost" in hold.error
    assert after.status == Status.NOT_STARTED
    assert "worker lost" in execution.error
    assert not Execution.objects.filter(status__in=ACTIVE).exists()
    assert not StepRun.objects.filter(status__in=ACTIVE).exists()

    workers.start("doomed", "doomed", concurrency=1)
    fresh = run_pipeline(pipeline=pipeline, user=personas.executor, inputs={"seconds": "0"})
    fresh = wait_for_status(fresh, Status.SUCCESS)
    assert workers.owner_of(worker_pid(step_of(fresh, "hold"))) == "doomed"
    assert "after" in log_of(fresh, "after")


def test_abort_kills_the_whole_process_group_of_a_step_in_another_process(workers, personas):
    pipeline = make_pipeline(
        personas.project,
        serial_pipeline(
            "long",
            # The subshell leaves a grandchild that is no longer bash's child: only a kill of
            # the whole process group reaches it.
            [shell_stage("sleepy", "(sleep 600 &)\necho started\nsleep 600")],
        ),
    )
    execution = run_pipeline(pipeline=pipeline, user=personas.executor, inputs={})
    wait_for(lambda: "started" in log_of(execution, "sleepy"), message="the step to start")
    step = wait_for(
        lambda: StepRun.objects.filter(
            pk=step_of(execution, "sleepy").pk, pid__isnull=False
        ).first()
    )
    shell = step.pid
    assert workers.owner_of(parent_of(shell)) == "w1", (
        "the step's shell is not a child of the worker"
    )
    assert workers.owner_of(worker_pid(step)) == "w1"
    wait_for(lambda: len(step_processes(shell)) >= 3, timeout=10, message="bash and both sleeps")

    abort_execution(execution=execution, user=personas.executor)

    execution = wait_for_status(execution, Status.ABORTED, timeout=15)
    wait_for(
        lambda: not step_processes(shell),
        timeout=15,
        message="no process left of the step",
    )
    wait_for(
        lambda: "aborted" in log_of(execution, "sleepy"), timeout=15, message="the worker's note"
    )
    step.refresh_from_db()
    assert step.status == Status.ABORTED
    assert is_alive(workers.procs["w1"].pid), "aborting a step must not take its worker down"


def test_a_pipeline_runs_end_to_end_with_rabbitmq_as_the_broker(workers, personas):
    queue = "stageline_ci_rabbit"  # a queue of our own on the shared vhost
    workers.start("rabbit", queue, concurrency=1, broker_url=AMQP_URL)
    pipeline = make_pipeline(
        personas.project,
        serial_pipeline(
            "rabbit",
            [
                shell_stage(
                    "hop", 'echo "greeting=hello over amqp" >> "$STAGELINE_OUTPUT"', extra=on(queue)
                ),
                shell_stage(
                    "land", 'echo "<+pipeline.stages.hop.output.greeting>"', extra=on(queue)
                ),
            ],
        ),
    )
    # Dispatch from another process configured for RabbitMQ, as a web server would.
    command = subprocess.run(
        [
            sys.executable,
            "manage.py",
            "run_pipeline",
            f"acme/web/{pipeline.identifier}",
            "--as",
            "executor",
            "--wait",
        ],
        cwd=ROOT,
        env=workers.env(CELERY_BROKER_URL=AMQP_URL),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert command.returncode == 0, command.stdout + command.stderr
    execution = Execution.objects.get(pk=int(command.stdout.split()[0]))
    assert execution.status == Status.SUCCESS
    assert "hello over amqp" in log_of(execution, "land")
    assert {
        workers.owner_of(worker_pid(step)) for step in StepRun.objects.filter(execution=execution)
    } == {"rabbit"}
