"""The retry insights rollup: what each ended execution adds to the figures of the insights page
(``executions.insights``), kept per pipeline, stage and UTC hour and day so that the page reads
a few thousand rows instead of every stage run of the period (docs/performance.md "Retry
insights").

This module is the one home of *what an execution contributes* to the insights — one SQL text,
``_contribution``, used three ways:

- ``record_ended(execution)``: the execution has just ended (``executions.transitions``, in the
  transaction of its last status change): its contribution is added to ``InsightDay`` with one
  upsert, and, when it ended SUCCESS, the recovery time of its chain to ``InsightRecovery``;
- ``rebuild()`` (``manage.py backfill_insights``, migration 0008 (it added the hours), the
  benchmark's dataset): the same for every ended execution, in chunks of ids;
- ``figure_rows()``, ``recovery_rows()``: the insights page adds the contribution of the
  executions the rollup does not hold — created in the first or last partial hour of the
  period, or not ended — to the rollup's rows of the whole hours and days between, in the same
  statement (``Window``).

An execution's contribution is keyed by the UTC day and hour it was *created* (the period's
rule: what was created in it). Retries are keyed by their own creation; a recovery by its chain's original.
Terminal statuses never change and nothing edits an ended execution's rows, so what was added
when it ended stays right. Because the page reads the partial hours at both ends live, the
hour and day boundaries (UTC) never show in its figures: the same numbers whatever the time
zone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import connection, transaction

from executions.models import Execution, InsightDay, InsightRecovery, StageRun
from executions.states import RETRYABLE, TERMINAL, Status

# A stage that ran: it ended with a result of its own (aborted, skipped or never started: no).
FAILED: tuple[str, ...] = (Status.FAILED, Status.EXPIRED, Status.REJECTED)
PASSED: tuple[str, ...] = (Status.SUCCESS, Status.IGNORED)
NOT_ENDED: tuple[str, ...] = tuple(sorted(set(Status) - TERMINAL))
PIPELINE = ""  # the identifier of the rollup rows that hold a pipeline's own figures
CHUNK = 20_000  # executions (by id range) per statement of a rebuild
# Migration 0008 calls ``rebuild`` (with this module's SQL, on a database with ended executions):
# a change of the rollup's columns must move that call to the migration that makes it.

# The columns of a contribution row: InsightDay's, in this order.
COLUMNS: tuple[str, ...] = (
    "pipeline_id",
    "identifier",
    "day",
    "hour",
    "name",
    "position",
    "runs",
    "failures",
    "retries",
    "retries_succeeded",
    "flaky_passes",
    "saved_seconds",
)
SUMMED = COLUMNS[6:]
WHOLE_DAY = 24  # the ``hour`` of the rows that hold a whole day
# What a relation of executions (``ended``, ``live``) must select, for the SQL below.
EXECUTION_COLUMNS = (
    "id, pipeline_id, retry_of_id, chain_root_id, status, changed_inputs, created_at, finished_at"
)


# --- SQL that reads the same on PostgreSQL and SQLite --------------------------------------------


def postgres() -> bool:
    return connection.vendor == "postgresql"


def quote(name: str) -> str:
    return connection.ops.quote_name(name)


def tables() -> tuple[str, str, str, str]:
    """The quoted tables: executions, stage runs, InsightDay, InsightRecovery."""
    return (
        quote(Execution._meta.db_table),
        quote(StageRun._meta.db_table),
        quote(InsightDay._meta.db_table),
        quote(InsightRecovery._meta.db_table),
    )


def statuses(values: Iterable[str]) -> str:
    """An SQL list of status literals (statuses are fixed upper-case words: nothing to escape)."""
    items = sorted(set(values))
    if not all(item.replace("_", "").isalpha() and item.isupper() for item in items):
        raise ValueError(f"not statuses: {items}")
    return "(" + ", ".join(f"'{item}'" for item in items) + ")"


def epoch(expression: str) -> str:
    """Seconds since the epoch of a timestamp column (a float)."""
    if postgres():
        return f"CAST(EXTRACT(EPOCH FROM {expression}) AS DOUBLE PRECISION)"
    return f"(julianday({expression}) * 86400.0)"


def greatest(a: str, b: str) -> str:
    return f"GREATEST({a}, {b})" if postgres() else f"MAX({a}, {b})"


def day_of(expression: str) -> str:
    """The UTC day of a timestamp column (SQLite stores them as UTC text)."""
    if postgres():
        return f"CAST(({expression} AT TIME ZONE 'UTC') AS date)"
    return f"date({expression})"


def hour_of(expression: str) -> str:
    """The UTC hour (0-23) of a timestamp column."""
    if postgres():
        return f"CAST(EXTRACT(HOUR FROM ({expression} AT TIME ZONE 'UTC')) AS integer)"
    # time() gives HH:MM:SS (strftime's "%H" would be read as a parameter mark).
    return f"CAST(substr(time({expression}), 1, 2) AS integer)"


def _json_empty(column: str) -> str:
    if postgres():
        return f"jsonb_array_length({column}) = 0"
    return f"json_array_length({column}) = 0"


def marks(values: Sequence[object]) -> str:
    return ", ".join(["%s"] * len(values))


# --- what executions contribute -------------------------------------------------------------


def _saved(executions: str) -> str:
    """The CTE ``saved``: per retry among ``executions`` (a relation with EXECUTION_COLUMNS), the
    run time its carried-over stage runs saved — the wall-clock union of their [start, end] spans,
    the rule of ``executions.retry.wall_clock_seconds``. Not ``max(finished) - min(started)``:
    carried runs can come from different attempts of the chain, and the wait between two attempts
    is no run time. The union is a sum over the runs in start order of the part of each run past
    the latest end before it (a window ``MAX`` over the preceding rows): the part of run *i* up to
    that latest end is covered by the earlier run that reaches it, since that run started no later
    than *i*. One pass in SQL, no rows to Python."""
    _execution, stage, _day, _recovery = tables()
    start, end, reach = epoch("c.started_at"), epoch("c.finished_at"), epoch("c.reach")
    seconds = f"SUM({greatest('0', f'{end} - {greatest(start, f"COALESCE({reach}, {start})")}')})"
    carried = """s.carried_from_id IS NOT NULL
                  AND s.started_at IS NOT NULL AND s.finished_at IS NOT NULL"""
    if postgres():
        # Per retry (LATERAL): its carried runs are read through the stage runs' execution
        # index. A join would let the planner hash every carried run of the table instead.
        return f"""
        saved AS (
            SELECT r.id AS execution_id, x.seconds
            FROM {executions} r CROSS JOIN LATERAL (
                SELECT {seconds} AS seconds
                FROM (
                    SELECT s.started_at, s.finished_at,
                           MAX(s.finished_at) OVER (
                               ORDER BY s.started_at, s.finished_at, s.id
                               ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING
                           ) AS reach
                    FROM {stage} s WHERE s.execution_id = r.id AND {carried}
                ) c
            ) x
            WHERE r.retry_of_id IS NOT NULL
        )"""
    return f"""
        saved AS (
            SELECT c.execution_id, {seconds} AS seconds
            FROM (
                SELECT s.execution_id, s.started_at, s.finished_at,
                       MAX(s.finished_at) OVER (
                           PARTITION BY s.execution_id ORDER BY s.started_at, s.finished_at, s.id
                           ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING
                       ) AS reach
                FROM {stage} s JOIN {executions} r ON r.id = s.execution_id
                WHERE r.retry_of_id IS NOT NULL AND {carried}
            ) c
            GROUP BY c.execution_id
        )"""


def _contribution(executions: str) -> str:
    """Rows of ``COLUMNS`` (to be summed per pipeline, stage and day) for the executions of the
    relation ``executions``, with the CTE ``saved`` of ``_saved(executions)`` in scope:

    1. per stage run that did not come carried over: ``runs`` 1 if it ended SUCCESS, IGNORED,
       FAILED, EXPIRED or REJECTED, ``failures`` 1 for the last three; its name and position;
    2. per retry and stage that failed in the execution it retries and that the retry ran again:
       ``retries`` 1 once the retry ended, ``retries_succeeded`` 1 if it ended SUCCESS,
       ``flaky_passes`` 1 if the stage passed with the runtime inputs unchanged, and the time the
       retry saved;
    3. per retry, ended or not, for its pipeline (identifier ``PIPELINE``): ``retries`` 1 and the
       time it saved.
    """
    _execution, stage, _day, _recovery = tables()
    saved = "CAST(COALESCE(saved.seconds, 0) AS DOUBLE PRECISION)"
    ran = statuses([*PASSED, *FAILED])
    return f"""
        SELECT e.pipeline_id AS pipeline_id, s.identifier AS identifier,
               {day_of("e.created_at")} AS day, {hour_of("e.created_at")} AS hour,
               s.name AS name, s.position AS position,
               CASE WHEN s.status IN {ran} THEN 1 ELSE 0 END AS runs,
               CASE WHEN s.status IN {statuses(FAILED)} THEN 1 ELSE 0 END AS failures,
               0 AS retries, 0 AS retries_succeeded, 0 AS flaky_passes,
               CAST(0 AS DOUBLE PRECISION) AS saved_seconds
        FROM {stage} s JOIN {executions} e ON e.id = s.execution_id
        WHERE s.carried_from_id IS NULL
        UNION ALL
        SELECT r.pipeline_id, a.identifier, {day_of("r.created_at")}, {hour_of("r.created_at")},
               NULL, NULL, 0, 0,
               CASE WHEN r.status IN {statuses(TERMINAL)} THEN 1 ELSE 0 END,
               CASE WHEN r.status = '{Status.SUCCESS}' THEN 1 ELSE 0 END,
               CASE WHEN b.status IN {statuses(PASSED)} AND {_json_empty("r.changed_inputs")}
                    THEN 1 ELSE 0 END,
               {saved}
        FROM {executions} r
        JOIN {stage} a ON a.execution_id = r.retry_of_id AND a.status IN {statuses(FAILED)}
        JOIN {stage} b ON b.execution_id = r.id AND b.identifier = a.identifier
                      AND b.carried_from_id IS NULL
        LEFT JOIN saved ON saved.execution_id = r.id
        UNION ALL
        SELECT r.pipeline_id, '{PIPELINE}', {day_of("r.created_at")}, {hour_of("r.created_at")},
               NULL, NULL, 0, 0, 1, 0, 0,
               {saved}
        FROM {executions} r LEFT JOIN saved ON saved.execution_id = r.id
        WHERE r.retry_of_id IS NOT NULL
    """


def _recoveries(source: str) -> str:
    """Rows (pipeline_id, identifier, day, hour, seconds), one per recovered chain (identifier
    ``PIPELINE``) and one per stage that failed in its original: the original ``o`` ended FAILED,
    ABORTED, EXPIRED or REJECTED, a later attempt ``w`` SUCCESS; the seconds from the original's
    end to that attempt's; the UTC day and hour the original was created. ``source`` is a FROM clause that
    binds ``o`` and ``w``."""
    _execution, stage, _day, _recovery = tables()
    seconds = f"{epoch('w.finished_at')} - {epoch('o.finished_at')}"
    recovered = f"""w.chain_root_id = o.id AND w.status = '{Status.SUCCESS}'
        AND o.retry_of_id IS NULL AND o.status IN {statuses(RETRYABLE)}
        AND o.finished_at IS NOT NULL AND w.finished_at IS NOT NULL"""
    return f"""
        SELECT o.pipeline_id AS pipeline_id, '{PIPELINE}' AS identifier,
               {day_of("o.created_at")} AS day, {hour_of("o.created_at")} AS hour,
               {seconds} AS seconds
        FROM {source} WHERE {recovered}
        UNION ALL
        SELECT o.pipeline_id, a.identifier, {day_of("o.created_at")}, {hour_of("o.created_at")},
               {seconds}
        FROM {source} JOIN {stage} a ON a.execution_id = o.id AND a.status IN {statuses(FAILED)}
        WHERE {recovered}
    """


# --- writing the rollup -----------------------------------------------------------------------


def _add(where: str, params: Sequence[Any], *, recoveries: bool = True) -> None:
    """Add the contribution of the ended executions ``where`` selects (a condition on ``x``)."""
    execution, _stage, day, recovery = tables()
    ended = f"ended AS (SELECT {EXECUTION_COLUMNS} FROM {execution} x WHERE {where})"
    names = ", ".join(COLUMNS)
    if postgres():
        least = "LEAST({0}, {1})"
    else:
        least = "MIN({0}, {1})"
    updates = [
        "name = "
        + least.format(
            f"COALESCE({day}.name, excluded.name)", f"COALESCE(excluded.name, {day}.name)"
        ),
        "position = "
        + least.format(
            f"COALESCE({day}.position, excluded.position)",
            f"COALESCE(excluded.position, {day}.position)",
        ),
        *(f"{column} = {day}.{column} + excluded.{column}" for column in SUMMED),
    ]
    sums = ", ".join(f"SUM({column})" for column in SUMMED)
    whole_day = ", ".join(f"{WHOLE_DAY}" if column == "hour" else column for column in COLUMNS)
    with connection.cursor() as cursor:
        # Each contribution twice: in its hour's row and in its day's (hour WHOLE_DAY). In key
        # order: two executions of a pipeline ending at once lock the rows they share in the
        # same order (no deadlock), whatever order the grouping produced them in.
        # WHERE 1 = 1: SQLite reads ON CONFLICT after a SELECT's FROM as a join's ON without it.
        cursor.execute(
            f"""
            WITH {ended}, {_saved("ended")}, c AS ({_contribution("ended")})
            INSERT INTO {day} ({names})
            SELECT pipeline_id, identifier, day, hour, MIN(name), MIN(position), {sums}
            FROM (SELECT {names} FROM c UNION ALL SELECT {whole_day} FROM c) u
            WHERE 1 = 1
            GROUP BY pipeline_id, identifier, day, hour
            ORDER BY pipeline_id, day, hour, identifier
            ON CONFLICT (pipeline_id, day, hour, identifier) DO UPDATE SET {", ".join(updates)}
            """,
            list(params),
        )
        if recoveries:
            cursor.execute(
                f"""
                WITH {ended}
                INSERT INTO {recovery} (pipeline_id, identifier, day, hour, seconds)
                {_recoveries(f"ended w JOIN {execution} o ON o.id = w.chain_root_id")}
                """,
                list(params),
            )


def record_ended(execution_id: int, status: str) -> None:
    """Add what an execution that has just ended with ``status`` contributes: one upsert, and,
    when it ended SUCCESS, its chain's recovery rows (none for an original). Call it in the
    transaction of its last status change (``executions.transitions.transition`` does)."""
    _add("x.id = %s", [execution_id], recoveries=status == Status.SUCCESS)


def rebuild(progress: Callable[[str], None] | None = None, *, chunk: int = CHUNK) -> int:
    """Recompute the whole rollup from the executions, in one transaction, ``chunk`` ids per
    statement. On PostgreSQL the rollup tables are locked first: an execution ending meanwhile
    waits for the rebuild, then adds itself (the rebuild did not count it: it had not ended in
    what the rebuild read). Returns the number of ended executions counted."""
    execution, stage, day, recovery = tables()
    ended = f"x.status IN {statuses(TERMINAL)}"
    with transaction.atomic(), connection.cursor() as cursor:
        if postgres():
            cursor.execute(f"LOCK TABLE {day}, {recovery} IN EXCLUSIVE MODE")
            cursor.execute("SET LOCAL jit = off")
            # Fresh statistics for the planner: after a bulk load (a restore, the benchmark's
            # dataset) they may still describe empty tables, and each chunk would be planned as
            # nested scans of the whole stage runs table.
            cursor.execute(f"ANALYZE {execution}, {stage}")
        cursor.execute(f"DELETE FROM {day}")
        cursor.execute(f"DELETE FROM {recovery}")
        cursor.execute(f"SELECT MIN(id), MAX(id), COUNT(*) FROM {execution} x WHERE {ended}")
        low, high, count = cursor.fetchone()
        if not count:
            return 0
        for start in range(low, high + 1, chunk):
            _add(f"x.id >= %s AND x.id < %s AND {ended}", [start, start + chunk])
            if progress is not None:
                done = min(high, start + chunk - 1) - low + 1
                progress(
                    f"  executions {start:,}–{min(high, start + chunk - 1):,} ({done * 100 // (high - low + 1)} %)"
                )
    return int(count)


# --- reading: the rollup and what it does not hold --------------------------------------------


@dataclass(frozen=True)
class Window:
    """The period ``[since, now]`` in five parts: ``[since, first_hour)``, read live;
    ``[first_hour, cut)``, the rest of its first UTC day, whole hours, from the rollup's hour
    rows; ``[cut, today)``, whole UTC days, from its day rows; ``[today, last_hour)``, whole hours
    of today, from its hour rows; ``[last_hour, now]``, read live. Executions created in the
    three middle parts that have not ended are read live too. So at most two partial hours of
    executions are read live, whatever the period."""

    since: datetime
    first_hour: datetime
    cut: datetime
    today: datetime
    last_hour: datetime

    @classmethod
    def of(cls, now: datetime, days: int) -> Window:
        if days < 1:
            raise ValueError(f"a period of at least a day, not {days}")
        since = now - timedelta(days=days)
        last_hour = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        today = last_hour.replace(hour=0)
        hour = since.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        first_hour = hour if hour == since else hour + timedelta(hours=1)
        cut = hour.replace(hour=0) + timedelta(days=1)
        return cls(since, min(first_hour, cut), cut, today, last_hour)

    def rollup_rows(self, *, recoveries: bool = False) -> tuple[str, list[Any], str, list[Any]]:
        """The conditions on the rollup's ``day`` and ``hour`` that select the parts it holds,
        the whole days and the whole hours, with their parameters: InsightDay's day rows (hour
        ``WHOLE_DAY``) and hour rows; InsightRecovery's rows (one per chain, with its hour)."""
        adapt = connection.ops.adapt_datefield_value
        first_day, first_hour = self.since.astimezone(UTC).date(), self.first_hour.hour
        if self.first_hour >= self.cut:
            first_hour = WHOLE_DAY  # no whole hour left on the first day
        days = "day >= %s AND day < %s"
        hours = "((day = %s AND hour >= %s) OR (day = %s AND hour < %s))"
        if not recoveries:
            days, hours = f"hour = {WHOLE_DAY} AND {days}", f"hour < {WHOLE_DAY} AND {hours}"
        today = adapt(self.today.date())
        return (
            days,
            [adapt(self.cut.date()), today],
            hours,
            [adapt(first_day), first_hour, today, self.last_hour.hour],
        )


