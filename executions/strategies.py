"""Failure strategies on a running execution (SPEC §9): the action a rule chose, applied.

Which rule applies is ``pipelines.spec.strategies.decide`` (the one home of resolution); this
module writes what it decided, under the execution's lock held by the caller (the engine
storing a step's result, the reaper failing a step whose worker was lost, the scheduler
starting a due wait):

- ``retry``: the step is queued again for its next attempt, at once or when its interval
  has passed (a ``PendingWait`` row the scheduler starts: durable across restarts);
- ``ignore``: the step ends IGNORED, its stage and the run go on;
- ``mark_as_success``: the step ends SUCCESS with no outputs;
- ``abort``: the execution is aborted through the one abort path (``operate.abort_locked``);
- ``manual_intervention``: the step waits in INTERVENTION_WAITING, with a ``PendingWait``
  for its timeout, whose ``on_timeout`` action the scheduler applies;
- ``mark_as_failure`` (and no rule): the engine's own path, as before strategies existed.

A pipeline that declares no rule never comes here (``PipelineSpec.has_failure_strategies``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

from django.contrib.auth.models import User
from django.utils import timezone

from executions.models import Execution, PendingWait, StageRun, StepAttempt, StepRun
from executions.operate import abort_locked
from executions.states import Status
from executions.transitions import record, transition
from pipelines.spec.model import Action, PipelineSpec
from pipelines.spec.strategies import Decision, decide

type Dispatch = Callable[[StepRun, str], None]

# What a failed result's status says of its class (a worker lost is the reaper's to say).
ERROR_CLASS_OF: dict[str, str] = {Status.FAILED: "script", Status.EXPIRED: "timeout"}
# What one attempt keeps when the next begins (``retry_step``): archived on a ``StepAttempt``,
# then started afresh on the step (``ATTEMPT_RESET``). ``attempts`` (the claims) goes on.
ATTEMPT_FIELDS = (
    "exit_code",
    "error_class",
    "error",
    "worker",
    "started_at",
    "finished_at",
    "log_bytes",
    "log_truncated",
)
# The status an archived attempt ended with, by its failure's class (FAILED for the others).
ARCHIVED_STATUS: dict[str, str] = {
    "timeout": Status.EXPIRED,
    "approval_rejected": Status.REJECTED,
    "approval_expired": Status.EXPIRED,
}
ATTEMPT_RESET: dict[str, Any] = {
    "exit_code": None,
    "error_class": "",
    "error": "",
    "worker": "",
    "started_at": None,
    "finished_at": None,
    "log_bytes": 0,
    "log_truncated": False,
    "outputs": {},
    "pid": None,
    "lease_expires_at": None,
}
# The error of a step a strategy (or an intervention's answer) marked as success: how the retry
# planner and the pages tell it from a step that passed.
MARKED_AS_SUCCESS = "marked as success by strategy"


def decision_for(
    spec: PipelineSpec,
    stage_identifier: str,
    step: StepRun,
    error_class: str,
    exit_code: int | None,
) -> Decision | None:
    """What the rules say of this failure of ``step``; None when the engine's own path applies
    (no rule matched). A rule that says ``mark_as_failure`` (or a retry whose budget is spent
    with no other ``on_exhausted``) is applied here too, so that its event names the rule."""
    stage = spec.stage(stage_identifier)
    step_spec = (
        next((s for s in stage.steps if s.identifier == step.identifier), None) if stage else None
    )
    if stage is None or step_spec is None:
        return None
    decision = decide(step_spec, stage, spec, error_class, exit_code, max(step.attempts, 1))
    return None if decision.rule is None else decision


def apply_failure(
    decision: Decision,
    execution: Execution,
    stage_run: StageRun,
    step: StepRun,
    *,
    error_class: str,
    dispatch: Dispatch,
    fields: dict[str, Any],
    sources: Sequence[str] = (Status.RUNNING,),
) -> bool:
    """Apply ``decision`` to ``step``, failed with ``error_class``; ``fields``: the result's
    columns (exit code, error, pid …) written with the move. ``sources``: the statuses the step
    fails from (RUNNING; WAITING for a rejected or expired approval, whose retry ``dispatch``
    asks again). False when the step was not in one of them any more (someone else ended it:
    an abort)."""
    action = decision.action
    why = f"{error_class} failure, attempt {step.attempts}: {decision.reason}" + (
        ", retries exhausted" if decision.exhausted else ""
    )
    fields = {**fields, "error_class": error_class}
    if action.type == "retry":
        count = action.count
        return retry_step(
            execution,
            stage_run,
            step,
            delay=decision.delay,
            message=f"retry {step.attempts} of {count} ({why})",
            dispatch=dispatch,
            fields=fields,
            sources=list(sources),
        )
    if action.type == "manual_intervention":
        now = timezone.now()
        due = now + timedelta(seconds=action.timeout)
        if not transition(
            step,
            to=Status.INTERVENTION_WAITING,
            sources=list(sources),
            action="intervention.requested",
            message=f"needs intervention ({why})",
            deadline=due,
            **{"finished_at": now, **fields},  # the attempt has ended (its archive's end)
        ):
            return False
        on_timeout = action.on_timeout.type if action.on_timeout else "mark_as_failure"
        PendingWait.objects.create(
            execution=execution,
            step_run=step,
            kind=PendingWait.Kind.INTERVENTION,
            due_at=due,
            created_at=now,
            on_timeout=on_timeout,
        )
        return True
    if action.type == "mark_as_failure":  # the status its class ends with (a timeout: EXPIRED)
        return transition(
            step,
            to=ARCHIVED_STATUS.get(error_class, Status.FAILED),
            sources=list(sources),
            action="strategy.marked_as_failure",
            message=f"marked as failure ({why})",
            **fields,
        )
    return end_step(action, execution, step, why=why, sources=list(sources), fields=fields)


def end_step(
    action: Action,
    execution: Execution,
    step: StepRun,
    *,
    why: str,
    sources: list[str],
    fields: dict[str, Any],
    actor: User | None = None,
) -> bool:
    """The actions that end a step: ignore, mark as success, mark as failure, abort
    (``actor``: the person who answered an intervention; None: the rule)."""
    if action.type == "ignore":
        return transition(
            step,
            to=Status.IGNORED,
            sources=sources,
            actor=actor,
            action="strategy.ignored",
            message=f"failure ignored ({why})",
            **fields,
        )
    if action.type == "mark_as_success":
        return transition(
            step,
            to=Status.SUCCESS,
            sources=sources,
            actor=actor,
            action="strategy.marked_as_success",
            message=f"{MARKED_AS_SUCCESS} ({why})",
            **{**fields, "outputs": {}, "error": MARKED_AS_SUCCESS},
        )
    if action.type == "abort":
        if not transition(
            step,
            to=Status.ABORTED,
            sources=sources,
            actor=actor,
            action="strategy.aborted",
            message=f"execution aborted by strategy ({why})",
            **fields,
        ):
            return False
        abort_locked(
            execution,
            actor=actor,
            reason=f"aborted by {actor or 'failure strategy'}: step '{step.identifier}' failed ({why})",
            action="strategy.aborted",
        )
        return True
    return transition(
        step,
        to=Status.FAILED,
        sources=sources,
        actor=actor,
        action="strategy.marked_as_failure",
        message=f"marked as failure ({why})",
        **fields,
    )


def retry_step(
    execution: Execution,
    stage_run: StageRun,
    step: StepRun,
    *,
    delay: int,
    message: str,
    dispatch: Dispatch,
    fields: dict[str, Any],
    sources: list[str],
    actor: User | None = None,
) -> bool:
    """The step's next attempt: queued now, or when its interval ends (a durable wait). A
    waiting attempt's ``queued_at`` is its due time, so the reaper's re-sending of lost
    dispatches leaves it alone until then.

    The attempt that failed (``fields``: its result, written over what the row holds) is
    archived as a ``StepAttempt`` with the move, and the step's per-attempt columns start
    afresh; its log stays under its number (``LogChunk.attempt``)."""
    now = timezone.now()
    due = now + timedelta(seconds=delay)
    ended = {
        **StepRun.objects.filter(pk=step.pk).values("attempts", *ATTEMPT_FIELDS).get(),
        **{key: value for key, value in fields.items() if key in ATTEMPT_FIELDS},
    }
    kept = {key: value for key, value in fields.items() if key not in ATTEMPT_RESET}
    if not transition(
        step,
        to=Status.QUEUED,
        sources=sources,
        actor=actor,
        action="strategy.retry",
        message=message + (f", in {delay}s" if delay else ""),
        queued_at=due,
        **{**ATTEMPT_RESET, **kept},
    ):
        return False
    number = max(ended.pop("attempts"), 1)
    ended["finished_at"] = ended["finished_at"] or now
    StepAttempt.objects.create(
        step_run=step,
        number=number,
        status=ARCHIVED_STATUS.get(ended["error_class"], Status.FAILED),
        **ended,
    )
    if delay:
        PendingWait.objects.create(
            execution=execution, step_run=step, kind=PendingWait.Kind.RETRY, due_at=due
        )
    else:
        dispatch(step, stage_run.queue)
    return True


def start_due_wait(wait: PendingWait, execution: Execution, dispatch: Dispatch) -> bool:
    """Start one due wait of ``execution`` (locked by the caller), claimed here: a retry's
    attempt is sent to a worker; an intervention nobody answered gets its ``on_timeout``.
    False when another scheduler started it first, or the step moved on meanwhile."""
    now = timezone.now()
    if not PendingWait.objects.claim(wait, now):
        return False
    step = StepRun.objects.select_related("stage_run").get(pk=wait.step_run_id)
    if wait.kind == PendingWait.Kind.RETRY:
        if step.status != Status.QUEUED:
            return False
        StepRun.objects.filter(pk=step.pk, status=Status.QUEUED).update(queued_at=now)
        dispatch(step, step.stage_run.queue)
        waited = max(0, round((now - wait.created_at).total_seconds()))
        record(
            execution,
            "strategy.retry_started",
            step=step,
            message=f"attempt {step.attempts + 1} "
            + ("asked again" if step.type == "Approval" else "sent to a worker")
            + f": its retry interval ended (waited {waited}s)",
        )
        return True
    if step.status != Status.INTERVENTION_WAITING:
        return False
    record(
        execution,
        "intervention.timed_out",
        step=step,
        message=f"nobody answered in time: on_timeout {wait.on_timeout or 'mark_as_failure'} "
        "applied",
    )
    return end_step(
        Action(wait.on_timeout or "mark_as_failure"),
        execution,
        step,
        why=f"nobody intervened in time: on_timeout {wait.on_timeout}",
        sources=[Status.INTERVENTION_WAITING],
        fields={"deadline": None},
    )
