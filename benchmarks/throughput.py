"""Throughput: many executions of a short pipeline at once, on the benchmark's workers.

All executions are created in one transaction, so their first steps are dispatched together
when it commits (the burst starts then). Each step appends ``execution stage`` to a ledger
file outside the database, which is how "none lost, none run twice" is checked without
trusting the engine's own rows: every (execution, stage) must appear in it exactly once.

- *stage transitions/s*: stages that ended SUCCESS, divided by the time from the commit to
  the last execution's ``finished_at`` (the engine moves from one stage to the next once per
  stage); status changes/s counts every ``Event`` of these executions instead.
- *dispatch latency*: a step's ``queued_at`` → ``started_at``. In a burst it includes the
  wait for a free worker slot: it says how long a dispatched step waits, not what the broker
  adds (the engine benchmark measures that without a backlog).
- the baseline: as many bare Celery chains of as many hops (``benchmarks.tasks``), sent at
  once to the same workers; its stages/s is hops ÷ (sent → the last hop's end). The bursts
  alternate (Stageline, chain, Stageline, chain …: ``rounds``) and the ratio compares the
  medians.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Max, Q

from benchmarks import fixtures, tasks
from benchmarks.report import Report, median, ms, percentile, spread
from executions.models import Event, Execution, StageRun, StepRun
from executions.services import run_pipeline
from executions.states import ACTIVE, Status

TRANSITIONS_TARGET = 200.0
# Stageline's burst stages/s / the bare chains' (issue 16): at least half.
CHAIN_RATIO_TARGET = 0.5


def chain_burst(executions: int, stages: int, timeout: float, queue: str) -> float:
    """Stages (hops) per second of ``executions`` bare chains of ``stages`` hops sent at once."""
    workdir = Path(settings.VAR_DIR) / "bench"
    script = workdir / "hop.sh"
    script.write_text("true\n")
    ledger = workdir / f"chains-{time.time_ns()}.txt"
    sent = time.time()
    tasks.send_chains(executions, stages, str(script), str(ledger), queue)
    expected = executions * stages
    deadline = time.monotonic() + timeout
    while True:
        lines = ledger.read_text().splitlines() if ledger.exists() else []
        if len(lines) >= expected:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"the bare chains did only {len(lines)} of {expected} hops within {timeout:.0f}s"
            )
        time.sleep(0.01)
    last = max(float(line.split()[2]) for line in lines)
    ledger.unlink()
    return expected / (last - sent)


def measure(
    report: Report,
    *,
    executions: int,
    stages: int,
    workers: int,
    timeout: float,
    queue: str,
    rounds: int = 1,
) -> dict:
    rates, chain_rates = [], []
    result: dict = {}
    bad_rounds = 0
    for _ in range(rounds):
        result = burst(executions=executions, stages=stages, timeout=timeout, queue=queue)
        rates.append(result["rate"])
        bad_rounds += any(met is False for *_, met in result["figures"])
        chain_rates.append(chain_burst(executions, stages, timeout, queue))
    section = f"throughput: {executions} x {stages} stages, {workers} workers"
    rate, chain_rate = median(rates), median(chain_rates)
    report.add(
        section,
        "stage transitions/s",
        f"{rate:,.1f}/s (median of {rounds}; last: {result['stages']} stages in "
        f"{result['wall']:.1f} s)",
        f">= {TRANSITIONS_TARGET:.0f}/s",
        rate >= TRANSITIONS_TARGET,
    )
    report.add(
        section,
        "bare Celery chains at once, stages/s",
        f"{chain_rate:,.1f}/s ({executions} chains of {stages}, median of {rounds})",
    )
    ratio = rate / chain_rate if chain_rate else float("nan")
    report.add(
        section,
        "Stageline / bare chains (stages/s)",
        f"{ratio:.2f}",
        f">= {CHAIN_RATIO_TARGET}",
        ratio >= CHAIN_RATIO_TARGET,
    )
    for name, value, target, met in result["figures"]:
        report.add(section, name, value, target, met)
    if rounds > 1:
        report.add(
            section,
            "rounds with a step lost, run twice or failed (above: the last)",
            f"{bad_rounds} of {rounds}",
            "0",
            bad_rounds == 0,
        )
    return {**result, "rates": rates, "chain_rates": chain_rates}


def burst(*, executions: int, stages: int, timeout: float, queue: str) -> dict:
    """One burst of ``executions`` executions of a ``stages``-stage pipeline; its figures."""
    project = fixtures.project("throughput", "Throughput benchmark")
    user = fixtures.runner()
    ledger = fixtures.step_shared_dir() / "ledger.txt"
    script = f'echo "$STAGELINE_EXECUTION_ID $STAGELINE_STAGE" >> {ledger}'
    pipeline = fixtures.pipeline(
        project, f"burst_{stages}", fixtures.serial_groups(stages), script=script, runs_on=queue
    )
    ledger.write_text("")
    ledger.chmod(0o666)  # steps may run as another user (docs/security.md): they append to it

    committed: list[float] = []
    with transaction.atomic():
        transaction.on_commit(lambda: committed.append(time.time()))
        ids = [run_pipeline(pipeline=pipeline, user=user, inputs={}).pk for _ in range(executions)]
    start = committed[0]

    deadline = time.monotonic() + timeout
    while Execution.objects.filter(pk__in=ids, status__in=list(ACTIVE)).exists():
        if time.monotonic() > deadline:
            break
        time.sleep(0.2)
    waited = time.time() - start

    rows = Execution.objects.filter(pk__in=ids)
    by_status = Counter(rows.values_list("status", flat=True))
    last = rows.aggregate(last=Max("finished_at"))["last"]
    wall = (last.timestamp() - start) if last else waited
    stage_successes = StageRun.objects.filter(execution_id__in=ids, status=Status.SUCCESS).count()
    events = Event.objects.filter(execution_id__in=ids).count()
    steps = StepRun.objects.filter(execution_id__in=ids)
    dispatch = [
        (started - queued).total_seconds()
        for queued, started in steps.filter(
            queued_at__isnull=False, started_at__isnull=False
        ).values_list("queued_at", "started_at")
        if queued is not None and started is not None
    ]
    redelivered = steps.filter(attempts__gt=1).count()
    claimed_twice = (
        Event.objects.filter(execution_id__in=ids, step_run__isnull=False, to_status=Status.RUNNING)
        .values("step_run")
        .annotate(n=Count("id"))
        .filter(n__gt=1)
        .count()
    )
    seen = Counter(tuple(line.split()) for line in ledger.read_text().splitlines() if line.strip())
    expected = {
        (str(pk), identifier)
        for pk, identifier in StageRun.objects.filter(execution_id__in=ids).values_list(
            "execution_id", "identifier"
        )
    }
    missing = len(expected - set(seen))
    twice = sum(1 for key, count in seen.items() if count > 1)
    unfinished = rows.filter(~Q(status=Status.SUCCESS)).count()

    rate = stage_successes / wall if wall > 0 else 0.0
    figures: list[tuple[str, str, str, bool | None]] = []

    def add(name: str, value: str, target: str = "", met: bool | None = None) -> None:
        figures.append((name, value, target, met))

    add("status changes/s (every Event)", f"{events / wall if wall else 0:,.1f}/s")
    add("executions per second", f"{executions / wall if wall else 0:,.2f}/s")
    add("dispatch latency (queued -> started), p95", ms(percentile(dispatch, 95)))
    add("dispatch latency", spread(dispatch))
    statuses = ", ".join(f"{count} {status}" for status, count in sorted(by_status.items()))
    add(
        "executions that did not succeed",
        f"{unfinished} ({statuses})",
        "0",
        unfinished == 0,
    )
    add("steps lost (never ran)", str(missing), "0", missing == 0)
    add(
        "steps run twice",
        f"{twice} (ledger), {claimed_twice} (claims)",
        "0",
        twice == 0 and claimed_twice == 0,
    )
    add("task redeliveries (attempts > 1)", str(redelivered))
    return {
        "wall": wall,
        "rate": rate,
        "ids": ids,
        "stages": stage_successes,
        "figures": figures,
    }
