"""Engine overhead: what Stageline adds between one stage and the next, against a bare Celery chain.

Figures, all read from the rows the engine wrote:

- *transition*: the previous stage (for a parallel group: the last of its stages) reached
  SUCCESS (``StageRun.finished_at``, stamped in the transaction that commits it) → the next
  stage's first step started on a worker (``StepRun.started_at``, its QUEUED → RUNNING claim).
  It is split into *engine* (→ ``StepRun.queued_at``: the reconciler queued the step) and
  *dispatch* (``queued_at`` → ``started_at``: commit, broker, a worker takes the task), and
  the *step → stage* part that comes before it (the step's ``finished_at`` → the stage's).
- *overhead of the run*: wall time (submitted → the execution's ``finished_at``) minus the
  time during which at least one step was running (for a serial pipeline: minus the steps'
  own time). That is the time the run spent in Stageline rather than in its steps.
- the baseline: a Celery chain of as many tasks, each running the same one-line script the
  way a ShellScript step does, on the same workers; its hop is one task's end → the next
  task's start, and the ratio compares the whole-run times.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.db import close_old_connections, connection
from django.test.utils import CaptureQueriesContext

from benchmarks import fixtures, tasks
from benchmarks.report import Report, median, ms, percentile, spread
from benchmarks.workers import purge
from executions import engine
from executions.models import Execution, StepRun
from executions.services import run_pipeline
from executions.states import ACTIVE, Status
from pipelines.services import save_pipeline

TRANSITION_P50_TARGET = 0.015
TRANSITION_P95_TARGET = 0.050
RATIO_TARGET = 2.0


def _ts(value) -> float:
    return value.timestamp()


def union_seconds(intervals: list[tuple[float, float]]) -> float:
    """How long at least one of ``intervals`` was open."""
    total, current_start, current_end = 0.0, None, None
    for start, end in sorted(intervals):
        if current_end is None or start > current_end:
            if current_end is not None:
                total += current_end - current_start
            current_start, current_end = start, end
        else:
            current_end = max(current_end, end)
    if current_end is not None:
        total += current_end - current_start
    return total


@dataclass
class RunTimes:
    """The times of one run (a Stageline execution or a bare chain)."""

    wall: float = 0.0
    busy: float = 0.0  # time during which at least one step/task was running
    step_total: float = 0.0  # the steps' own time, summed
    step_times: list[float] = field(default_factory=list)
    transitions: list[float] = field(default_factory=list)  # per stage (per hop for a chain)
    group_transitions: list[float] = field(default_factory=list)  # first stage of each group
    engine: list[float] = field(default_factory=list)
    dispatch: list[float] = field(default_factory=list)
    step_to_stage: list[float] = field(default_factory=list)
    first_start: float = 0.0  # submitted → first step started
    status: str = ""

    @property
    def overhead(self) -> float:
        return self.wall - self.busy


def wait_for_execution(execution_id: int, timeout: float) -> Execution:
    deadline = time.monotonic() + timeout
    while True:
        execution = Execution.objects.get(pk=execution_id)
        if execution.status not in ACTIVE and execution.finished_at is not None:
            return execution
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"execution {execution_id} did not finish within {timeout:.0f}s (it is {execution.status})"
            )
        time.sleep(0.05)


def analyse_execution(execution: Execution, submitted: float) -> RunTimes:
    """The times of one finished execution, from its stage and step rows."""
    stages = list(execution.stage_runs.order_by("position").prefetch_related("step_runs"))
    times = RunTimes(status=execution.status, wall=_ts(execution.finished_at) - submitted)
    intervals = []
    groups: dict[int, list] = {}
    for stage in stages:
        groups.setdefault(stage.group_index, []).append(stage)
        for step in stage.step_runs.all():
            if step.started_at and step.finished_at:
                own = _ts(step.finished_at) - _ts(step.started_at)
                times.step_times.append(own)
                times.step_total += own
                intervals.append((_ts(step.started_at), _ts(step.finished_at)))
    times.busy = union_seconds(intervals)
    if intervals:
        times.first_start = min(start for start, _ in intervals) - submitted
    previous_done: float | None = None
    for index in sorted(groups):
        members = groups[index]
        firsts = []
        for stage in members:
            steps = sorted(stage.step_runs.all(), key=lambda s: s.position)
            if not steps or steps[0].started_at is None:
                continue
            first, last = steps[0], steps[-1]
            firsts.append(_ts(first.started_at))
            if previous_done is not None:
                times.transitions.append(_ts(first.started_at) - previous_done)
                times.engine.append(_ts(first.queued_at) - previous_done)
                times.dispatch.append(_ts(first.started_at) - _ts(first.queued_at))
            if last.finished_at and stage.finished_at:
                times.step_to_stage.append(_ts(stage.finished_at) - _ts(last.finished_at))
        if previous_done is not None and firsts:
            times.group_transitions.append(min(firsts) - previous_done)
        done = [_ts(stage.finished_at) for stage in members if stage.finished_at]
        previous_done = max(done) if done else None
    return times


def run_execution(pipeline, user, timeout: float) -> RunTimes:
    submitted = time.time()
    execution = run_pipeline(pipeline=pipeline, user=user, inputs={})
    finished = wait_for_execution(execution.pk, timeout)
    return analyse_execution(finished, submitted)


def run_chain(length: int, workdir: Path, timeout: float, queue: str) -> RunTimes:
    """Send a bare chain of ``length`` hops and read its times from the hops' ledger."""
    script = workdir / "hop.sh"
    script.write_text("true\n")
    ledger = workdir / f"chain-{time.time_ns()}.txt"
    submitted = time.time()
    tasks.send_chain(length, str(script), str(ledger), queue)
    deadline = time.monotonic() + timeout
    while True:
        lines = ledger.read_text().splitlines() if ledger.exists() else []
        if len(lines) >= length:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"the bare chain did only {len(lines)} of {length} hops within {timeout:.0f}s"
            )
        time.sleep(0.01)
    hops = sorted((int(i), float(s), float(e)) for i, s, e in (line.split() for line in lines))
    ledger.unlink()
    times = RunTimes(
        status=Status.SUCCESS, wall=hops[-1][2] - submitted, first_start=hops[0][1] - submitted
    )
    times.step_times = [end - start for _, start, end in hops]
    times.step_total = sum(times.step_times)
    times.busy = union_seconds([(start, end) for _, start, end in hops])
    times.transitions = [hops[i][1] - hops[i - 1][2] for i in range(1, len(hops))]
    return times


