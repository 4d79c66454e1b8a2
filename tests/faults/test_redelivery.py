"""Tasks the broker delivers again: a step longer than the visibility timeout, and a poison
step that kills the worker running it every time."""

from __future__ import annotations

import re
import time

import pytest

from executions.models import Status, StepRun
from executions.services import run_pipeline
from stageline.processes import is_alive
from tests.faults.checks import assert_each_step_ran_at_most_once, assert_nothing_active
from tests.faults.servers import broker_url, forget_unacked
from tests.helpers.factories import make_pipeline, serial_pipeline, shell_stage
from tests.helpers.runs import log_of, step_of, wait_for, wait_for_status, worker_pid

pytestmark = pytest.mark.integration

VISIBILITY_SECONDS = 1
# The nearest ancestor of the step that is a Celery process is the pool process running it
# (``kill -9 $PPID``, whatever shells the runner puts in between): the worker dies mid-step.
KILL_MY_WORKER = """pid=$$
while [ "$pid" -gt 1 ]; do
  pid=$(awk '/^PPid:/ {print $2}' /proc/$pid/status)
  case "$(tr '\\0' ' ' < /proc/$pid/cmdline)" in *celery*) kill -9 "$pid"; break ;; esac
done"""


def received(log: str, step: StepRun) -> int:
    """How many times a worker's log says it received the task of ``step``."""
    return len(re.findall(rf"run_step\[step-{step.pk}-[0-9.]+\] received", log))


def test_a_step_longer_than_the_visibility_timeout_runs_exactly_once(
    fault_workers, personas, shared_dir
):
    forget_unacked(broker_url())
    slow = fault_workers(env={"STAGELINE_VISIBILITY_TIMEOUT": str(VISIBILITY_SECONDS)})
    slow.start("slow_a", "faults_slow", concurrency=1)
    runs, release = shared_dir / "runs", shared_dir / "release"
    pipeline = make_pipeline(
        personas.project,
        serial_pipeline(
            "long_step",
            [
                shell_stage(
                    "long",
                    # Runs until the test has seen the second delivery (at most the 1-minute timeout).
                    f'echo "$$" >> {runs}\necho started\nwhile [ ! -e {release} ]; do sleep 0.2; done\necho finished',
                    extra="\n        runs_on: faults_slow",
                )
            ],
        ),
    )
    execution = run_pipeline(pipeline=pipeline, user=personas.executor, inputs={})
    wait_for(
        lambda: "started" in log_of(execution, "long"), timeout=30, message="the step to start"
    )
    step = step_of(execution, "long")
    # A worker puts back unacknowledged tasks older than the visibility timeout when it starts
    # (and every few minutes): the task of the running step goes to this second worker.
    slow.start("slow_b", "faults_slow", concurrency=1, wait=False)
    wait_for(
        lambda: received(slow.log_text("slow_b"), step) == 1,
        timeout=60,
        message="the broker to deliver the running step's task a second time",
    )
    time.sleep(1)  # the second delivery is handled (or would start a second run) meanwhile
    redelivered_during_run = StepRun.objects.get(pk=step.pk).status == Status.RUNNING
    release.touch()

    execution = wait_for_status(execution, Status.SUCCESS, timeout=60)
    step.refresh_from_db()
    assert redelivered_during_run, (
        "the second delivery came after the step had ended: nothing was tested"
    )
    assert runs.read_text().count("\n") == 1, (
        f"the script ran {runs.read_text().count(chr(10))} times"
    )
    assert slow.owner_of(worker_pid(step)) == "slow_a"
    assert step.attempts == 1
    assert log_of(execution, "long").count("finished") == 1
    assert_each_step_ran_at_most_once(execution)


def test_a_step_that_kills_its_worker_every_time_ends_failed_instead_of_looping(
    fault_workers, personas, shared_dir
):
    # An isolated step cannot see, let alone kill, its worker (docs/security.md): this worker
    # runs its steps as its own user, without a sandbox, so that the poison can reach it.
    victim = fault_workers(env={"STAGELINE_STEP_ISOLATION": "same-user"})
    victim.start("victim", "faults_poison", concurrency=1)
    runs = shared_dir / "runs"
    pipeline = make_pipeline(
        personas.project,
        serial_pipeline(
            "poison",
            [
                shell_stage(
                    "poison",
                    f'echo "$$" >> {runs}\necho "killing my worker"\n{KILL_MY_WORKER}\nsleep 1\necho survived',
                    extra="\n        runs_on: faults_poison",
                )
            ],
        ),
    )
    started = time.monotonic()
    execution = run_pipeline(pipeline=pipeline, user=personas.executor, inputs={})
    execution = wait_for_status(execution, Status.FAILED, timeout=40)
    took = time.monotonic() - started
    step = step_of(execution, "poison")
    print(f"poison step failed after {took:.1f}s, {step.attempts} attempt(s)")
    # Stay a while: a looping task would be delivered and run again meanwhile.
    time.sleep(3 * victim.reaper_interval_seconds + 2)

    step.refresh_from_db()
    log = victim.log_text("victim")
    assert step.status == Status.FAILED and "worker lost" in step.error
    assert runs.read_text().count("\n") == 1, (
        f"the poison script ran {runs.read_text().count(chr(10))} times"
    )
    assert step.attempts == 1
    assert received(log, step) <= 2, f"the task was delivered {received(log, step)} times"
    assert "SIGKILL" in log, "the pool process was not killed: nothing was tested"
    assert took <= victim.lease_seconds + victim.reaper_interval_seconds + 10
    assert_each_step_ran_at_most_once(execution)

    # The worker replaced its pool process and keeps serving its queue.
    assert is_alive(victim.procs["victim"].pid)
    healthy = make_pipeline(
        personas.project,
        serial_pipeline(
            "after_poison",
            [shell_stage("fine", "echo fine", extra="\n        runs_on: faults_poison")],
        ),
    )
    healthy_run = wait_for_status(
        run_pipeline(pipeline=healthy, user=personas.executor, inputs={}), Status.SUCCESS
    )
    assert victim.owner_of(worker_pid(step_of(healthy_run, "fine"))) == "victim"
    assert_nothing_active()
