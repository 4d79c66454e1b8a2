"""Statuses of executions, stage runs and step runs, and every rule about them (SPEC §3).

This module is the one home of: the statuses (``Status``), the sets (``ACTIVE``, ``TERMINAL``,
``RETRYABLE``, ``SUCCEEDED``), the worst-status order (``WORST_FIRST`` / ``worst``) and the
table of allowed moves (``TRANSITIONS``). ``executions.transitions`` is the only code that
writes a status, and it refuses any move this table does not allow.

Allowed moves, for stage runs and step runs (executions: the same, never ``SKIPPED``)::

                  ┌─► SKIPPED      (condition false)
                  ├─► FAILED       (cannot start)
    NOT_STARTED ──┼─► QUEUED ──┬─► SKIPPED | FAILED | ABORTED
                  │            ▼
                  └─────────► RUNNING ◄──► WAITING ◄── NOT_STARTED (an approval step)
                                 │            │
                                 ▼            ▼
                      SUCCESS | FAILED | EXPIRED | REJECTED | ABORTED   (terminal: no way out)

Who makes each move:

- ``NOT_STARTED → QUEUED``: a step is sent to a worker. ``NOT_STARTED → RUNNING``: a stage
  starts. ``NOT_STARTED → WAITING``: an approval step starts waiting (it never runs on a
  worker). ``NOT_STARTED → SKIPPED``: a stage whose ``when:`` condition is false, and its steps.
  ``NOT_STARTED → FAILED``: a stage that cannot start (its condition cannot be evaluated).
- ``QUEUED → RUNNING``: a worker claims a step (``transitions.claim_step``); an execution
  starts (it is created QUEUED and started in the same transaction). ``QUEUED → ABORTED``: abort.
  ``QUEUED → FAILED | SKIPPED``: what ``engine._start_stage`` does to a stage that is QUEUED.
- ``RUNNING ⇄ WAITING``: a stage or execution waits for an approval and runs on after it.
- ``RUNNING | WAITING → SUCCESS | FAILED | EXPIRED | REJECTED | ABORTED``: a step's result (the
  runner, the reaper: worker lost, approval expired; an answer: approved, rejected), then its
  stage's (the step's status), then the execution's (the worst of a group, ``worst``).
- Terminal statuses never change: a retry is a new execution.

Failure strategies (SPEC §9) add: ``RUNNING | WAITING → IGNORED`` (``ignore``: the step
failed, or its approval was rejected or expired; the stage and run go on); ``RUNNING | WAITING
→ QUEUED`` (``retry``: the next attempt, dispatched at once or when its durable wait is due)
and ``QUEUED → WAITING`` (an approval step's next attempt: it is asked again);
``RUNNING | WAITING → INTERVENTION_WAITING`` (``manual_intervention``; a stage or execution
with such a step waits too); ``INTERVENTION_WAITING → QUEUED | IGNORED | SUCCESS | FAILED |
ABORTED`` (the answer, or ``on_timeout``) and ``→ RUNNING | WAITING`` (a stage or execution
going on after it). ``IGNORED`` is terminal and counts as succeeded.

Moves the table forbids (and that nothing makes): back to ``NOT_STARTED``; back to ``QUEUED``
but for a retry; out of a terminal status; ``NOT_STARTED → ABORTED`` (abort touches active
rows only: what never started stays NOT_STARTED); ``QUEUED → SUCCESS | EXPIRED | REJECTED``
(an execution is RUNNING before anything ends; a step is claimed, or an approval asked,
before it ends).

Rows created with a status (a rerun's unselected stages SKIPPED, a retry's carried-over stages
with their original result) are created, not moved: no transition, no check.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from django.db import models


class Status(models.TextChoices):
    NOT_STARTED = "NOT_STARTED", "Not started"
    QUEUED = "QUEUED", "Queued"
    RUNNING = "RUNNING", "Running"
    WAITING = "WAITING", "Waiting for approval"
    SUCCESS = "SUCCESS", "Success"
    FAILED = "FAILED", "Failed"
    ABORTED = "ABORTED", "Aborted"
    EXPIRED = "EXPIRED", "Expired"
    REJECTED = "REJECTED", "Rejected"
    SKIPPED = "SKIPPED", "Skipped"
    # Failure strategies (SPEC §9): a failure ignored by a rule (it counts as a success), and a
    # failed step waiting for a person to choose what happens (retry, ignore, …, abort).
    IGNORED = "IGNORED", "Failed, ignored"
    INTERVENTION_WAITING = "INTERVENTION_WAITING", "Needs intervention"


ACTIVE: frozenset[str] = frozenset(
    {Status.QUEUED, Status.RUNNING, Status.WAITING, Status.INTERVENTION_WAITING}
)
TERMINAL: frozenset[str] = frozenset(
    {
        Status.SUCCESS,
        Status.FAILED,
        Status.ABORTED,
        Status.EXPIRED,
        Status.REJECTED,
        Status.SKIPPED,
        Status.IGNORED,
    }
)
# An execution that ended so can be retried (SPEC §4).
RETRYABLE: frozenset[str] = frozenset(
    {Status.FAILED, Status.ABORTED, Status.EXPIRED, Status.REJECTED}
)
# A stage or step that ended so lets the next one start (and is carried over by a retry): an
# IGNORED step failed, but a failure strategy said to go on (SPEC §9).
SUCCEEDED: frozenset[str] = frozenset({Status.SUCCESS, Status.SKIPPED, Status.IGNORED})
# An execution is never skipped (SPEC §3: "the same less SKIPPED"), nor ignored (a run whose
# failures were ignored ends SUCCESS).
EXECUTION_STATUSES: frozenset[str] = frozenset(Status) - {Status.SKIPPED, Status.IGNORED}

# The worst status first: the status a parallel group (and so its execution) ends with when its
# members ended differently, and the status the retry planner shows for a group.
WORST_FIRST: tuple[str, ...] = (
    Status.ABORTED,
    Status.FAILED,
    Status.EXPIRED,
    Status.REJECTED,
    Status.INTERVENTION_WAITING,
    Status.RUNNING,
    Status.WAITING,
    Status.QUEUED,
    Status.NOT_STARTED,
    Status.SKIPPED,
    Status.IGNORED,
    Status.SUCCESS,
)

_ENDINGS = frozenset(
    {Status.SUCCESS, Status.FAILED, Status.EXPIRED, Status.REJECTED, Status.ABORTED}
)

# What a failure strategy makes of a running step (SPEC §9): the failure ignored, or a person
# asked to choose.
_STRATEGIES = frozenset({Status.IGNORED, Status.INTERVENTION_WAITING})

# Which statuses a row may move to from each status (see the diagram above).
TRANSITIONS: Mapping[str, frozenset[str]] = {
    Status.NOT_STARTED: frozenset(
        {Status.QUEUED, Status.RUNNING, Status.WAITING, Status.SKIPPED, Status.FAILED}
    ),
    # WAITING: an approval step queued for its next attempt (a retry) is asked again.
    Status.QUEUED: frozenset(
        {Status.RUNNING, Status.ABORTED, Status.FAILED, Status.SKIPPED, Status.WAITING}
    ),
    # QUEUED: a failure strategy's retry queues the step's next attempt.
    Status.RUNNING: _ENDINGS | _STRATEGIES | {Status.WAITING, Status.QUEUED},
    # A rejected or expired approval's failure strategy: asked again (QUEUED, then WAITING),
    # ignored, or a person asked to choose.
    Status.WAITING: _ENDINGS | _STRATEGIES | {Status.RUNNING, Status.QUEUED},
    # An answer (or its timeout): retry queues a new attempt; ignore, mark as success, mark as
    # failure, abort end it. A stage or execution runs on (or waits for an approval) after it.
    Status.INTERVENTION_WAITING: _ENDINGS
    | {Status.QUEUED, Status.RUNNING, Status.WAITING, Status.IGNORED},
    **{status: frozenset() for status in TERMINAL},
}


def is_terminal(status: str) -> bool:
    return status in TERMINAL


def is_allowed(source: str, to: str, *, execution: bool = False) -> bool:
    """Whether ``TRANSITIONS`` allows ``source → to`` (``execution``: for an execution)."""
    if execution and (source not in EXECUTION_STATUSES or to not in EXECUTION_STATUSES):
        return False
    return to in TRANSITIONS.get(source, frozenset())


def worst(statuses: Iterable[str]) -> str:
    """The worst of ``statuses`` (at least one) by ``WORST_FIRST``."""
    return min(statuses, key=WORST_FIRST.index)
