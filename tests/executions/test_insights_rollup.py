"""The retry insights rollup (``executions.rollup``) against the queries it replaces.

The page used to read every execution of the period with five aggregate queries (kept here,
word for word, as ``reference``); it now reads the rollup written as executions end, plus the
executions the rollup does not hold. Executions are run with the real engine under a clock set
back some days (so that they end on past days, as in production, and the page reads them from
the rollup), including a chain that recovers on a later day, a parallel group carried over,
an execution not ended yet and executions of today. The figures must be the same both ways,
for each period; the rollup rebuilt from scratch (``backfill_insights``) must hold the rows the
engine wrote.
"""

from __future__ import annotations

import io
import statistics
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any
from unittest import mock

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from executions import engine, insights, rollup
from executions.models import Execution, InsightDay, InsightRecovery, StageRun, StepRun
from executions.retry import create_retry
from executions.services import run_pipeline
from executions.states import RETRYABLE, TERMINAL, Status
from pipelines.models import Pipeline
from tests.executions.test_insights import flow_yaml
from tests.helpers.factories import make_pipeline
from tests.helpers.pages import run
from tests.helpers.runs import drive

pytestmark = pytest.mark.database

FAILED = rollup.FAILED
PASSED = rollup.PASSED
FAN_YAML = """
pipeline:
  name: Fan
  identifier: fan
  stages:
    - stage: {identifier: build, name: Build, steps: [{step: {identifier: run, type: ShellScript, spec: {script: "true"}}}]}
    - parallel:
        - stage: {identifier: eu, name: EU, steps: [{step: {identifier: run, type: ShellScript, spec: {script: "sleep 0.2"}}}]}
        - stage: {identifier: us, name: US, steps: [{step: {identifier: run, type: ShellScript, spec: {script: "true"}}}]}
    - stage: {identifier: final, name: Final, steps: [{step: {identifier: run, type: ShellScript, spec: {script: "exit 3"}}}]}
"""


# --- the reference: the page's queries before the rollup (executions/insights.py) ---------------


def _tables() -> tuple[str, str]:
    quote = connection.ops.quote_name
    return quote(Execution._meta.db_table), quote(StageRun._meta.db_table)


