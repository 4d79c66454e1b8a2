"""Retry insights of a project (issue 17, point 4): per pipeline and stage, over the last 7, 30
or 90 days, how often stages fail, how retries fare, how much run time they saved, how long
recovery takes and which stages are flaky. What each figure means, exactly: docs/retry.md
"Insights".

The figures are sums per pipeline and stage (and, for the medians, the recovery times
themselves) of what each execution created in the period contributes; ``executions.rollup``
holds that rule and keeps it per UTC hour and day as executions end. The page reads it with two
statements, whatever the number of executions: the rollup's rows for the whole hours and days
of the period plus, computed live by the same SQL, the executions the rollup does not hold
(created in the period's first or last partial hour, or not ended), per pipeline and stage:

1. the stage runs, failures, retries from each stage (ended, successful, flaky passes) and the
   run time they saved, and per pipeline its retries and the time they saved;
2. the recovery times, for the medians per pipeline and per stage that failed.

Timings at the benchmark's million executions: docs/performance.md.
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

from executions import rollup
from pipelines import permissions
from pipelines.models import Pipeline, Project
from stageline.errors import Invalid

PERIODS: tuple[int, ...] = (7, 30, 90)
DEFAULT_PERIOD = 30
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


# --- the queries ----------------------------------------------------------------------------


def _rows(sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # PostgreSQL's JIT compiles these plans anew each time: about 0.1 s a query at a
            # million executions, more than it saves (docs/performance.md).
            cursor.execute("SET LOCAL jit = off")
        cursor.execute(sql, list(params))
        return list(cursor.fetchall())


def _recoveries(pipelines: list[int], window: rollup.Window) -> list[tuple[Any, ...]]:
    """(pipeline, identifier, count, median seconds) of the chains recovered (identifier
    ``rollup.PIPELINE``: the pipeline's own)."""
    sql, params = rollup.recovery_rows(pipelines, window)
    if connection.vendor == "postgresql":
        return _rows(
            # COLLATE "C": the rows are sorted by stage to be grouped; bytes compare faster.
            f"""SELECT pipeline_id, identifier COLLATE "C", COUNT(*),
                       percentile_cont(0.5) WITHIN GROUP (ORDER BY seconds)
                FROM ({sql}) r GROUP BY pipeline_id, identifier COLLATE "C"
            """,
            params,
        )
    # SQLite has no percentile: the medians are taken here (a row per recovered chain).
    found: dict[tuple[Any, ...], list[float]] = {}
    for pipeline_id, identifier, _day, _hour, seconds in _rows(sql, params):
        found.setdefault((pipeline_id, identifier), []).append(float(seconds))
    return [(*key, len(values), statistics.median(values)) for key, values in found.items()]


# --- the page's figures --------------------------------------------------------------------


def project_insights(user: Any, project: Project, days: int) -> Insights:
    """The insights of ``project`` over the last ``days`` days, for the pipelines ``user`` may
    see (the caller loaded the project with "view")."""
    now = timezone.now()
    since = now - timedelta(days=days)
    threshold = flaky_threshold()
    visible: Iterable[Pipeline] = (
        permissions.visible_pipelines(user).filter(project=project).order_by("name", "identifier")
    )
    figures = {p.pk: PipelineFigures(pipeline=p) for p in visible}
    ids = list(figures)
    result = Insights(project, days, since, threshold, list(figures.values()))
    if not ids:
        return result
    window = rollup.Window.of(now, days)
    stages: dict[tuple[int, str], StageFigures] = {}

    def stage(pipeline_id: int, identifier: str) -> StageFigures:
        key = (pipeline_id, identifier)
        if key not in stages:
            stages[key] = StageFigures(identifier, identifier, 1_000_000)
        return stages[key]

    sql, params = rollup.figure_rows(ids, window)
    for pipeline_id, identifier, name, position, *sums in _rows(sql, params):
        runs, failures, retries, succeeded, flaky, saved = sums
        if identifier == rollup.PIPELINE:
            figures[pipeline_id].retries = int(retries or 0)
            figures[pipeline_id].saved_seconds = float(saved or 0)
            continue
        found = stage(pipeline_id, identifier)
        if name is not None:
            found.name, found.position = name, position
        found.runs, found.failures = int(runs or 0), int(failures or 0)
        found.retries, found.retries_succeeded = int(retries or 0), int(succeeded or 0)
        found.flaky_passes, found.saved_seconds = int(flaky or 0), float(saved or 0)
    for pipeline_id, identifier, count, median in _recoveries(ids, window):
        if identifier == rollup.PIPELINE:
            figures[pipeline_id].recoveries = int(count)
            figures[pipeline_id].recovery_median = float(median)
        else:
            found = stage(pipeline_id, identifier)
            found.recoveries, found.recovery_median = int(count), float(median)
    for (pipeline_id, _identifier), found in sorted(
        stages.items(), key=lambda item: (item[1].position, item[0][1])
    ):
        rate = found.flaky_rate
        found.flaky = (
            found.flaky_passes >= FLAKY_MIN_PASSES and rate is not None and rate >= threshold
        )
        figures[pipeline_id].stages.append(found)
    return result
