"""What an operator (or a failure strategy acting for the author) does to a running execution.

``abort_locked`` is the one abort path (SPEC §3, §9): an operator's Abort
(``services.abort_execution``) and a failure strategy's ``abort`` (``executions.strategies``)
both end here, so both kill the running steps the same way (their workers watch the status),
cancel waiting approvals, interventions and the durable waits of failure strategies, and end
the execution ABORTED.
"""

from __future__ import annotations

from django.contrib.auth.models import User

from executions.models import Execution, PendingWait, StageRun, StepRun
from executions.states import ACTIVE, Status
from executions.transitions import transition


def abort_locked(execution: Execution, *, actor: User | None, reason: str, action: str) -> None:
    """Abort ``execution``, which the caller has locked and found ACTIVE."""
    PendingWait.objects.cancel(execution=execution)
    for step in StepRun.objects.filter(execution=execution, status__in=list(ACTIVE)):
        transition(step, to=Status.ABORTED, sources=ACTIVE, actor=actor, error=reason)
    for run in StageRun.objects.filter(execution=execution, status__in=list(ACTIVE)):
        transition(run, to=Status.ABORTED, sources=ACTIVE, actor=actor, error=reason)
    transition(
        execution, to=Status.ABORTED, sources=ACTIVE, actor=actor, action=action, error=reason
    )
