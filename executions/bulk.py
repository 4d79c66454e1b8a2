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

For the executions lists' checkboxes and dialog (``executions.bulk_views``): ``may_retry_in``
(Execute on a pipeline of the list: the checkboxes and the dialog are offered, else 403),
``selectable`` (the rows that get a checkbox), a ``pipeline`` scope for a pipeline's list, and
``mode`` (a failed parallel group: ``failed_only``, the default, or ``all``).

The rules are ``executions.retry``'s: this module only loops and reports.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from django.db.models import QuerySet

from executions import listing
from executions.models import Execution
from executions.retry import (
    MODES,
    AlreadyRetried,
    AnyUser,
    RetryPlan,
    create_retry,
    plan_retry,
)
from executions.states import RETRYABLE
from pipelines import permissions
from pipelines.models import Pipeline, Project
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


def may_retry_in(user: AnyUser, project: Project, pipeline: Pipeline | None = None) -> bool:
    """Whether ``user`` holds Execute on a pipeline of the list (``pipeline``'s, or any of
    ``project``'s): the list then offers its checkboxes and the bulk retry dialog."""
    if pipeline is not None:
        return permissions.can(user, "execute", pipeline)
    return bool(permissions.pipelines_with(user, "execute").filter(project=project).exists())


def check_may_retry_in(user: AnyUser, project: Project, pipeline: Pipeline | None = None) -> None:
    """Forbidden (403) for a caller who may see the list but holds Execute on none of its
    pipelines, whatever is posted."""
    if pipeline is not None:
        permissions.check(user, "execute", pipeline)
    elif not may_retry_in(user, project):
        raise Forbidden(
            f"You need the Execute permission on a pipeline of project {project.name} to retry "
            "its executions."
        )


def selectable(user: AnyUser, rows: Iterable[Execution]) -> set[int]:
    """The ids of a list's rows that get a checkbox: ended in a status a retry may apply to,
    not retried yet, in a pipeline where ``user`` holds Execute (rows read with
    ``select_related("pipeline", "retry")``). The preview asks ``plan_retry`` again."""
    rows = list(rows)
    permissions.prefetch(user, rows)
    return {
        row.pk
        for row in rows
        if row.status in RETRYABLE and not _retried(row) and permissions.can(user, "execute", row)
    }


def _retried(execution: Execution) -> bool:
    try:
        execution.retry  # noqa: B018 - reading the reverse one-to-one is the test
    except Execution.DoesNotExist:
        return False
    return True


def check_mode(mode: str | None) -> str | None:
    """``mode`` as given (``None`` for the default), or ``Invalid`` naming it."""
    if not mode:
        return None
    if mode not in MODES:
        raise Invalid(
            f"Unknown retry mode '{mode[:40]}': use failed_only or all.",
            field_errors={"mode": "unknown"},
        )
    return mode


def bulk_selection(
    user: AnyUser,
    project: Project,
    *,
    pipeline: Pipeline | None = None,
    ids: Sequence[int] | None = None,
    filters: listing.Filters | None = None,
) -> BulkSelection:
    """The executions of ``project`` (of ``pipeline`` only, when given) named by ``ids`` or
    matching ``filters`` (exactly one)."""
    if (ids is None) == (filters is None):
        raise Invalid(
            "Name the executions to retry (ids) or a filter (all matching it), not both.",
            field_errors={"ids": "ids or filter"},
        )
    visible: QuerySet[Execution] = listing.visible_executions(
        user, project=project, pipeline=pipeline
    )
    visible = visible.select_related(
        "pipeline__project__organization", "pipeline__current_version", "version", "retry"
    )
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


def plan_bulk_retry(
    user: AnyUser, executions: Iterable[Execution], *, mode: str | None = None
) -> list[BulkItem]:
    """The preview: each execution's retry plan from its failed stage (``mode`` for a failed
    parallel group), or why it cannot be retried."""
    mode = check_mode(mode)
    executions = list(executions)
    _may_retry_some(user, executions)
    items: list[BulkItem] = []
    for execution in executions:
        try:
            plan = plan_retry(execution, user, mode=mode)
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
    user: AnyUser, executions: Iterable[Execution], *, mode: str | None = None, reason: str = ""
) -> list[BulkItem]:
    """Retry each execution from its failed stage, each in its own transaction; report each."""
    items: list[BulkItem] = []
    for item in plan_bulk_retry(user, executions, mode=mode):
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
