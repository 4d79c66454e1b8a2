"""Bulk retry (issue 17 point 3): retry many failed executions of a project at once, each from
its failed stage (failed stages only for a parallel group), after one preview.

- ``bulk_selection`` picks the executions: given ids, or "all matching this filter" (the
  executions list's filters), only those a retry may apply to (FAILED, ABORTED, EXPIRED,
  REJECTED), newest first, at most ``BULK_LIMIT``; it says when the filter matched more.
- ``plan_bulk_retry`` is the preview: per execution the plan ``plan_retry`` makes by default
  (what is carried over, what runs again), or why it cannot be retried. Changes nothing.
- ``create_bulk_retry`` submits: one ``create_retry`` per execution, each in its own transaction,
  so one refusal never undoes the others; ``create_retry``'s unique link makes each execution
  retried at most once however many submits race (the loser's item says "already retried" and
  names the retry).

The rules are ``executions.retry``'s: this module only loops and reports.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from django.db.models import QuerySet

from executions import listing
from executions.models import Execution
from executions.retry import AlreadyRetried, AnyUser, RetryPlan, create_retry, plan_retry
from executions.states import RETRYABLE
from pipelines import permissions
from pipelines.models import Project
from stageline.errors import Forbidden, Invalid, Refusal

BULK_LIMIT = 50

PLANNED = "planned"  # preview: would be retried as planned
CANNOT = "cannot"  # preview or submit: refused, ``reason`` says why
CREATED = "created"  # submit: the retry was made (``retry``)
ALREADY = "already_retried"  # submit: someone retried it first (``retry`` is theirs)


@dataclass
class BulkItem:
    execution: Execution
    outcome: str
    reason: str = ""
    plan: RetryPlan | None = None
    retry: Execution | None = None


@dataclass
class BulkSelection:
    executions: list[Execution]
    capped: bool  # the filter matched more than BULK_LIMIT: only the newest were taken
    missing: list[int]  # ids asked for that the user may not see (or that do not exist)


def bulk_selection(
    user: AnyUser,
    project: Project,
    *,
    ids: Sequence[int] | None = None,
    filters: listing.Filters | None = None,
) -> BulkSelection:
    """The executions of ``project`` named by ``ids`` or matching ``filters`` (exactly one)."""
    if (ids is None) == (filters is None):
        raise Invalid(
            "Name the executions to retry (ids) or a filter (all matching it), not both.",
            field_errors={"ids": "ids or filter"},
        )
    visible: QuerySet[Execution] = listing.visible_executions(user, project=project)
    visible = visible.select_related("pipeline__project__organization", "version")
    if ids is not None:
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            raise Invalid("Pick at least one execution.", field_errors={"ids": "empty"})
        if len(wanted) > BULK_LIMIT:
            raise Invalid(
                f"At most {BULK_LIMIT} executions at once, not {len(wanted)}.",
                field_errors={"ids": f"at most {BULK_LIMIT}"},
            )
        found = {e.pk: e for e in visible.filter(pk__in=wanted)}
        return BulkSelection(
            executions=[found[pk] for pk in wanted if pk in found],
            capped=False,
            missing=[pk for pk in wanted if pk not in found],
        )
    assert filters is not None
    matching = listing.apply_filters(visible, filters).filter(status__in=list(RETRYABLE))
    rows = list(matching.order_by("-id")[: BULK_LIMIT + 1])
    return BulkSelection(executions=rows[:BULK_LIMIT], capped=len(rows) > BULK_LIMIT, missing=[])


def _may_retry_some(user: AnyUser, executions: list[Execution]) -> None:
    """Forbidden (403) when ``user`` may retry none of ``executions`` (Execute on none of their
    pipelines); otherwise each one the user may not retry is reported on its own."""
    permissions.prefetch(user, executions)
    if executions and not any(permissions.can(user, "execute", e) for e in executions):
        raise Forbidden(permissions.why_not(user, "execute", executions[0]))


def plan_bulk_retry(user: AnyUser, executions: Iterable[Execution]) -> list[BulkItem]:
    """The preview: each execution's default retry plan, or why it cannot be retried."""
    executions = list(executions)
    _may_retry_some(user, executions)
    items: list[BulkItem] = []
    for execution in executions:
        try:
            plan = plan_retry(execution, user)
        except Refusal as refusal:
            items.append(BulkItem(execution, CANNOT, refusal.message))
            continue
        if not plan.allowed or plan.selected is None:
            reason = plan.reason or f"Execution #{execution.sequence} has no stage to retry from."
            items.append(BulkItem(execution, CANNOT, reason, plan=plan))
        else:
            items.append(BulkItem(execution, PLANNED, plan=plan))
    return items


def create_bulk_retry(
    user: AnyUser, executions: Iterable[Execution], *, reason: str = ""
) -> list[BulkItem]:
    """Retry each execution from its failed stage, each in its own transaction; report each."""
    items: list[BulkItem] = []
    for item in plan_bulk_retry(user, executions):
        plan = item.plan
        if item.outcome != PLANNED or plan is None or plan.selected is None:
            items.append(item)
            continue
        try:
            retry = create_retry(
                execution=item.execution,
                user=user,
                from_stage=plan.selected.key,
                mode=plan.mode or None,
                reason=reason,
            )
        except AlreadyRetried as exc:
            items.append(BulkItem(item.execution, ALREADY, exc.message, plan=plan, retry=exc.retry))
        except Refusal as refusal:
            items.append(BulkItem(item.execution, CANNOT, refusal.message, plan=plan))
        else:
            items.append(BulkItem(item.execution, CREATED, plan=plan, retry=retry))
    return items