def _rows(sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    with connection.cursor() as cursor:
        cursor.execute(sql, list(params))
        return list(cursor.fetchall())


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


def reference(user: Any, pipelines: list[Pipeline], days: int) -> dict[str, Any]:
    """The figures as the page computed them before the rollup, in ``figures``' form."""
    since = timezone.now() - timedelta(days=days)
    ids = [p.pk for p in pipelines]
    out: dict[str, Any] = {}
    stages: dict[tuple[int, str], dict[str, Any]] = {}

    def stage(pipeline_id: int, identifier: str) -> dict[str, Any]:
        blank: dict[str, Any] = dict.fromkeys(STAGE_FIELDS, 0)
        blank.update(name=identifier, position=1_000_000, saved_seconds=0.0)
        blank.update(recovery_median=None)
        return stages.setdefault((pipeline_id, identifier), blank)

    for pipeline_id, identifier, name, position, runs, failures in _stage_runs(ids, since):
        stage(pipeline_id, identifier).update(
            name=name, position=position, runs=int(runs or 0), failures=int(failures or 0)
        )
    for pipeline_id, identifier, ended, succeeded, flaky, saved in _retried_stages(ids, since):
        stage(pipeline_id, identifier).update(
            retries=int(ended or 0),
            retries_succeeded=int(succeeded or 0),
            flaky_passes=int(flaky or 0),
            saved_seconds=round(float(saved or 0), 3),
        )
    for pipeline_id, identifier, count, median in _recoveries(ids, since, by_stage=True):
        stage(pipeline_id, identifier).update(
            recoveries=int(count), recovery_median=round(float(median), 3)
        )
    for pipeline in pipelines:
        out[pipeline.identifier] = {
            "retries": 0,
            "saved_seconds": 0.0,
            "recoveries": 0,
            "recovery_median": None,
            "stages": {},
        }
    by_id = {p.pk: p.identifier for p in pipelines}
    for pipeline_id, count, saved in _saved_per_pipeline(ids, since):
        out[by_id[pipeline_id]].update(retries=int(count), saved_seconds=round(float(saved), 3))
    for pipeline_id, count, median in _recoveries(ids, since, by_stage=False):
        out[by_id[pipeline_id]].update(
            recoveries=int(count), recovery_median=round(float(median), 3)
        )
    for (pipeline_id, identifier), found in stages.items():
        out[by_id[pipeline_id]]["stages"][identifier] = found
    return out


STAGE_FIELDS = (
    "name",
    "position",
    "runs",
    "failures",
    "retries",
    "retries_succeeded",
    "flaky_passes",
    "saved_seconds",
    "recoveries",
    "recovery_median",
)


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def figures(user: Any, project: Any, days: int) -> dict[str, Any]:
    """The page's figures (``insights.project_insights``), in a form to compare."""
    result = insights.project_insights(user, project, days)
    out: dict[str, Any] = {}
    for entry in result.pipelines:
        out[entry.pipeline.identifier] = {
            "retries": entry.retries,
            "saved_seconds": round(entry.saved_seconds, 3),
            "recoveries": entry.recoveries,
            "recovery_median": _rounded(entry.recovery_median),
            "stages": {
                s.identifier: {
                    **{name: getattr(s, name) for name in STAGE_FIELDS},
                    "saved_seconds": round(s.saved_seconds, 3),
                    "recovery_median": _rounded(s.recovery_median),
                }
                for s in entry.stages
            },
        }
    return out


# --- executions on past days ------------------------------------------------------------------


@contextmanager
def days_ago(days: float) -> Iterator[None]:
    """Everything made inside (creation, starts, ends) happens ``days`` days ago."""
    real = timezone.now
    with mock.patch("django.utils.timezone.now", lambda: real() - timedelta(days=days)):
        yield


def retry(execution: Execution, user: Any, stage: str) -> Execution:
    return drive(create_retry(execution=execution, user=user, from_stage=stage, inputs={}))


@pytest.fixture
def history(personas, shared_dir) -> list[Pipeline]:
    """Two pipelines' executions over the last 100 days (see the module docstring)."""
    user = personas.executor
    flag = shared_dir / "pass"
    flow = make_pipeline(personas.project, flow_yaml(flag))
    fan = make_pipeline(personas.project, FAN_YAML)
    offset: float
    for offset in (60, 20, 3):  # a chain that recovers the next day
        with days_ago(offset):
            flag.unlink(missing_ok=True)
            first = run(flow, user)
            assert first.status == Status.FAILED
            again = retry(first, user, "check")
            assert again.status == Status.FAILED
        with days_ago(offset - 1):
            flag.touch()
            assert retry(again, user, "check").status == Status.SUCCESS
            assert run(flow, user).status == Status.SUCCESS
    for offset in (29.9, 6.5, 0):  # near the start of a period, and today
        with days_ago(offset):
            flag.touch()
            assert run(flow, user).status == Status.SUCCESS
            failed = run(fan, user)
            assert failed.status == Status.FAILED
            assert retry(failed, user, "final").status == Status.FAILED
            flag.unlink()
            first = run(flow, user)
            flag.touch()
            assert retry(first, user, "check").status == Status.SUCCESS
    with days_ago(2):  # not ended: its first stage ran, the next one is queued
        waiting = run_pipeline(pipeline=flow, user=user, inputs={})
        step = StepRun.objects.filter(execution=waiting, status=Status.QUEUED).first()
        assert step is not None
        engine.run_step(step.pk)
        assert Execution.objects.get(pk=waiting.pk).status not in TERMINAL
    return [flow, fan]


def rollup_rows() -> list[tuple[Any, ...]]:
    days = InsightDay.objects.order_by("pipeline_id", "day", "hour", "identifier")
    recoveries = InsightRecovery.objects.order_by("pipeline_id", "day", "identifier", "seconds")
    return [
        *(
            (r.pipeline_id, r.identifier, str(r.day), r.hour, r.name, r.position, r.runs)
            + (r.failures,)
            + (r.retries, r.retries_succeeded, r.flaky_passes, round(r.saved_seconds, 3))
            for r in days
        ),
        *(
            (r.pipeline_id, r.identifier, str(r.day), r.hour, round(r.seconds, 3))
            for r in recoveries
        ),
    ]


# --- the tests --------------------------------------------------------------------------------


@pytest.mark.parametrize("days", insights.PERIODS)
def test_the_page_reads_the_same_figures_from_the_rollup(personas, history, days):
    found = figures(personas.viewer, personas.project, days)
    assert found == reference(personas.viewer, history, days)
    # Not vacuous: the period holds failures, retries, time saved and recoveries.
    flow = found["flow"]
    assert flow["stages"]["check"]["failures"] and flow["recoveries"]
    assert found["fan"]["saved_seconds"] > 0 and found["fan"]["stages"]["final"]["retries"]


def test_the_page_reads_past_days_from_the_rollup(personas, history):
    """Whole past hours and days come from the rollup (emptied, they are missing); the partial
    hours at both ends of the period and the executions not ended are read live."""
    before = figures(personas.viewer, personas.project, 90)
    assert InsightDay.objects.filter(day__lt=timezone.now().date()).exists()
    InsightDay.objects.all().delete()
    InsightRecovery.objects.all().delete()
    after = figures(personas.viewer, personas.project, 90)
    assert after["flow"]["stages"]["build"]["runs"] < before["flow"]["stages"]["build"]["runs"]
    # Still read live: the one not ended (2 days ago), and today's two flow runs and chain if
    # the hour has not turned since they ran (else they are in the rollup's hour rows).
    assert after["flow"]["stages"]["build"]["runs"] in (1, 3)
    assert after["flow"]["recoveries"] in (0, 1)


def test_the_period_is_split_in_partial_hours_whole_hours_and_whole_days():
    now = datetime(2026, 12, 2, 16, 20, 30, tzinfo=rollup.UTC)
    window = rollup.Window.of(now, 7)
    assert window.since == datetime(2026, 11, 25, 16, 20, 30, tzinfo=rollup.UTC)
    assert window.first_hour == datetime(2026, 11, 25, 17, tzinfo=rollup.UTC)
    assert window.cut == datetime(2026, 11, 26, tzinfo=rollup.UTC)
    assert window.today == datetime(2026, 12, 2, tzinfo=rollup.UTC)
    assert window.last_hour == datetime(2026, 12, 2, 16, tzinfo=rollup.UTC)
    late = rollup.Window.of(datetime(2026, 12, 2, 23, 40, tzinfo=rollup.UTC), 30)
    assert late.first_hour == late.cut == datetime(2026, 11, 3, tzinfo=rollup.UTC)
    _days, _params, _hours, params = late.rollup_rows()
    assert params[1] == rollup.WHOLE_DAY  # no whole hour of the first day is read


def test_ending_an_execution_adds_it_to_the_rollup_of_its_day(personas, shared_dir):
    flag = shared_dir / "pass"
    flow = make_pipeline(personas.project, flow_yaml(flag))
    with days_ago(5):
        failed = run(flow, personas.executor)
    day = (timezone.now() - timedelta(days=5)).astimezone(rollup.UTC).date()
    check = InsightDay.objects.get(pipeline=flow, identifier="check", day=day, hour=24)
    hour = InsightDay.objects.get(pipeline=flow, identifier="check", day=day, hour__lt=24)
    assert (hour.runs, hour.failures) == (1, 1)
    assert (check.runs, check.failures, check.retries) == (1, 1, 0)
    flag.touch()
    with days_ago(4):
        retry(failed, personas.executor, "check")
    check.refresh_from_db()  # the retry counts on its own day, the recovery on the original's
    assert (check.runs, check.failures) == (1, 1)
    later = InsightDay.objects.get(
        pipeline=flow, identifier="check", day=day + timedelta(days=1), hour=24
    )
    assert (later.runs, later.retries, later.retries_succeeded, later.flaky_passes) == (1, 1, 1, 1)
    assert InsightRecovery.objects.filter(pipeline=flow, day=day).count() == 2  # chain + check


def test_a_rebuild_gives_the_rows_the_engine_wrote(personas, history):
    written = rollup_rows()
    assert written
    out = io.StringIO()
    call_command("backfill_insights", "--chunk", "3", stdout=out)
    assert rollup_rows() == written
    text = out.getvalue()
    assert (
        "%)" in text
        and f"counted {Execution.objects.filter(status__in=TERMINAL).count():,} ended" in text
    )


def test_backfill_refuses_a_chunk_below_one(personas):
    with pytest.raises(Exception, match="--chunk must be at least 1"):
        call_command("backfill_insights", "--chunk", "0")
