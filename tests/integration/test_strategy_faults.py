"""Failure strategies (SPEC §9, issue 13 points 2 and 3) against real faults, on real worker
processes: a worker and the scheduler SIGKILLed during a retry's 10 s interval, two reapers
racing for the same due wait, a worker SIGKILLed mid-step with a ``worker_lost`` retry rule,
and a worker thought lost that was only frozen."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from django.utils import timezone

from executions.models import Event, Execution, LogChunk, PendingWait, StepAttempt, StepRun
from executions.services import run_pipeline
from executions.states import Status
from stageline.processes import step_processes
from stageline.workers import ROOT
from tests.helpers.factories import make_pipeline
from tests.helpers.runs import step_of, wait_for, wait_for_status, worker_pid

pytestmark = pytest.mark.integration

QUEUE = "strategy_pool"


def flaky_pipeline(personas, identifier: str, rule: str, script: str):
    """One stage on ``QUEUE`` whose step runs ``script`` with the failure strategy ``rule``,
    then a stage ``next`` that echoes (on the session's worker)."""
    body = textwrap.indent(textwrap.dedent(script).strip(), " " * 18)
    return make_pipeline(
        personas.project,
        f"""pipeline:
  name: {identifier}
  identifier: {identifier}
  stages:
    - stage:
        identifier: flaky
        runs_on: {QUEUE}
        steps:
          - step:
              identifier: run
              type: ShellScript
              timeout: 5m
              failure_strategies:
                - {rule}
              spec:
                script: |
{body}
    - stage:
        identifier: next
        steps:
          - step: {{identifier: run, type: ShellScript, spec: {{script: echo next ran}}}}
""",
    )


# Each attempt appends a line to ``runs``; the first one fails (exit 1), later ones pass.
FAIL_ONCE = """\
echo "attempt $(date +%s.%N)" >> {d}/runs
echo "this is run $(wc -l < {d}/runs)"
[ -e {d}/failed ] || {{ touch {d}/failed; exit 1; }}
"""


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def claims(step: StepRun) -> int:
    """How many times the step was claimed by a worker (QUEUED → RUNNING)."""
    return Event.objects.filter(
        step_run=step, from_status=Status.QUEUED, to_status=Status.RUNNING
    ).count()


def ensure_session_processes(workers) -> None:
    """The session's worker and beat run again (whatever a test killed)."""
    started = []
    if "w1" not in workers.procs:
        workers.start("w1", "default", concurrency=2, wait=False)
        started.append("w1")
    if "beat" not in workers.procs:
        workers.start_beat(wait=False)
        started.append("beat")
    workers.wait_until_ready(*started)


def kill_group(pgid: int | None) -> None:
    if pgid:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_every_worker_and_the_scheduler_killed_during_a_10s_retry_interval_lose_nothing_and_the_attempt_runs_once(
    workers, personas, shared_dir
):
    workers.start("s1", QUEUE, concurrency=1)
    pipeline = flaky_pipeline(
        personas,
        "interval_kill",
        "on_failure: {errors: [script], action: {type: retry, retry: {count: 1, intervals: [10s]}}}",
        FAIL_ONCE.format(d=shared_dir),
    )
    execution = run_pipeline(pipeline=pipeline, user=personas.executor, inputs={})
    wait = wait_for(
        lambda: PendingWait.objects.filter(execution=execution).first(),
        message="the retry's wait",
    )
    step = step_of(execution, "flaky")
    assert step.status == Status.QUEUED and step.attempts == 1
    first = StepAttempt.objects.get(step_run=step, number=1)  # archived when the retry began
    assert workers.owner_of(int(first.worker.rpartition(":")[2])) == "s1"

    # Kill -9 everything that could start the attempt: the pool's worker, the session's worker
    # (it runs the reaper's tasks) and the beat (it sends them), during the interval.
    try:
        for name in ("s1", "w1", "beat"):
            workers.kill(name)
        killed_at = timezone.now()
        left = (wait.due_at - killed_at).total_seconds()
        print(f"all killed {left:.1f}s before the attempt was due")
        assert left > 2, "the kill should fall inside the 10 s interval"
        # Nothing runs the scheduler now: the wait stays pending, the step queued.
        time.sleep(1)
        assert PendingWait.objects.get(pk=wait.pk).state == PendingWait.State.PENDING
        # Fresh processes: a new worker on the pool, and the scheduler restarted.
        workers.start("s2", QUEUE, concurrency=1, wait=False)
    finally:
        ensure_session_processes(workers)
    workers.wait_until_ready("s2")

    execution = wait_for_status(execution, Status.SUCCESS, timeout=90)
    step = step_of(execution, "flaky")
    runs = lines(shared_dir / "runs")
    assert len(runs) == 2, f"the step ran {len(runs)} times: {runs}"
    second = float(runs[1].split()[1])
    print(
        f"attempt 2 started {second - wait.due_at.timestamp():.1f}s after its due time "
        f"(the kill was {left:.1f}s before it)"
    )
    assert second >= wait.due_at.timestamp() - 0.5, "the attempt ran before its interval ended"
    assert (step.status, step.attempts, step.exit_code) == (Status.SUCCESS, 2, 0)
    assert claims(step) == 2
    assert Event.objects.filter(step_run=step, action="strategy.retry").count() == 1
    assert PendingWait.objects.filter(step_run=step).count() == 1
    assert PendingWait.objects.get(pk=wait.pk).state == PendingWait.State.STARTED
    assert workers.owner_of(worker_pid(step)) == "s2"
    # Each attempt keeps its own log; the failed one is archived.
    assert [a.number for a in StepAttempt.objects.filter(step_run=step)] == [1]
    logs = {
        number: "".join(c.text for c in LogChunk.objects.filter(step_run=step, attempt=number))
        for number in (1, 2)
    }
    assert ("this is run 1" in logs[1], "this is run 2" in logs[2]) == (True, True), logs
    assert step_of(execution, "next").status == Status.SUCCESS


REAP_WHEN_TOLD = """
import sys, time
from pathlib import Path
import django
django.setup()
from executions import engine
go = Path(sys.argv[1])
print("ready", flush=True)
while not go.exists():
    time.sleep(0.005)
started, until = 0, time.monotonic() + 3
while time.monotonic() < until:
    started += engine.reap()["waits_started"]
print(started)
"""


def test_two_schedulers_reaping_the_same_due_wait_start_one_attempt(
    workers, personas, shared_dir, tmp_path
):
    workers.start("s1", QUEUE, concurrency=1)
    pipeline = flaky_pipeline(
        personas,
        "two_reapers",
        "on_failure: {errors: [script], action: {type: retry, retry: {count: 1, intervals: [10m]}}}",
        FAIL_ONCE.format(d=shared_dir),
    )
    execution = run_pipeline(pipeline=pipeline, user=personas.executor, inputs={})
    wait = wait_for(
        lambda: PendingWait.objects.filter(execution=execution).first(),
        message="the retry's wait",
    )
    # The session's scheduler (the beat, and the worker that runs its reaps) is stopped during
    # the wait; two others take over and reap in a loop from the same instant, once it is due.
    go = tmp_path / "go"
    try:
        workers.kill("beat")
        workers.kill("w1")
        reapers = [
            subprocess.Popen(
                [sys.executable, "-c", REAP_WHEN_TOLD, str(go)],
                cwd=ROOT,
                env=workers.env(),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        for reaper in reapers:
            assert reaper.stdout is not None and reaper.stdout.readline().strip() == "ready"
        assert PendingWait.objects.get(pk=wait.pk).state == PendingWait.State.PENDING
        PendingWait.objects.filter(pk=wait.pk).update(due_at=timezone.now())
        go.touch()
        outputs = [reaper.communicate(timeout=60) for reaper in reapers]
    finally:
        ensure_session_processes(workers)
    for reaper, (_out, err) in zip(reapers, outputs, strict=True):
        assert reaper.returncode == 0, err[-2000:]
    started = [int(out.split()[-1]) for out, _ in outputs]
    print(f"waits started by each reaper: {started}")
    assert sorted(started) == [0, 1], "exactly one scheduler starts the due wait"

    execution = wait_for_status(execution, Status.SUCCESS, timeout=60)
    time.sleep(2)  # the restarted beat's reaps start nothing more either
    step = step_of(execution, "flaky")
    assert len(lines(shared_dir / "runs")) == 2
    assert (step.status, step.attempts) == (Status.SUCCESS, 2)
    assert claims(step) == 2
    assert PendingWait.objects.get(pk=wait.pk).state == PendingWait.State.STARTED


def first_attempt_on_one_of_two(workers, personas, identifier: str, script: str):
    """Two workers "a" and "b" of one pool; a run of a pipeline whose step retries once when its
    worker is lost. Returns the execution, its step's first attempt once running (with its pid),
    and the name of the worker that runs it."""
    workers.start("a", QUEUE, concurrency=1, wait=False)
    workers.start("b", QUEUE, concurrency=1, wait=False)
    workers.wait_until_ready("a", "b")
    pipeline = flaky_pipeline(
        personas,
        identifier,
        "on_failure: {errors: [worker_lost], action: {type: retry, retry: {count: 1}}}",
        script,
    )
    execution = run_pipeline(pipeline=pipeline, user=personas.executor, inputs={})
    first = wait_for(
        lambda: StepRun.objects.filter(
            pk=step_of(execution, "flaky").pk, status=Status.RUNNING, pid__isnull=False
        ).first(),
        message="the first attempt to start",
    )
    return execution, first, workers.owner_of(worker_pid(first))


# The first attempt hangs (until its worker is killed); the second one passes.
HANG_ONCE = """\
echo "attempt $$" >> {d}/runs
echo started
[ "$(wc -l < {d}/runs)" -ge 2 ] || sleep 600
"""


def test_a_worker_killed_mid_step_with_a_worker_lost_rule_gets_a_new_attempt_on_another_worker(
    workers, personas, shared_dir
):
    execution, first, doomed = first_attempt_on_one_of_two(
        workers, personas, "lost_retry", HANG_ONCE.format(d=shared_dir)
    )
    assert doomed in {"a", "b"}
    other = "b" if doomed == "a" else "a"

    killed_at = time.monotonic()
    workers.kill(doomed)
    try:
        execution = wait_for_status(execution, Status.SUCCESS, timeout=60)
        took = time.monotonic() - killed_at
    finally:
        kill_group(first.pid)  # the lost attempt's shell, if it outlived its worker
    print(f"worker {doomed} killed; attempt 2 on {other}, the run ended SUCCESS {took:.1f}s later")

    step = step_of(execution, "flaky")
    assert (step.status, step.attempts, step.exit_code) == (Status.SUCCESS, 2, 0)
    assert step.worker != first.worker
    assert workers.owner_of(worker_pid(step)) == other
    assert len(lines(shared_dir / "runs")) == 2
    assert claims(step) == 2
    retry = Event.objects.get(step_run=step, action="strategy.retry")
    assert retry.message.startswith("retry 1 of 1 (worker_lost failure, attempt 1: ")
    assert Event.objects.filter(step_run=step, to_status=Status.FAILED).count() == 0
    # Lease 4 s, reaper every second, then a new claim: well within the lease and a few s.
    bound = workers.lease_seconds + workers.reaper_interval_seconds + 5
    assert took <= bound, f"attempt 2 ended {took:.1f}s after the kill (> {bound}s)"
    assert step_of(execution, "next").status == Status.SUCCESS


# The first attempt sleeps 30 s then writes "late"; the second sleeps 6 s then passes.
SLOW_ONCE = """\
echo "attempt $$" >> {d}/runs
echo started
if [ "$(wc -l < {d}/runs)" -ge 2 ]; then sleep 6; else sleep 30; echo late >> {d}/runs; fi
"""


def test_a_worker_thought_lost_but_alive_kills_its_stale_attempt_when_it_comes_back(
    workers, personas, shared_dir
):
    execution, first, frozen = first_attempt_on_one_of_two(
        workers, personas, "frozen", SLOW_ONCE.format(d=shared_dir)
    )
    other = "b" if frozen == "a" else "a"
    stale = step_processes(first.pid)
    assert stale, "the first attempt's processes"
    group = workers.procs[frozen].pid

    # The worker stops (SIGSTOP: alive, but it renews nothing); its step's processes run on.
    os.killpg(group, signal.SIGSTOP)
    try:
        second = wait_for(
            lambda: StepRun.objects.filter(
                pk=first.pk, status=Status.RUNNING, attempts=2, pid__isnull=False
            ).first(),
            timeout=30,
            message="attempt 2 to start on the other worker",
        )
        assert workers.owner_of(worker_pid(second)) == other
        assert step_processes(first.pid), "the stale attempt still runs while its worker sleeps"
    finally:
        os.killpg(group, signal.SIGCONT)
    resumed_at = time.monotonic()
    # Its next lease check sees that the step's attempt moved on: it kills its processes, while
    # attempt 2 still runs, and its result is dropped.
    try:
        wait_for(
            lambda: not step_processes(first.pid),
            timeout=15,
            message="the stale attempt's processes to be killed",
        )
    finally:
        kill_group(first.pid)
    took = time.monotonic() - resumed_at
    print(f"the stale attempt was killed {took:.1f}s after its worker came back")
    assert StepRun.objects.get(pk=first.pk).status == Status.RUNNING, (
        "the stale attempt ran on until attempt 2 had ended"
    )

    execution = wait_for_status(execution, Status.SUCCESS, timeout=60)
    step = step_of(execution, "flaky")
    assert (step.status, step.attempts, step.exit_code) == (Status.SUCCESS, 2, 0)
    assert workers.owner_of(worker_pid(step)) == other
    assert "late" not in lines(shared_dir / "runs")
    assert claims(step) == 2
    # The stale attempt renewed no lease of attempt 2 and wrote nothing over its result.
    assert Execution.objects.get(pk=execution.pk).status == Status.SUCCESS
