"""The only writer of statuses: every status change of an execution, stage run or step run.

``transition(obj, to=…)`` checks the move against ``executions.states.TRANSITIONS`` and refuses
a move the table does not allow by raising ``IllegalTransition`` (nothing written, no event).
An allowed move is a compare-and-set, ``UPDATE … WHERE id = … AND status IN (sources)``: one
row changed means this call won, none means someone else moved the row first (no lock held
across work). Its ``Event`` is written in the same transaction: at once, or, inside
``events_batched()``, with the batch's other events in one INSERT when the batch ends (the
engine's hot path: one statement for all the events of an advance).

``claim_step`` and ``claim_here`` are the specialised writers, because a claim is the per-step
cost the engine pays most often: ``claim_step`` moves a QUEUED step to RUNNING for a worker in
a single ``UPDATE … RETURNING`` (with the attempt count, worker and lease); ``claim_here``
moves a NOT_STARTED step through QUEUED to RUNNING in one ``UPDATE`` (the engine's fast path:
the step made due by a result, claimed by the worker that wrote it, in the same transaction),
recording both events. Their moves are checked against the table when this module is imported.

An execution's move to a terminal status also adds what it contributes to the retry insights'
rollup (``executions.rollup.record_ended``), in the same transaction: the one place where an
execution's end is recorded.

Not transitions: rows *created* with a status (a new execution QUEUED, a rerun's unselected
stages SKIPPED, a retry's carried-over runs with their original status, copied in
``executions.services``) are creation; any later change of theirs goes through here.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.contrib.auth.models import User
from django.db import connection, transaction
from django.db.models import F, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from executions import rollup
from executions.models import Event, Execution, StageRun, StepRun
from executions.states import TERMINAL, Status, is_allowed

type Run = Execution | StageRun | StepRun


class IllegalTransition(Exception):
    """A move ``TRANSITIONS`` does not allow was asked for: a bug in the caller, not a refusal
    to show to a user. Nothing was written."""

    def __init__(self, obj: Run, sources: Iterable[str], to: str) -> None:
        self.sources = sorted(sources)
        self.to = to
        super().__init__(
            f"{type(obj).__name__} {obj.pk}: {' | '.join(self.sources) or '(no status)'} → {to} "
            "is not an allowed status change"
        )


_CLAIM_FROM, _CLAIM_TO = Status.QUEUED, Status.RUNNING
if not is_allowed(_CLAIM_FROM, _CLAIM_TO):  # claim_step writes this move without transition()
    raise ImportError(f"TRANSITIONS must allow {_CLAIM_FROM} → {_CLAIM_TO} (claim_step)")
# claim_here writes NOT_STARTED → QUEUED → RUNNING in one statement, without transition().
if not is_allowed(Status.NOT_STARTED, _CLAIM_FROM):
    raise ImportError(f"TRANSITIONS must allow {Status.NOT_STARTED} → {_CLAIM_FROM} (claim_here)")
# finish_and_claim_next writes these moves in one statement, without transition().
for _source, _to in ((Status.RUNNING, Status.SUCCESS), (Status.NOT_STARTED, Status.RUNNING)):
    if not is_allowed(_source, _to):
        raise ImportError(f"TRANSITIONS must allow {_source} → {_to} (finish_and_claim_next)")


# --- events ------------------------------------------------------------------------------------

_batch = threading.local()


@contextmanager
def events_batched() -> Iterator[None]:
    """Collect the events of the transitions made inside, and write them in one INSERT at the
    end (call inside the transaction that makes the transitions, so they commit together)."""
    if getattr(_batch, "events", None) is not None:  # nested: the outer batch writes them
        yield
        return
    _batch.events = []
    try:
        yield
        if _batch.events:
            Event.objects.bulk_create(_batch.events)
    finally:
        _batch.events = None


def _record_event(event: Event) -> None:
    events: list[Event] | None = getattr(_batch, "events", None)
    if events is None:
        event.save(force_insert=True)
    else:
        events.append(event)


def record(
    execution: Execution,
    action: str,
    *,
    actor: User | None = None,
    message: str = "",
    step: StepRun | None = None,
) -> None:
    """An event without a status change (an operator action: created, retried …; ``step``:
    the step it concerns, e.g. an approval rejected that a failure strategy then handles)."""
    _record_event(
        Event(
            execution_id=execution.pk,
            step_run=step,
            action=action,
            actor=actor,
            message=message[:2000],
        )
    )


# --- status changes ----------------------------------------------------------------------------


def transition(
    obj: Run,
    *,
    to: str,
    sources: Iterable[str] | None = None,
    actor: User | None = None,
    action: str = "",
    message: str = "",
    **fields: Any,
) -> bool:
    """Move ``obj`` to status ``to`` if it is still in one of ``sources`` (default: the status
    it was read with); record an event. ``fields``: other columns written with the status.

    Raises ``IllegalTransition`` when ``TRANSITIONS`` does not allow the move from one of
    ``sources``. Returns whether this call won; ``obj`` is updated in memory only when it did.
    """
    allowed_from = frozenset(sources) if sources is not None else frozenset({obj.status})
    for_execution = isinstance(obj, Execution)
    if not allowed_from or not all(
        is_allowed(source, to, execution=for_execution) for source in allowed_from
    ):
        raise IllegalTransition(obj, allowed_from, to)
    now = timezone.now()
    if to == Status.RUNNING and "started_at" not in fields:
        # The first start counts: WAITING → RUNNING after an approval keeps the original time.
        fields["started_at"] = Coalesce(F("started_at"), Value(now))
    if to in TERMINAL and to != Status.SKIPPED:
        fields.setdefault("finished_at", now)
    # An execution's end adds what it contributes to the retry insights' rollup, in the same
    # transaction (one upsert; executions.rollup).
    ends_execution = for_execution and to in TERMINAL
    with transaction.atomic(savepoint=False) if ends_execution else nullcontext():
        updated = (
            type(obj)
            ._default_manager.filter(pk=obj.pk, status__in=allowed_from)
            .update(status=to, **fields)
        )
        if updated and ends_execution:
            rollup.record_ended(obj.pk, to)
    if not updated:
        return False
    previous = obj.status
    obj.status = to
    for key, value in fields.items():
        if not hasattr(value, "resolve_expression"):
            setattr(obj, key, value)
    event = Event(
        from_status=previous if previous in allowed_from else "",
        to_status=to,
        actor=actor,
        action=action,
        message=message[:2000],
        # A person's answer (an approval, an intervention) writes their comment on the step:
        # its event keeps it too (the audit trail, SPEC §9).
        comment=str(fields.get("comment") or "")[:2000],
    )
    if isinstance(obj, Execution):
        event.execution_id = obj.pk
    else:
        event.execution_id = obj.execution_id
        if isinstance(obj, StageRun):
            event.stage_run = obj
        else:
            event.step_run = obj
    _record_event(event)
    return True


def claim_step(
    step_id: int, *, worker: str, lease_expires_at: datetime, now: datetime
) -> StepRun | None:
    """QUEUED → RUNNING for ``worker``, in one statement (``UPDATE … RETURNING``), with its
    event. None when the step is not QUEUED any more (a redelivered task: it runs elsewhere or
    has finished), so a step never runs twice."""
    table = connection.ops.quote_name(StepRun._meta.db_table)
    adapt = connection.ops.adapt_datetimefield_value
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {table} SET status = %s, attempts = attempts + 1, worker = %s, "
                "lease_expires_at = %s, started_at = %s WHERE id = %s AND status = %s "
                "RETURNING stage_run_id, execution_id, identifier, attempts",
                [_CLAIM_TO, worker, adapt(lease_expires_at), adapt(now), step_id, _CLAIM_FROM],
            )
            row = cursor.fetchone()
        if row is None:
            return None
        stage_run_id, execution_id, identifier, attempts = row
        step = StepRun(
            pk=step_id,
            stage_run_id=stage_run_id,
            execution_id=execution_id,
            identifier=identifier,
            status=_CLAIM_TO,
            attempts=attempts,
            worker=worker,
            lease_expires_at=lease_expires_at,
            started_at=now,
        )
        Event.objects.create(
            execution_id=execution_id, step_run=step, from_status=_CLAIM_FROM, to_status=_CLAIM_TO
        )
    return step


def claim_here(step: StepRun, *, worker: str, lease_expires_at: datetime, now: datetime) -> bool:
    """NOT_STARTED → QUEUED → RUNNING for ``worker`` in one compare-and-set, with both events
    (the step's history reads as queued and claimed at ``now``). Call inside the transaction
    that made the step due. False when the step was not NOT_STARTED any more."""
    updated = StepRun.objects.filter(pk=step.pk, status=Status.NOT_STARTED).update(
        status=_CLAIM_TO,
        queued_at=now,
        started_at=now,
        attempts=F("attempts") + 1,
        worker=worker,
        lease_expires_at=lease_expires_at,
    )
    if not updated:
        return False
    step.status = _CLAIM_TO
    step.queued_at = step.started_at = now
    step.attempts += 1
    step.worker = worker
    step.lease_expires_at = lease_expires_at
    for source, to in ((Status.NOT_STARTED, _CLAIM_FROM), (_CLAIM_FROM, _CLAIM_TO)):
        _record_event(
            Event(execution_id=step.execution_id, step_run=step, from_status=source, to_status=to)
        )
    return True


@dataclass
class Handover:
    """What ``finish_and_claim_next`` changed: each move happened only if the one before it did."""

    running: bool = False  # the execution was RUNNING (and locked) when the statement ran
    step_done: bool = False
    stage_done: bool = False
    next_stage: StageRun | None = None
    next_step: StepRun | None = None


def finish_and_claim_next(
    step: StepRun,
    stage_run: StageRun,
    *,
    exit_code: int | None,
    outputs: dict[str, str],
    pid: int | None,
    next_stage: str,
    next_step: str,
    worker: str,
    lease_expires_at: datetime,
    now: datetime,
) -> Handover:
    """The engine's simple path on PostgreSQL, in one statement: a running step ends SUCCESS,
    its stage (whose only step it is) ends SUCCESS with the step's outputs, the next stage
    (``next_stage``, NOT_STARTED) starts RUNNING, and its first step (``next_step``) is claimed
    for ``worker`` as ``claim_here`` does. Each move is a compare-and-set made only if the one
    before it was, and the same statement inserts the events of the moves made, in the order
    ``transition`` would have. The statement takes the execution's lock first (as every writer
    does) and does nothing unless the execution is RUNNING; outside a transaction it is one of
    its own, committed before this returns. Whatever was not done (a row already moved by
    someone else) is the general advance's."""
    quote = connection.ops.quote_name
    steps, stages = quote(StepRun._meta.db_table), quote(StageRun._meta.db_table)
    events = quote(Event._meta.db_table)
    executions = quote(Execution._meta.db_table)
    document = json.dumps(outputs)
    execution_id = stage_run.execution_id
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            WITH x AS (
                SELECT id FROM {executions} WHERE id = %s AND status = %s FOR UPDATE
            ), s AS (
                UPDATE {steps} SET status = %s, exit_code = %s, outputs = %s::jsonb, error = '',
                    lease_expires_at = NULL, pid = %s, finished_at = %s
                WHERE id = %s AND status = %s AND EXISTS (SELECT 1 FROM x) RETURNING id
            ), g AS (
                UPDATE {stages} SET status = %s, outputs = %s::jsonb, finished_at = %s
                WHERE id = %s AND status = %s AND EXISTS (SELECT 1 FROM s) RETURNING id
            ), n AS (
                UPDATE {stages} SET status = %s, started_at = COALESCE(started_at, %s)
                WHERE execution_id = %s AND identifier = %s AND status = %s
                    AND EXISTS (SELECT 1 FROM g)
                RETURNING id, name, group_index, position, queue
            ), t AS (
                UPDATE {steps} SET status = %s, queued_at = %s, started_at = %s,
                    attempts = attempts + 1, worker = %s, lease_expires_at = %s
                WHERE stage_run_id = (SELECT id FROM n) AND identifier = %s AND status = %s
                RETURNING id, name, type, position, attempts
            ), e AS (
                INSERT INTO {events} (execution_id, stage_run_id, step_run_id, from_status,
                    to_status, action, actor_id, message, at)
                SELECT %s, v.stage_run_id, v.step_run_id, v.from_status, v.to_status, '', NULL,
                    '', %s
                FROM (
                    SELECT 1 AS k, NULL::bigint AS stage_run_id, s.id AS step_run_id,
                        %s::text AS from_status, %s::text AS to_status FROM s
                    UNION ALL SELECT 2, g.id, NULL, %s, %s FROM g
                    UNION ALL SELECT 3, n.id, NULL, %s, %s FROM n
                    UNION ALL SELECT 4, NULL, t.id, %s, %s FROM t
                    UNION ALL SELECT 5, NULL, t.id, %s, %s FROM t
                ) AS v ORDER BY v.k
                RETURNING id
            )
            SELECT (SELECT count(*) FROM x), (SELECT count(*) FROM s), (SELECT count(*) FROM g),
                n.id, n.name, n.group_index, n.position, n.queue,
                t.id, t.name, t.type, t.position, t.attempts, (SELECT count(*) FROM e)
            FROM (SELECT 1) AS one LEFT JOIN n ON true LEFT JOIN t ON true
            """,
            [
                execution_id, Status.RUNNING,
                Status.SUCCESS, exit_code, document, pid, now, step.pk, Status.RUNNING,
                Status.SUCCESS, document, now, stage_run.pk, Status.RUNNING,
                Status.RUNNING, now, execution_id, next_stage, Status.NOT_STARTED,
                _CLAIM_TO, now, now, worker, lease_expires_at, next_step, Status.NOT_STARTED,
                execution_id, now,
                Status.RUNNING, Status.SUCCESS,
                Status.RUNNING, Status.SUCCESS,
                Status.NOT_STARTED, Status.RUNNING,
                Status.NOT_STARTED, _CLAIM_FROM,
                _CLAIM_FROM, _CLAIM_TO,
            ],
        )  # fmt: skip
        row = cursor.fetchone()
    running, row = bool(row[0]), row[1:]
    handover = Handover(running=running, step_done=bool(row[0]), stage_done=bool(row[1]))
    if handover.step_done:
        step.status = Status.SUCCESS
        step.exit_code, step.outputs, step.error = exit_code, outputs, ""
        step.lease_expires_at, step.pid, step.finished_at = None, pid, now
    if handover.stage_done:
        stage_run.status, stage_run.outputs, stage_run.finished_at = Status.SUCCESS, outputs, now
    if row[2] is not None:
        handover.next_stage = StageRun(
            pk=row[2],
            execution_id=execution_id,
            identifier=next_stage,
            name=row[3],
            group_index=row[4],
            position=row[5],
            queue=row[6],
            status=Status.RUNNING,
            started_at=now,
        )
    if row[7] is not None:
        handover.next_step = StepRun(
            pk=row[7],
            stage_run=handover.next_stage,
            execution_id=execution_id,
            identifier=next_step,
            name=row[8],
            type=row[9],
            position=row[10],
            attempts=row[11],
            status=_CLAIM_TO,
            queued_at=now,
            started_at=now,
            worker=worker,
            lease_expires_at=lease_expires_at,
        )
    return handover
