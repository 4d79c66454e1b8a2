"""Retry insights of a project (issue 17, point 4): per pipeline and stage, over the last 7, 30
or 90 days, how often stages fail, how retries fare, how much run time they saved, how long
recovery takes and which stages are flaky. What each figure means, exactly: docs/retry.md
"Insights".

Everything is read with a handful of aggregate queries over the executions created in the
period (``Execution.created_at``) of the pipelines the user may see, whatever their number:

1. stage runs that ran (carried-over ones excluded) and failed, per pipeline and stage;
2. retries that ran a failed stage again: how many, how many succeeded, how many made the
   stage pass with unchanged inputs (flaky), and the run time each saved, per pipeline and stage;
3. the run time saved, per pipeline (each retry counted once);
4. the median time to recovery, per pipeline and per stage that failed.

Run time saved is the wall-clock span of a retry's carried-over stage runs — the union of their
[start, end] spans, the rule of ``executions.retry.wall_clock_seconds`` — computed in SQL. Not as
``max(finished) - min(started)`` per retry: carried runs can come from different attempts of the
chain, and the wait between two attempts is no run time. The union is a sum over the runs in
start order of the part of each run past the latest end before it (a window ``MAX`` over the
preceding rows): the part of run *i* up to that latest end is covered by the earlier run that
reaches it, since that run started no later than *i*. One pass, no rows to Python, whatever the
number of retries (a Python pass over them would read one row per carried stage run: tens of
thousands per 90 days at the benchmark's million executions). ``tests/executions/
test_insights.py`` checks it against ``wall_clock_seconds``.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from executions.models import Execution, StageRun
from executions.states import RETRYABLE, TERMINAL, Status
from pipelines import permissions
from pipelines.models import Pipeline, Project
from stageline.errors import Invalid

PERIODS: tuple[int, ...] = (7, 30, 90)
DEFAULT_PERIOD = 30
# A stage that ran: it ended with a result of its own (aborted, skipped or never started: no).
FAILED: tuple[str, ...] = (Status.FAILED, Status.EXPIRED, Status.REJECTED)
PASSED: tuple[str, ...] = (Status.SUCCESS, Status.IGNORED)
# A stage is flagged flaky once it passed on a retry with unchanged inputs at least this often
# (however high its share: one pass is no pattern).
FLAKY_MIN_PASSES = 2


def parse_period(text: str | None) -> int:
    """The period in days from ``?days=`` (absent: ``DEFAULT_PERIOD``); 7, 30 or 90."""
    if text is None or text == "":
        return DEFAULT_PERIOD
    choices = ", ".join(str(p) for p in PERIODS[:-1]) + f" or {PERIODS[-1]}"
    if not text.isdigit() or int(text) not in PERIODS:
        raise Invalid(
            f"Unknown period '{text[:20]}': choose the last {choices} days.",
            field_errors={"days": f"one of {choices}"},
        )
    return int(text)


def flaky_threshold() -> float:
    """``STAGELINE_FLAKY_THRESHOLD_PERCENT`` as a share (0.2 for the default 20)."""
    return float(settings.STAGELINE_FLAKY_THRESHOLD_PERCENT) / 100


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def percent(share: float | None) -> str:
    """``12 %`` (one decimal under 10 %), an em dash when there is nothing to divide."""
    if share is None:
        return "—"
    value = share * 100
    return f"{value:.1f} %" if 0 < value < 10 else f"{value:.0f} %"


# The failure-rate chart (server-rendered SVG, templates/executions/insights.html): one bar per
# stage, in SVG user units; the SVG scales with its box.
CHART_LABEL, CHART_BARS, CHART_ROW = 170, 250, 22


@dataclass(frozen=True)
class Bar:
    label: str
    value: str
    y: int  # top of the row
    width: float  # of the bar (CHART_BARS for 100 %)
    flaky: bool

    @property
    def text_y(self) -> int:
        return self.y + 15

    @property
    def value_x(self) -> float:
        return CHART_LABEL + self.width + 6


@dataclass
class StageFigures:
    """One stage of one pipeline over the period (see docs/retry.md "Insights")."""

    identifier: str
    name: str
    position: int
    runs: int = 0  # runs that ended SUCCESS, IGNORED, FAILED, EXPIRED or REJECTED (not carried)
    failures: int = 0  # of those, FAILED, EXPIRED or REJECTED
    retries: int = 0  # ended retries that ran this stage again after it failed
    retries_succeeded: int = 0  # of those, the ones that ended SUCCESS
    flaky_passes: int = 0  # retries with unchanged inputs on which this failed stage passed
    saved_seconds: float = 0.0  # run time saved by the carried-over stages of those retries
    recoveries: int = 0  # failures of this stage whose chain later succeeded
    recovery_median: float | None = None  # seconds, failure to the chain's success
    flaky: bool = False

    @property
    def failure_rate(self) -> float | None:
        return _share(self.failures, self.runs)

    @property
    def retry_success_rate(self) -> float | None:
        return _share(self.retries_succeeded, self.retries)

    @property
    def flaky_rate(self) -> float | None:
        return _share(self.flaky_passes, self.failures)

    @property
    def failure_percent(self) -> str:
        return percent(self.failure_rate)

    @property
    def retry_success_percent(self) -> str:
        return percent(self.retry_success_rate)

    @property
    def flaky_percent(self) -> str:
        return percent(self.flaky_rate)


@dataclass
class PipelineFigures:
    pipeline: Pipeline
    stages: list[StageFigures] = field(default_factory=list)
    retries: int = 0  # retries created in the period (ended or not)
    saved_seconds: float = 0.0  # each retry once
    recoveries: int = 0
    recovery_median: float | None = None

    @property
    def flaky_stages(self) -> list[StageFigures]:
        return [s for s in self.stages if s.flaky]

    @property
    def bars(self) -> list[Bar]:
        """The chart's bars: the failure rate of each stage that ran."""
        ran = [s for s in self.stages if s.runs]
        return [
            Bar(
                label=s.name[:28],
                value=s.failure_percent,
                y=index * CHART_ROW,
                width=round((s.failure_rate or 0.0) * CHART_BARS, 1),
                flaky=s.flaky,
            )
            for index, s in enumerate(ran)
        ]

    @property
    def chart_height(self) -> int:
        return max(1, len(self.bars)) * CHART_ROW

    @property
    def chart_width(self) -> int:
        return CHART_LABEL + CHART_BARS + 60

    @property
    def chart_bar_x(self) -> int:
        return CHART_LABEL