def live_cte(pipelines: list[int], window: Window) -> tuple[str, list[object]]:
    """The CTE ``live``: the executions of ``pipelines`` in the period that the rollup does not
    hold (three index scans: the first partial hour, the last one, and the not ended ones
    between)."""
    execution = tables()[0]
    where = f"pipeline_id IN ({marks(pipelines)})"
    sql = f"""
        live AS (
            SELECT {EXECUTION_COLUMNS} FROM {execution}
            WHERE {where} AND created_at >= %s AND created_at < %s
            UNION ALL
            SELECT {EXECUTION_COLUMNS} FROM {execution} WHERE {where} AND created_at >= %s
            UNION ALL
            SELECT {EXECUTION_COLUMNS} FROM {execution}
            WHERE {where} AND created_at >= %s AND created_at < %s
              AND status IN {statuses(NOT_ENDED)}
        )"""
    params: list[object] = [
        *pipelines,
        window.since,
        window.first_hour,
        *pipelines,
        window.last_hour,
        *pipelines,
        window.first_hour,
        window.last_hour,
    ]
    return sql, params


def figure_rows(pipelines: list[int], window: Window) -> tuple[str, list[object]]:
    """SQL of the summed ``COLUMNS`` (less ``day`` and ``hour``) per pipeline and identifier
    over the period: the rollup's whole days and hours plus the live executions."""
    day = tables()[2]
    live, params = live_cte(pipelines, window)
    sums = ", ".join(f"SUM({column})" for column in SUMMED)
    rollup_columns = ", ".join(COLUMNS)
    days, day_params, hours, hour_params = window.rollup_rows()
    # Two selects, not one with OR: the day rows are read from their covering index alone.
    sql = f"""
        WITH {live}, {_saved("live")}
        SELECT pipeline_id, identifier, MIN(name), MIN(position), {sums}
        FROM (
            SELECT {rollup_columns} FROM {day}
            WHERE pipeline_id IN ({marks(pipelines)}) AND {days}
            UNION ALL
            SELECT {rollup_columns} FROM {day}
            WHERE pipeline_id IN ({marks(pipelines)}) AND {hours}
            UNION ALL
            {_contribution("live")}
        ) u
        GROUP BY pipeline_id, identifier
    """
    return sql, [*params, *pipelines, *day_params, *pipelines, *hour_params]


def recovery_rows(pipelines: list[int], window: Window) -> tuple[str, list[object]]:
    """SQL of the rows (pipeline_id, identifier, day, hour, seconds) of the chains recovered whose
    original was created in the period: the rollup's, and the live originals'."""
    execution, _stage, _day, recovery = tables()
    live, params = live_cte(pipelines, window)
    days, day_params, hours, hour_params = window.rollup_rows(recoveries=True)
    sql = f"""
        WITH {live}
        SELECT pipeline_id, identifier, day, hour, seconds FROM {recovery}
        WHERE pipeline_id IN ({marks(pipelines)}) AND (({days}) OR {hours})
        UNION ALL
        {_recoveries(f"live o JOIN {execution} w ON w.chain_root_id = o.id")}
    """
    return sql, [*params, *pipelines, *day_params, *hour_params]