def queries_per_stage(queue: str, stages: int = 5) -> tuple[list[int], Counter]:
    """Database statements one stage costs, counted in this process: run each step of a
    pipeline whose stages go to ``queue``, which no worker serves, by calling the engine's ``run_step``
    here (claim, run, store the result, advance to the next stage). Per middle stage: the
    count, and the statements by kind over all of them."""
    project = fixtures.project("engine", "Engine benchmark")
    yaml_text = fixtures.pipeline_yaml("probe", fixtures.serial_groups(stages), runs_on=queue)
    pipeline = save_pipeline(project=project, yaml_text=yaml_text).pipeline
    execution = run_pipeline(pipeline=pipeline, user=fixtures.runner(), inputs={})
    counts: list[int] = []
    kinds: Counter = Counter()
    try:
        for position in range(stages):
            step = StepRun.objects.get(execution=execution, status=Status.QUEUED)
            with CaptureQueriesContext(connection) as captured:
                engine.run_step(step.pk)
            if (
                0 < position < stages - 1
            ):  # not the first (no stage before) nor the last (ends the run)
                counts.append(len(captured.captured_queries))
                kinds.update(q["sql"].split(None, 1)[0].upper() for q in captured.captured_queries)
    finally:
        purge([queue])
    return counts, kinds


def _pool(runs: list[RunTimes], attribute: str) -> list[float]:
    return [value for run in runs for value in getattr(run, attribute)]


