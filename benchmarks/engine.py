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
# Stageline's whole serial run / the bare chain's (issue 16): 2x on a server broker; 3x on the
# embedded default (its file broker polls, which the chain pays at every hop).
RATIO_TARGET = 2.0
RATIO_TARGET_EMBEDDED = 3.0
# Per-stage time of the longest serial pipeline / of the shortest (cost flat in length).
FLAT_TARGET = 1.5


def embedded_broker() -> bool:
    return settings.CELERY_BROKER_URL.startswith(("localfs://", "filesystem://"))


def ratio_target() -> float:
    return RATIO_TARGET_EMBEDDED if embedded_broker() else RATIO_TARGET


def _ts(value) -> float:
    return value.timestamp()


def union_seconds(intervals: list[tuple[float, float]]) -> float:
    """How long at least one of ``intervals`` was open."""
    total = 0.0
    current: tuple[float, float] | None = None
    for start, end in sorted(intervals):
        if current is None or start > current[1]:
            if current is not None:
                total += current[1] - current[0]
            current = (start, end)
        else:
            current = (current[0], max(current[1], end))
    if current is not None:
        total += current[1] - current[0]
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


def statements(queue: str, stages: int, *, budget: float) -> tuple[int, Counter]:
    """Database statements of a whole serial run of ``stages`` stages, counted in this process:
    the pipeline's stages go to ``queue``, which no worker serves, and its steps are run here
    by the engine's ``run_step`` (claim, run, result, advance). ``budget`` > 0: as a worker's
    task runs them (the first step's task runs the next ones itself, the fast path); 0: one
    ``run_step`` per step, each next step sent through the broker. The total, and the
    statements by kind."""
    project = fixtures.project("engine", "Engine benchmark")
    yaml_text = fixtures.pipeline_yaml(
        f"probe_{stages}", fixtures.serial_groups(stages), runs_on=queue
    )
    pipeline = save_pipeline(project=project, yaml_text=yaml_text).pipeline
    execution = run_pipeline(pipeline=pipeline, user=fixtures.runner(), inputs={})
    try:
        with CaptureQueriesContext(connection) as captured:
            while step := StepRun.objects.filter(execution=execution, status=Status.QUEUED).first():
                engine.run_step(step.pk, budget=budget)
    finally:
        purge([queue])
    sql = captured.captured_queries
    return len(sql), Counter(q["sql"].split(None, 1)[0].upper() for q in sql)


def statements_per_stage(queue: str, *, budget: float, short: int = 5, long: int = 25) -> str:
    """Statements one more stage costs: (a run of ``long`` stages - a run of ``short``) /
    (``long`` - ``short``), with the kinds, and the totals that show it does not grow."""
    short_total, short_kinds = statements(queue, short, budget=budget)
    long_total, long_kinds = statements(queue, long, budget=budget)
    extra = long - short
    per_stage = (long_total - short_total) / extra
    long_kinds.subtract(short_kinds)
    kinds = ", ".join(f"{n / extra:.0f} {kind}" for kind, n in long_kinds.most_common() if n)
    return (
        f"{per_stage:.1f} ({kinds}); whole runs: {short} stages {short_total}, "
        f"{long} stages {long_total}"
    )


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
    lengths: tuple[int, ...] = (),
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

    # Per-stage time against the pipeline's length: serial pipelines of each of ``lengths``
    # stages, run once each (after a cold run of each, which parses its version).
    length_runs: dict[int, RunTimes] = {}
    if lengths:
        length_pipelines = {
            n: fixtures.pipeline(project, f"serial_{n}", fixtures.serial_groups(n), runs_on=queue)
            for n in lengths
        }
        for n in lengths:
            run_execution(length_pipelines[n], user, timeout)
        for n in lengths:
            length_runs[n] = run_execution(length_pipelines[n], user, timeout)

    fast_path = statements_per_stage(f"{queue}_probe", budget=3600.0)
    via_broker = statements_per_stage(f"{queue}_probe", budget=0.0)

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
        section, "SQL statements per stage (claim, run, result, advance)", f"fast path {fast_path}"
    )
    report.add(section, "  same, every step through the broker", via_broker)
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
    target = ratio_target()
    report.add(
        chain_section,
        "Stageline / bare chain (whole run)",
        f"{ratio:.2f}x ({ms(wall / serial)} / {ms(chain_wall / serial)} per stage, "
        f"{'embedded broker' if embedded_broker() else 'server broker'})",
        f"<= {target:.0f}x",
        ratio <= target,
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
    if length_runs:
        length_section = "engine: per stage against length"
        for n, run in length_runs.items():
            report.add(
                length_section,
                f"{n} serial stages, whole run / stages",
                f"{ms(run.wall / n)} (whole run {ms(run.wall)})",
            )
        shortest, longest = min(length_runs), max(length_runs)
        flat = (length_runs[longest].wall / longest) / (length_runs[shortest].wall / shortest)
        report.add(
            length_section,
            f"per stage, {longest} stages / {shortest} stages",
            f"{flat:.2f}",
            f"<= {FLAT_TARGET:.1f}",
            flat <= FLAT_TARGET,
        )
    bad = [
        r.status
        for r in [cold_serial, cold_parallel, *serial_runs, *parallel_runs, *length_runs.values()]
        if r.status != Status.SUCCESS
    ]
    report.add(
        "engine",
        "executions not SUCCESS",
        str(len(bad)) + (f" ({', '.join(bad)})" if bad else ""),
        "0",
        not bad,
    )
    return {
        "serial": serial_runs,
        "parallel": parallel_runs,
        "chain": chain_runs,
        "lengths": length_runs,
    }
