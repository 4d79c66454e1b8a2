"""The only writer of statuses: every status change of an execution, stage run or step run.

``transition(obj, to=…)`` checks the move against ``executions.states.TRANSITIONS`` and refuses
a move the table does not allow by raising ``IllegalTransition`` (nothing written, no event).
An allowed move is a compare-and-set, ``UPDATE … WHERE id = … AND status IN (sources)``: one
row changed means this call won, none means someone else moved the row first (no lock held
across work). Its ``Event`` is written in the same transaction: at once, or, inside
``events_batched()``, with the batch's other events in one INSERT when the batch ends (the
engine's hot path: one statement for all the events of an advance).

``claim_step`` is the one specialised writer: QUEUED → RUNNING for a worker in a single
``UPDATE … RETURNING`` (with the attempt count, worker and lease), because the claim is the
per-step cost the engine pays most often; its move is checked against the table when this
module is imported.

Not transitions: rows *created* with a status (a new execution QUEUED, a rerun's unselected
stages SKIPPED, a retry's carried-over runs with their original status, copied in
``executions.services``) are creation; any later change of theirs goes through here.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from django.contrib.auth.models import User
from django.db import connection, transaction
from django.db.models import F, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

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
) -> None:
    """An event without a status change (an operator action: created, retried …)."""
    _record_event(
        Event(execution_id=execution.pk, action=action, actor=actor, message=message[:2000])
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
    updated = (
        type(obj)
        ._default_manager.filter(pk=obj.pk, status__in=allowed_from)
        .update(status=to, **fields)
    )
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