@dataclass
class Insights:
    project: Project
    days: int
    since: datetime
    threshold: float
    pipelines: list[PipelineFigures]

    @property
    def threshold_percent(self) -> str:
        return percent(self.threshold)


# --- SQL that reads the same on PostgreSQL and SQLite --------------------------------------------


def _epoch(expression: str) -> str:
    """Seconds since the epoch of a timestamp column (a float)."""
    if connection.vendor == "postgresql":
        return f"EXTRACT(EPOCH FROM {expression})"
    return f"(julianday({expression}) * 86400.0)"


def _greatest(a: str, b: str) -> str:
    return f"GREATEST({a}, {b})" if connection.vendor == "postgresql" else f"MAX({a}, {b})"


def _json_empty(column: str) -> str:
    if connection.vendor == "postgresql":
        return f"jsonb_array_length({column}) = 0"
    return f"json_array_length({column}) = 0"


def _marks(values: Sequence[object]) -> str:
    return ", ".join(["%s"] * len(values))


def _tables() -> tuple[str, str]:
    quote = connection.ops.quote_name
    return quote(Execution._meta.db_table), quote(StageRun._meta.db_table)


def _rows(sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # PostgreSQL's JIT compiles these plans anew each time: about 0.1 s a query at a
            # million executions, more than it saves (docs/performance.md).
            cursor.execute("SET LOCAL jit = off")
        cursor.execute(sql, list(params))
        return list(cursor.fetchall())


def _retries_cte(pipelines: list[int], since: datetime) -> tuple[str, list[object]]:
    """``retries``: the retries created in the period; ``saved``: per retry, the wall-clock
    union of its carried-over stage runs (see the module docstring)."""
    execution, stage = _tables()
    start, end = _epoch("c.started_at"), _epoch("c.finished_at")
    reach = _epoch("c.reach")
    sql = f"""
        WITH retries AS (
            SELECT id, pipeline_id, retry_of_id, status, changed_inputs FROM {execution}
            WHERE pipeline_id IN ({_marks(pipelines)}) AND created_at >= %s
              AND retry_of_id IS NOT NULL
        ),
        saved AS (
            SELECT c.execution_id,
                   SUM({_greatest("0", f"{end} - {_greatest(start, f'COALESCE({reach}, {start})')}")})
                       AS seconds
            FROM (
                SELECT s.execution_id, s.started_at, s.finished_at,
                       MAX(s.finished_at) OVER (
                           PARTITION BY s.execution_id ORDER BY s.started_at, s.finished_at, s.id
                           ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING
                       ) AS reach
                FROM {stage} s JOIN retries r ON r.id = s.execution_id
                WHERE s.carried_from_id IS NOT NULL
                  AND s.started_at IS NOT NULL AND s.finished_at IS NOT NULL
            ) c
            GROUP BY c.execution_id
        )
    """
    return sql, [*pipelines, since]


def _stage_runs(pipelines: list[int], since: datetime) -> list[tuple[Any, ...]]:
    execution, stage = _tables()
    ran, failed = [*PASSED, *FAILED], list(FAILED)
    sql = f"""
        SELECT e.pipeline_id, s.identifier, MIN(s.name), MIN(s.position),
               SUM(CASE WHEN s.status IN ({_marks(ran)}) THEN 1 ELSE 0 END),
               SUM(CASE WHEN s.status IN ({_marks(failed)}) THEN 1 ELSE 0 END)
        FROM {stage} s JOIN {execution} e ON e.id = s.execution_id
        WHERE e.pipeline_id IN ({_marks(pipelines)}) AND e.created_at >= %s
          AND s.carried_from_id IS NULL
        GROUP BY e.pipeline_id, s.identifier
    """
    return _rows(sql, [*ran, *failed, *pipelines, since])


def _retried_stages(pipelines: list[int], since: datetime) -> list[tuple[Any, ...]]:
    """Per pipeline and stage: retries that ran the stage again after it failed in the execution
    they retry (ended ones, the successful ones, the flaky passes) and the time they saved."""
    _execution, stage = _tables()
    cte, params = _retries_cte(pipelines, since)
    terminal, failed, passed = sorted(TERMINAL), list(FAILED), list(PASSED)
    sql = f"""{cte}
        SELECT r.pipeline_id, a.identifier,
               SUM(CASE WHEN r.status IN ({_marks(terminal)}) THEN 1 ELSE 0 END),
               SUM(CASE WHEN r.status = %s THEN 1 ELSE 0 END),
               SUM(CASE WHEN b.status IN ({_marks(passed)}) AND {_json_empty("r.changed_inputs")}
                        THEN 1 ELSE 0 END),
               SUM(COALESCE(saved.seconds, 0))
        FROM retries r
        JOIN {stage} a ON a.execution_id = r.retry_of_id AND a.status IN ({_marks(failed)})
        JOIN {stage} b ON b.execution_id = r.id AND b.identifier = a.identifier
                      AND b.carried_from_id IS NULL
        LEFT JOIN saved ON saved.execution_id = r.id
        GROUP BY r.pipeline_id, a.identifier
    """
    return _rows(sql, [*params, *terminal, Status.SUCCESS, *passed, *failed])


def _saved_per_pipeline(pipelines: list[int], since: datetime) -> list[tuple[Any, ...]]:
    cte, params = _retries_cte(pipelines, since)
    sql = f"""{cte}
        SELECT r.pipeline_id, COUNT(*), SUM(COALESCE(saved.seconds, 0))
        FROM retries r LEFT JOIN saved ON saved.execution_id = r.id
        GROUP BY r.pipeline_id
    """
    return _rows(sql, params)


def _recoveries(pipelines: list[int], since: datetime, *, by_stage: bool) -> list[tuple[Any, ...]]:
    """(pipeline, [stage,] count, median seconds): chains whose original execution, created in
    the period, ended FAILED, ABORTED, EXPIRED or REJECTED and a later attempt SUCCESS; the
    time from the original's end to that attempt's end. ``by_stage``: per stage that failed in
    the original."""
    execution, stage = _tables()
    retryable, failed = sorted(RETRYABLE), list(FAILED)
    keys = "o.pipeline_id, a.identifier" if by_stage else "o.pipeline_id"
    join = (
        f"JOIN {stage} a ON a.execution_id = o.id AND a.status IN ({_marks(failed)})"
        if by_stage
        else ""
    )
    seconds = f"{_epoch('w.finished_at')} - {_epoch('o.finished_at')}"
    source = f"""
        FROM {execution} o
        JOIN {execution} w ON w.chain_root_id = o.id AND w.status = %s
        {join}
        WHERE o.pipeline_id IN ({_marks(pipelines)}) AND o.created_at >= %s
          AND o.retry_of_id IS NULL AND o.status IN ({_marks(retryable)})
          AND o.finished_at IS NOT NULL AND w.finished_at IS NOT NULL
    """
    params: list[object] = [
        Status.SUCCESS,
        *(failed if by_stage else []),
        *pipelines,
        since,
        *retryable,
    ]
    if connection.vendor == "postgresql":
        sql = (
            f"SELECT {keys}, COUNT(*), percentile_cont(0.5) WITHIN GROUP (ORDER BY {seconds}) "
            f"{source} GROUP BY {keys}"
        )
        return _rows(sql, params)
    # SQLite has no percentile: the medians are taken here (a row per recovered chain).
    found: dict[tuple[Any, ...], list[float]] = {}
    for *key, value in _rows(f"SELECT {keys}, {seconds} {source}", params):
        found.setdefault(tuple(key), []).append(float(value))
    return [(*key, len(values), statistics.median(values)) for key, values in found.items()]


# --- the page's figures --------------------------------------------------------------------


def project_insights(user: Any, project: Project, days: int) -> Insights:
    """The insights of ``project`` over the last ``days`` days, for the pipelines ``user`` may
    see (the caller loaded the project with "view")."""
    since = timezone.now() - timedelta(days=days)
    threshold = flaky_threshold()
    visible: Iterable[Pipeline] = (
        permissions.visible_pipelines(user).filter(project=project).order_by("name", "identifier")
    )
    figures = {p.pk: PipelineFigures(pipeline=p) for p in visible}
    ids = list(figures)
    result = Insights(project, days, since, threshold, list(figures.values()))
    if not ids:
        return result
    stages: dict[tuple[int, str], StageFigures] = {}

    def stage(pipeline_id: int, identifier: str) -> StageFigures:
        key = (pipeline_id, identifier)
        if key not in stages:
            stages[key] = StageFigures(identifier, identifier, 1_000_000)
        return stages[key]

    for pipeline_id, identifier, name, position, runs, failures in _stage_runs(ids, since):
        found = stage(pipeline_id, identifier)
        found.name, found.position = name, position
        found.runs, found.failures = int(runs or 0), int(failures or 0)
    for pipeline_id, identifier, ended, succeeded, flaky, saved in _retried_stages(ids, since):
        found = stage(pipeline_id, identifier)
        found.retries, found.retries_succeeded = int(ended or 0), int(succeeded or 0)
        found.flaky_passes, found.saved_seconds = int(flaky or 0), float(saved or 0)
    for pipeline_id, identifier, count, median in _recoveries(ids, since, by_stage=True):
        found = stage(pipeline_id, identifier)
        found.recoveries, found.recovery_median = int(count), float(median)
    for pipeline_id, count, saved in _saved_per_pipeline(ids, since):
        figures[pipeline_id].retries, figures[pipeline_id].saved_seconds = int(count), float(saved)
    for pipeline_id, count, median in _recoveries(ids, since, by_stage=False):
        figures[pipeline_id].recoveries = int(count)
        figures[pipeline_id].recovery_median = float(median)
    for (pipeline_id, _identifier), found in sorted(
        stages.items(), key=lambda item: (item[1].position, item[0][1])
    ):
        rate = found.flaky_rate
        found.flaky = (
            found.flaky_passes >= FLAKY_MIN_PASSES and rate is not None and rate >= threshold
        )
        figures[pipeline_id].stages.append(found)
    return result
