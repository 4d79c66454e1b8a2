"""The engine: moves executions forward, one compare-and-set transition at a time.

State lives in the database; the broker only carries "run step N now". ``advance`` is the one
reconciler: given an execution, it looks at its stage and step runs and does whatever is due
(skip a stage whose condition is false, queue the next step, finish a stage, finish the
execution). It is idempotent and runs under a lock on the execution row, so a worker that
finishes a step, the reaper and an approval can all call it at once without harm.

Steps run in ``executions.tasks.run_step`` → ``run_step`` below. A step is claimed with a
compare-and-set QUEUED → RUNNING, so a redelivered task never runs a step twice; while it runs
the worker renews the step's lease, and the reaper (``reap``) fails a step whose lease lapsed.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from celery import current_app
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Exists, F, OuterRef, Subquery
from django.utils import timezone

from executions.context import build_context
from executions.models import Execution, PendingWait, StageRun, StepRun
from executions.runners import run as run_with_runner
from executions.runners.base import StepResult, with_db_retry
from executions.states import ACTIVE, SUCCEEDED, TERMINAL, Status, worst
from executions.strategies import ERROR_CLASS_OF, apply_failure, decision_for, start_due_wait
from executions.transitions import (
    claim_here,
    claim_step,
    events_batched,
    finish_and_claim_next,
    record,
    transition,
)
from pipelines.conditions import evaluate_condition
from stageline.masking import mask

log = logging.getLogger(__name__)

# The Celery task that runs a step (``executions.tasks.run_step``), sent by name: the tasks
# module imports this one, never the other way round.
RUN_STEP_TASK = "executions.tasks.run_step"


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


# --- dispatch -------------------------------------------------------------------------------


def dispatch_step(step: StepRun, queue: str) -> None:
    """Send "run this step" to the broker once the current transaction commits.

    If the broker cannot be reached the step stays QUEUED in the database and the reaper sends
    it again later (``STAGELINE_REDISPATCH_AFTER_SECONDS``): nothing is lost, nothing fails.

    An approval step never goes to a worker: dispatching one (the next attempt of a failure
    strategy's retry, SPEC §9) asks for the approval again, here and now (``ask_again``).
    """
    if step.type == "Approval":
        ask_again(step)
        return
    task_id = f"step-{step.pk}-{timezone.now().timestamp():.6f}"
    transaction.on_commit(partial(_send, step.pk, queue or "default", task_id))


def _send(step_id: int, queue: str, task_id: str) -> None:
    try:
        current_app.send_task(
            RUN_STEP_TASK, args=[step_id], queue=queue, task_id=task_id, retry=False
        )
    except Exception:  # noqa: BLE001 - any broker failure: the reaper re-sends from the database
        log.warning(
            "could not send step %s to queue %s; the reaper will re-send it",
            step_id,
            queue,
            exc_info=True,
        )


# --- the reconciler -------------------------------------------------------------------------


def _lock_execution(execution_id: int) -> Execution | None:
    """The execution with its version, locked."""
    # of=("self",): lock the execution row only, not its (shared, immutable) version, which
    # every execution of the pipeline version would otherwise queue behind.
    return (
        Execution.objects.filter(pk=execution_id)
        .select_related("version")
        .select_for_update(of=("self",))
        .first()
    )


def _lock_held(execution: Execution) -> bool:
    """Lock the row of ``execution`` (held by the caller with its version: nothing but its
    status changes) and refresh its status; False when it is gone. One plain statement: the
    per-step lock of the hot path reads no other column (no inputs to decode)."""
    table = connection.ops.quote_name(Execution._meta.db_table)
    lock = " FOR UPDATE" if connection.features.has_select_for_update else ""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT status FROM {table} WHERE id = %s{lock}", [execution.pk])
        row = cursor.fetchone()
    if row is None:
        return False
    execution.status = row[0]
    return True


def advance(execution_id: int) -> None:
    """Do whatever is due for one execution. Safe to call any number of times, concurrently."""
    with transaction.atomic(), events_batched():
        execution = _lock_execution(execution_id)
        if execution is None or execution.status not in ACTIVE:
            return
        advance_locked(execution)


class _Steps:
    """The step runs of the stage runs being advanced (at most two groups' worth), read in one
    query the first time one is asked for."""

    def __init__(
        self, stage_runs: list[StageRun], by_stage: dict[int, list[StepRun]] | None = None
    ):
        self.stage_runs = stage_runs
        self.by_stage = by_stage

    def of(self, run: StageRun) -> list[StepRun]:
        if self.by_stage is None:
            self.by_stage = {other.pk: [] for other in self.stage_runs}
            for step in StepRun.objects.filter(stage_run_id__in=list(self.by_stage)).order_by(
                "position"
            ):
                self.by_stage[step.stage_run_id].append(step)
        return self.by_stage[run.pk]


def _unfinished_groups(execution: Execution, after: int, near: int | None = None) -> _Steps:
    """The stage runs of the first two groups after group ``after`` that have a stage which has
    not succeeded (nor been skipped), without those that have: one query of a few rows, however
    long the pipeline. ``near``: the group the caller knows to be in progress (every group
    before it has succeeded): then a plain range is read first, with the stages' step runs, in
    one query (a stage has at least one step)."""
    if near is not None:
        by_stage: dict[int, list[StepRun]] = {}
        stage_runs: list[StageRun] = []
        for step in (
            StepRun.objects.filter(
                stage_run__execution_id=execution.pk,
                stage_run__group_index__gte=near,
                stage_run__group_index__lte=near + 1,
            )
            .exclude(stage_run__status__in=list(SUCCEEDED))
            .select_related("stage_run")
            .order_by("stage_run__position", "position")
        ):
            if step.stage_run_id not in by_stage:
                by_stage[step.stage_run_id] = []
                stage_runs.append(step.stage_run)
            else:
                step.stage_run = stage_runs[-1]  # one object per stage run
            by_stage[step.stage_run_id].append(step)
        if stage_runs:
            return _Steps(stage_runs, by_stage)
        after = max(after, near + 1)
    unfinished = execution.stage_runs.exclude(status__in=list(SUCCEEDED)).filter(
        group_index__gt=after
    )
    first = unfinished.order_by("group_index").values("group_index")[:1]
    return _Steps(
        list(unfinished.filter(group_index__lte=Subquery(first) + 1).order_by("position"))
    )


def advance_locked(
    execution: Execution, near: int | None = None, here: RunHere | None = None
) -> None:
    """``advance`` for an execution its caller has locked already (and just created or moved,
    inside the same transaction). ``near``: see ``_unfinished_groups``. ``here``: the worker
    that calls it may claim one step made due for itself (see ``RunHere``)."""
    # Stages that succeeded (or were skipped) change nothing here: a group whose members all
    # did is passed over, so only the others are read, two groups at a time (their outputs,
    # for conditions, are read only when a condition asks).
    spec = execution.version.spec
    after = -1
    while (steps := _unfinished_groups(execution, after, near)).stage_runs:
        near = None
        stage_runs = steps.stage_runs
        groups: dict[int, list[StageRun]] = {}
        for run in stage_runs:
            groups.setdefault(run.group_index, []).append(run)

        for group_index in sorted(groups):
            members = groups[group_index]
            for run in members:
                if run.status in (Status.NOT_STARTED, Status.QUEUED):
                    _start_stage(execution, run, spec, steps, here)
                elif run.status in _UNDERWAY:
                    _advance_stage(execution, run, spec, steps, here)
            if not all(run.status in TERMINAL for run in members):
                waiting = any(r.status == Status.WAITING for r in members)
                busy = any(r.status in (Status.RUNNING, Status.QUEUED) for r in members)
                target = Status.WAITING if waiting and not busy else Status.RUNNING
                if not busy and any(r.status == Status.INTERVENTION_WAITING for r in members):
                    target = Status.INTERVENTION_WAITING  # a person must answer (SPEC §9)
                if execution.status != target:
                    transition(execution, to=target)
                return
            bad = [run.status for run in members if run.status not in SUCCEEDED]
            if bad:
                status = worst(bad)  # several members ended badly: the worst counts
                failed = [run for run in members if run.status == status]
                reason = "; ".join(
                    f"stage '{run.identifier}' {run.get_status_display().lower()}"
                    + (f": {run.error}" if run.error else "")
                    for run in failed
                )
                transition(execution, to=status, error=reason)
                return
        after = max(groups)  # every group read has succeeded now: read the next ones
    transition(execution, to=Status.SUCCESS)


# A stage run that has started and not ended (INTERVENTION_WAITING: a step of it waits for a
# person to answer its failure, SPEC §9).
_UNDERWAY = (Status.RUNNING, Status.WAITING, Status.INTERVENTION_WAITING)


def _underway_but(status: str) -> list[str]:
    return [other for other in _UNDERWAY if other != status]


def _start_stage(
    execution: Execution, run: StageRun, spec, steps: _Steps, here: RunHere | None
) -> None:
    stage = spec.stage(run.identifier)
    if stage is None:  # cannot happen for a validated version; fail loudly rather than hang
        transition(run, to=Status.FAILED, error="stage not found in the pipeline version")
        return
    if stage.when:
        context = build_context(execution)
        try:
            go = evaluate_condition(stage.when, lambda expr: context.resolve(expr, stage))
        except ValueError as exc:
            transition(run, to=Status.FAILED, error=f"condition could not be evaluated: {exc}")
            return
        if not go:
            if transition(run, to=Status.SKIPPED, message=f"condition is false: {stage.when}"):
                for step in steps.of(run):
                    if step.status == Status.NOT_STARTED:
                        transition(step, to=Status.SKIPPED, sources=[Status.NOT_STARTED])
            return
    if transition(run, to=Status.RUNNING, sources=[Status.NOT_STARTED, Status.QUEUED]):
        _advance_stage(execution, run, spec, steps, here)


def _advance_stage(
    execution: Execution, run: StageRun, spec, steps: _Steps, here: RunHere | None
) -> None:
    stage_steps = steps.of(run)
    for step in stage_steps:
        if step.status in SUCCEEDED:
            continue
        if step.status in TERMINAL:
            transition(
                run,
                to=step.status,
                sources=_UNDERWAY,
                error=f"step '{step.identifier}' {step.get_status_display().lower()}"
                + (f": {step.error}" if step.error else ""),
            )
            return
        if step.status in (Status.WAITING, Status.INTERVENTION_WAITING):
            if run.status != step.status:
                transition(run, to=step.status, sources=_underway_but(step.status))
            return
        if step.status in (Status.QUEUED, Status.RUNNING):
            if run.status != Status.RUNNING:
                transition(run, to=Status.RUNNING, sources=_underway_but(Status.RUNNING))
            return
        # NOT_STARTED: the next step is due.
        if run.status != Status.RUNNING:
            transition(run, to=Status.RUNNING, sources=_underway_but(Status.RUNNING))
        _queue_step(execution, run, step, spec, here)
        return
    outputs: dict[str, str] = {}
    for step in stage_steps:
        outputs.update(step.outputs or {})
    transition(run, to=Status.SUCCESS, sources=_UNDERWAY, outputs=outputs)


def _queue_step(
    execution: Execution, run: StageRun, step: StepRun, spec, here: RunHere | None
) -> None:
    stage = spec.stage(run.identifier)
    step_spec = next(s for s in stage.steps if s.identifier == step.identifier)
    now = timezone.now()
    if step_spec.type == "Approval":
        if _ask_for_approval(execution, stage, step, step_spec, sources=[Status.NOT_STARTED]):
            transition(run, to=Status.WAITING, sources=[Status.RUNNING])
        return
    if here is not None and here.takes(run, step_spec.type):
        lease = now + timedelta(seconds=settings.STAGELINE_STEP_LEASE_SECONDS)
        if claim_here(step, worker=here.worker, lease_expires_at=lease, now=now):
            step.stage_run = run
            step.execution = execution
            here.step = step
        return
    if transition(step, to=Status.QUEUED, sources=[Status.NOT_STARTED], queued_at=now):
        dispatch_step(step, run.queue)


# --- running a step on a worker -------------------------------------------------------------


def claim(step_id: int) -> StepRun | None:
    """QUEUED → RUNNING for this worker, in one statement (``transitions.claim_step``). None
    when the step is not QUEUED any more (a redelivered task), so a step never runs twice."""
    now = timezone.now()
    lease = now + timedelta(seconds=settings.STAGELINE_STEP_LEASE_SECONDS)
    return claim_step(step_id, worker=worker_name(), lease_expires_at=lease, now=now)


def run_step(step_id: int, *, budget: float = 0.0) -> None:
    """Claim a queued step, run it here, store its result and move the execution on.
    Called by the Celery task; idempotent.

    ``budget`` (seconds): while it lasts, a ShellScript step that the result makes due on the
    same queue is claimed in the result's transaction and run here next, without a trip
    through the broker (``RunHere``); 0 sends every next step through the broker."""
    step = claim(step_id)
    if step is None:
        return
    stage_run = StageRun.objects.select_related("execution__version").get(pk=step.stage_run_id)
    step.stage_run = stage_run
    step.execution = stage_run.execution
    deadline = time.monotonic() + budget
    next_step: StepRun | None = step
    while next_step is not None:
        here = RunHere(next_step) if time.monotonic() < deadline else None
        next_step = _run_claimed(next_step, here)


def _simple_handover(
    execution: Execution, step: StepRun, result: StepResult
) -> tuple[str, str] | None:
    """When a successful step ends a serial stage whose only step it is, and the next group is
    one stage without a condition whose first step is a ShellScript on the same queue: the
    next stage's and step's identifiers (``transitions.finish_and_claim_next`` then does the
    boundary in one statement). None otherwise, or off PostgreSQL (the general advance)."""
    if (
        connection.vendor != "postgresql"
        or result.status != Status.SUCCESS
        or result.error
        or execution.status != Status.RUNNING
    ):
        return None
    spec = execution.version.spec
    stage = spec.stage(step.stage_run.identifier)
    groups = spec.groups
    index = stage.group_index if stage is not None else -1
    if (
        stage is None
        or len(stage.steps) != 1
        or not 0 <= index < len(groups) - 1
        or len(groups[index].stages) != 1
        or len(groups[index + 1].stages) != 1
    ):
        return None
    following = groups[index + 1].stages[0]
    if (
        following.when
        or not following.steps
        or following.steps[0].type not in RunHere.TYPES
        or (following.runs_on or "default") != (stage.runs_on or "default")
    ):
        return None
    return following.identifier, following.steps[0].identifier


def _claimed_by_lost_answer(
    execution: Execution, simple: tuple[str, str], worker: str
) -> StepRun | None:
    """After a database error on the simple path's statement, before sending it again: the
    step that statement claimed for ``worker`` if it committed and only its answer was lost
    (RUNNING, claimed, never queued: nobody else claims a step that way), so that it runs here
    instead of waiting for its lease to lapse. None if the statement did not commit."""
    next_stage, next_step = simple
    step = (
        StepRun.objects.select_related("stage_run")
        .filter(
            execution_id=execution.pk,
            stage_run__identifier=next_stage,
            identifier=next_step,
            status=Status.RUNNING,
            worker=worker,
            queued_at=F("started_at"),
        )
        .first()
    )
    if step is not None:
        step.execution = execution
    return step


class RunHere:
    """The fast path: the step that a finishing step makes due, claimed for the same worker in
    the same transaction as the result (NOT_STARTED → QUEUED → RUNNING, with its lease) and run
    by the same task next. Only a ShellScript step on the queue the worker is serving (the
    finished step's), and only one per result: parallel members, other queues, approvals and
    waits go through the broker as always. Durability is unchanged: the result and the claim
    commit together before the next step starts; a worker lost meanwhile leaves a RUNNING step
    whose lease lapses, which the reaper fails as for any step."""

    TYPES = frozenset({"ShellScript"})

    def __init__(self, finished: StepRun):
        self.queue = finished.stage_run.queue or "default"
        self.worker = finished.worker or worker_name()
        self.step: StepRun | None = None  # the step claimed here, once the advance has

    def takes(self, run: StageRun, step_type: str) -> bool:
        return (
            self.step is None and step_type in self.TYPES and (run.queue or "default") == self.queue
        )


def _run_claimed(step: StepRun, here: RunHere | None) -> StepRun | None:
    """Run a step claimed by this worker (``step.stage_run`` and ``step.execution`` set, the
    execution with its version), store its result and advance the execution. Returns the next
    step, claimed here by the advance when ``here`` allowed it."""
    stage_run, execution = step.stage_run, step.execution
    stage = execution.version.spec.stage(stage_run.identifier)
    assert stage is not None  # a validated version has the stage its runs were made from
    step_spec = next(s for s in stage.steps if s.identifier == step.identifier)
    try:
        result = run_with_runner(step, step_spec, stage, execution)
    except Exception as exc:  # a bug in a runner must not leave the step RUNNING
        log.exception("step %s crashed its runner", step.pk)
        result = StepResult(
            status=Status.FAILED, error=f"internal error: {type(exc).__name__}: {exc}"
        )

    sent: list[bool] = []  # the simple path's statement was sent (its answer may be lost)

    def finish() -> StepRun | None:
        # The result and what it makes due (the next stage queued, the execution finished) commit
        # together, under the execution's lock (taken first, as every other writer does).
        if here is not None:
            here.step = None  # a retried attempt claims afresh
        simple = here is not None and _simple_handover(execution, step, result)
        step_done = False
        if simple:
            # One statement, a transaction of its own: the execution's lock, the result, the
            # stage done, the next stage started and its step claimed here, the events.
            assert here is not None
            if sent and (adopted := _claimed_by_lost_answer(execution, simple, here.worker)):
                here.step = adopted
                return adopted
            sent.append(True)
            now = timezone.now()
            handover = finish_and_claim_next(
                step,
                stage_run,
                exit_code=result.exit_code,
                outputs=result.outputs,
                pid=result.pid,
                next_stage=simple[0],
                next_step=simple[1],
                worker=here.worker,
                lease_expires_at=now + timedelta(seconds=settings.STAGELINE_STEP_LEASE_SECONDS),
                now=now,
            )
            if handover.next_step is not None:
                handover.next_step.execution = execution
                here.step = handover.next_step
                return here.step
            step_done = handover.step_done
        # The general path (and what the simple one could not do: someone moved a row first).
        with transaction.atomic(), events_batched():
            present = _lock_held(execution)
            if not step_done and not _store_result(execution, stage_run, step, result):
                # Ended by someone else (an abort): the runner has stored the last lines (the
                # kill notice); releasing the lease tells the page that the log is complete
                # (``StepRun.log_closed``). Not when a newer attempt has the step now (this one's
                # worker was thought lost): nothing of this attempt lands on it.
                StepRun.objects.filter(pk=step.pk, attempts=step.attempts).exclude(
                    status=Status.RUNNING
                ).update(lease_expires_at=None, exit_code=result.exit_code)
            if present and execution.status in ACTIVE:
                # The step's group is the one in progress: every group before it has succeeded.
                advance_locked(execution, near=stage_run.group_index, here=here)
        return here.step if here is not None else None

    # The result is written even across a short database outage.
    return with_db_retry(finish)


def _store_result(
    execution: Execution, stage_run: StageRun, step: StepRun, result: StepResult
) -> bool:
    """Write a running step's result (under the execution's lock); False when the step was not
    RUNNING any more. A failure goes to the pipeline's failure strategies when it declares
    any (``executions.strategies``); otherwise, or when no rule takes it, the step simply ends
    with the result's status."""
    fields: dict[str, Any] = {
        "exit_code": result.exit_code,
        "outputs": result.outputs,
        "error": result.error[:2000],
        "lease_expires_at": None,
        "pid": result.pid,
    }
    spec = execution.version.spec
    if (
        spec.has_failure_strategies
        and not StepRun.objects.filter(
            pk=step.pk, status=Status.RUNNING, attempts=step.attempts
        ).exists()
    ):
        # A retry may have given the step a new attempt since this one started (its worker
        # was thought lost): this attempt's result must not land on the new one.
        return False
    if result.status in ERROR_CLASS_OF and spec.has_failure_strategies:
        error_class = ERROR_CLASS_OF[result.status]
        decision = decision_for(spec, stage_run.identifier, step, error_class, result.exit_code)
        if decision is not None:
            return apply_failure(
                decision,
                execution,
                stage_run,
                step,
                error_class=error_class,
                dispatch=dispatch_step,
                fields=fields,
            )
    return transition(step, to=result.status, sources=[Status.RUNNING], **fields)


# --- approvals --------------------------------------------------------------------------------

# What a rejected or expired approval ends as when no failure strategy takes it (before
# strategies existed, the only outcome), by error class (SPEC §9).
APPROVAL_FAILED: dict[str, str] = {
    "approval_rejected": Status.REJECTED,
    "approval_expired": Status.EXPIRED,
}


def _ask_for_approval(
    execution: Execution, stage, step: StepRun, step_spec, *, sources: list[str]
) -> bool:
    """Ask for the approval of ``step``: it waits (WAITING) for an answer until its deadline.
    Each ask is an attempt (the first from NOT_STARTED; a failure strategy's retry from
    QUEUED), with a deadline of its own and no answer yet."""
    context = build_context(execution)
    message = context.render(step_spec.message, stage)
    now = timezone.now()
    return transition(
        step,
        to=Status.WAITING,
        sources=sources,
        action="approval.asked" if step.attempts else "",
        started_at=now,
        deadline=now + timedelta(seconds=step_spec.timeout),
        attempts=step.attempts + 1,
        comment="",
        error="",
        decided_by=None,
        decided_at=None,
        message=mask(message, context.secret_values()),
    )


def ask_again(step: StepRun) -> bool:
    """An approval step QUEUED for its next attempt (a retry after a rejection or an expiry,
    at once or when its interval is due) is asked again; the caller holds the execution's lock
    and advances the execution afterwards (its stage and run wait again). False when the step
    was not QUEUED any more."""
    execution = Execution.objects.select_related("version").get(pk=step.execution_id)
    stage = execution.version.spec.stage(step.stage_run.identifier)
    step_spec = (
        next((s for s in stage.steps if s.identifier == step.identifier), None) if stage else None
    )
    if step_spec is None:  # cannot happen for a validated version
        return transition(
            step, to=Status.FAILED, sources=[Status.QUEUED], error="step not found in the version"
        )
    return _ask_for_approval(execution, stage, step, step_spec, sources=[Status.QUEUED])


def approval_failed(
    execution: Execution,
    step: StepRun,
    error_class: str,
    fields: dict[str, Any],
    *,
    actor=None,
    action: str,
    message: str = "",
) -> bool:
    """An approval step (WAITING) rejected (``approval_rejected``, ``actor`` answered) or
    expired (``approval_expired``): the pipeline's failure strategy for that class applies
    (``executions.strategies``: retry asks again, ignore, mark as success, abort, manual
    intervention) when it declares one that takes it; otherwise the step ends REJECTED or
    EXPIRED, as before strategies. The caller holds the execution's lock (``execution`` with
    its version) and advances it afterwards. False when the step was not WAITING any more."""
    spec = execution.version.spec
    decision = None
    if spec.has_failure_strategies and execution.status in ACTIVE:
        decision = decision_for(spec, step.stage_run.identifier, step, error_class, None)
    if decision is None:
        return transition(
            step,
            to=APPROVAL_FAILED[error_class],
            sources=[Status.WAITING],
            actor=actor,
            action=action,
            message=message,
            **fields,
        )
    # Who rejected (or that nobody answered) is the step's history too: then the rule's move.
    record(execution, action, actor=actor, message=message, step=step)
    return apply_failure(
        decision,
        execution,
        step.stage_run,
        step,
        error_class=error_class,
        dispatch=dispatch_step,
        fields=fields,
        sources=[Status.WAITING],
    )


def _approval_expired(step_id: int, execution_id: int, now: datetime) -> bool:
    """Expire an approval nobody answered in time (under the execution's lock: an answer or a
    new ask may have come meanwhile), through its failure strategy if one takes it."""
    execution = _lock_execution(execution_id)
    step = (
        StepRun.objects.select_related("stage_run")
        .filter(pk=step_id, status=Status.WAITING, deadline__lt=now)
        .first()
    )
    if execution is None or step is None:
        return False
    return approval_failed(
        execution,
        step,
        "approval_expired",
        {"error": "nobody answered the approval in time"},
        action="expired",
        message="nobody answered the approval in time",
    )


# --- the reaper -------------------------------------------------------------------------------


def reap() -> dict[str, int]:
    """Fail steps whose worker was lost, expire unanswered approvals, re-send lost dispatches,
    and nudge executions that have nothing running. Runs periodically (Celery beat)."""
    now = timezone.now()
    counts = {
        "worker_lost": 0,
        "approvals_expired": 0,
        "redispatched": 0,
        "nudged": 0,
        "waits_started": 0,
    }
    touched: set[int] = set()

    for step in StepRun.objects.filter(
        status=Status.RUNNING, lease_expires_at__lt=now
    ).select_related("stage_run"):
        with transaction.atomic(), events_batched():
            if _worker_lost(step, now):
                counts["worker_lost"] += 1
                touched.add(step.execution_id)

    for step_id, execution_id in StepRun.objects.filter(
        status=Status.WAITING, deadline__lt=now
    ).values_list("pk", "execution_id"):
        with transaction.atomic(), events_batched():
            if _approval_expired(step_id, execution_id, now):
                counts["approvals_expired"] += 1
                touched.add(execution_id)

    # Failure strategies' durable waits (SPEC §9): a retry's interval, an intervention's timeout.
    for wait in PendingWait.objects.due(now):
        with transaction.atomic(), events_batched():
            execution = _lock_execution(wait.execution_id)
            if execution is not None and start_due_wait(wait, execution, dispatch_step):
                counts["waits_started"] += 1
                touched.add(wait.execution_id)

    stale = now - timedelta(seconds=settings.STAGELINE_REDISPATCH_AFTER_SECONDS)
    for step in StepRun.objects.filter(status=Status.QUEUED, queued_at__lt=stale).select_related(
        "stage_run"
    ):
        with transaction.atomic():
            if StepRun.objects.filter(
                pk=step.pk, status=Status.QUEUED, queued_at=step.queued_at
            ).update(queued_at=now):
                dispatch_step(step, step.stage_run.queue)
                counts["redispatched"] += 1
                if step.type == "Approval":  # asked again: its stage and run wait again
                    touched.add(step.execution_id)

    active_steps = StepRun.objects.filter(execution=OuterRef("pk"), status__in=list(ACTIVE))
    idle = Execution.objects.filter(status__in=[Status.RUNNING, Status.QUEUED]).filter(
        ~Exists(active_steps)
    )
    for execution_id in idle.values_list("pk", flat=True):
        touched.add(execution_id)
        counts["nudged"] += 1

    for execution_id in touched:
        advance(execution_id)
    return counts


def _worker_lost(step: StepRun, now: datetime) -> bool:
    """Fail a RUNNING step whose lease lapsed (its worker is gone), or apply the pipeline's
    ``worker_lost`` failure strategy (a retry runs the next attempt on whichever worker takes
    it). False when the step had moved on meanwhile."""
    since = (step.lease_expires_at or now) - timedelta(
        seconds=settings.STAGELINE_STEP_LEASE_SECONDS
    )
    fields: dict[str, Any] = {
        "error": f"worker lost: no heartbeat from {step.worker or 'its worker'} since "
        f"{since:%H:%M:%S} UTC",
        "lease_expires_at": None,
    }
    execution = _lock_execution(step.execution_id)
    if execution is not None and execution.status in ACTIVE:
        spec = execution.version.spec
        if spec.has_failure_strategies:
            decision = decision_for(spec, step.stage_run.identifier, step, "worker_lost", None)
            if decision is not None:
                return apply_failure(
                    decision,
                    execution,
                    step.stage_run,
                    step,
                    error_class="worker_lost",
                    dispatch=dispatch_step,
                    fields=fields,
                )
    return transition(step, to=Status.FAILED, sources=[Status.RUNNING], **fields)