def measure(
    report: Report,
    *,
    serial: int,
    groups: int,
    width: int,
    repeat: int,
    timeout: float,
    queue: str,
) -> dict:
    """Run the serial and the parallel pipeline and the bare chain ``repeat`` times each
    (interleaved, so that they share the machine's conditions) and add the figures. Every
    stage and hop goes to ``queue``, the one the benchmark's workers serve."""
    close_old_connections()
    project = fixtures.project("engine", "Engine benchmark")
    user = fixtures.runner()
    serial_pipeline = fixtures.pipeline(
        project, f"serial_{serial}", fixtures.serial_groups(serial), runs_on=queue
    )
    parallel_pipeline = fixtures.pipeline(
        project,
        f"parallel_{groups}x{width}",
        fixtures.parallel_groups(groups, width),
        runs_on=queue,
    )
    workdir = Path(settings.VAR_DIR) / "bench"
    workdir.mkdir(parents=True, exist_ok=True)

    # One untimed run of each first: a fresh worker process parses a pipeline version's YAML
    # once (then keeps it) and opens its connections; that is reported as the cold run.
    cold_serial = run_execution(serial_pipeline, user, timeout)
    run_chain(serial, workdir, timeout, queue)
    cold_parallel = run_execution(parallel_pipeline, user, timeout)

    serial_runs: list[RunTimes] = []
    chain_runs: list[RunTimes] = []
    parallel_runs: list[RunTimes] = []
    for _ in range(repeat):
        serial_runs.append(run_execution(serial_pipeline, user, timeout))
        chain_runs.append(run_chain(serial, workdir, timeout, queue))
        parallel_runs.append(run_execution(parallel_pipeline, user, timeout))

    counts, kinds = queries_per_stage(f"{queue}_probe")
    per_stage = median(counts) if counts else float("nan")
    by_kind = ", ".join(f"{n / max(1, len(counts)):.0f} {kind}" for kind, n in kinds.most_common())

    section = f"engine: {serial} serial stages"
    transitions = _pool(serial_runs, "transitions")
    p50, p95 = percentile(transitions, 50), percentile(transitions, 95)
    report.add(
        section,
        "stage transition, p50",
        ms(p50),
        f"<= {ms(TRANSITION_P50_TARGET)}",
        p50 <= TRANSITION_P50_TARGET,
    )
    report.add(
        section,
        "stage transition, p95",
        ms(p95),
        f"<= {ms(TRANSITION_P95_TARGET)}",
        p95 <= TRANSITION_P95_TARGET,
    )
    report.add(section, "stage transition, p99", ms(percentile(transitions, 99)), "", None)
    report.add(section, "  engine: stage done -> step queued", spread(_pool(serial_runs, "engine")))
    report.add(
        section, "  dispatch: queued -> step started", spread(_pool(serial_runs, "dispatch"))
    )
    report.add(
        section, "before it: step done -> stage done", spread(_pool(serial_runs, "step_to_stage"))
    )
    report.add(
        section,
        "SQL statements per stage (claim, run, result, advance)",
        f"{per_stage:.0f} ({by_kind})",
    )
    report.add(
        section, "submitted -> first step started", ms(median([r.first_start for r in serial_runs]))
    )
    report.add(
        section, "step's own time (bash `true`)", spread(_pool(serial_runs, "step_times"), (50, 95))
    )
    wall = median([r.wall for r in serial_runs])
    report.add(
        section, "whole run", f"{ms(wall)} (median of {repeat}; cold: {ms(cold_serial.wall)})"
    )
    overhead = median([r.overhead for r in serial_runs])
    report.add(
        section,
        "whole run - steps' own time",
        f"{ms(overhead)} = {ms(overhead / serial)} per stage",
    )

    chain_section = f"bare Celery chain of {serial}"
    chain_wall = median([r.wall for r in chain_runs])
    report.add(
        chain_section, "hop (task end -> next task start)", spread(_pool(chain_runs, "transitions"))
    )
    report.add(
        chain_section,
        "task's own time (bash `true`)",
        spread(_pool(chain_runs, "step_times"), (50, 95)),
    )
    report.add(chain_section, "whole run", f"{ms(chain_wall)} (median of {repeat})")
    chain_overhead = median([r.overhead for r in chain_runs])
    report.add(
        chain_section,
        "whole run - tasks' own time",
        f"{ms(chain_overhead)} = {ms(chain_overhead / serial)} per hop",
    )
    ratio = wall / chain_wall if chain_wall else float("nan")
    report.add(
        chain_section,
        "Stageline / bare chain (whole run)",
        f"{ratio:.2f}x",
        f"<= {RATIO_TARGET:.0f}x",
        ratio <= RATIO_TARGET,
    )
    overhead_ratio = overhead / chain_overhead if chain_overhead > 0 else float("nan")
    report.add(chain_section, "Stageline / bare chain (overhead only)", f"{overhead_ratio:.2f}x")

    parallel_section = f"engine: {groups} groups x {width} parallel"
    report.add(
        parallel_section,
        "group transition (last done -> first started)",
        spread(_pool(parallel_runs, "group_transitions")),
    )
    report.add(
        parallel_section,
        "stage transition, every member",
        spread(_pool(parallel_runs, "transitions")),
    )
    report.add(
        parallel_section,
        "  dispatch: queued -> step started",
        spread(_pool(parallel_runs, "dispatch")),
    )
    pwall = median([r.wall for r in parallel_runs])
    report.add(
        parallel_section,
        "whole run",
        f"{ms(pwall)} (median of {repeat}; cold: {ms(cold_parallel.wall)})",
    )
    report.add(
        parallel_section,
        "whole run - time with a step running",
        f"{ms(median([r.overhead for r in parallel_runs]))}",
    )
    bad = [
        r.status
        for r in [cold_serial, cold_parallel, *serial_runs, *parallel_runs]
        if r.status != Status.SUCCESS
    ]
    report.add(
        "engine",
        "executions not SUCCESS",
        str(len(bad)) + (f" ({', '.join(bad)})" if bad else ""),
        "0",
        not bad,
    )
    return {"serial": serial_runs, "parallel": parallel_runs, "chain": chain_runs}
