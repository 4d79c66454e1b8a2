"""The one loader of an execution for pages and commands (see ``pipelines.loaders``)."""

from __future__ import annotations

from executions.models import Execution
from pipelines import permissions
from stageline.errors import NotFound


def load_execution(user, pk: int, action: str = "view") -> Execution:
    """Execution ``pk`` if ``user`` may do ``action`` to it: ``NotFound`` when they may not see
    it (whether or not it exists), ``Forbidden`` naming the permission when they may not act.

    Read by its key, then checked with ``permissions.check`` (one query, remembered for the
    request's other checks), rather than filtered through ``Execution.objects.visible_to``,
    whose list of visible pipelines costs a query of its own on every page."""
    who = f"{user}" if user is not None and user.is_authenticated else "you"
    missing = f"no execution {pk}, or {who} may not see it"
    found = (
        # Not retry_of / rerun_of: mostly empty, and each join adds planning time (~0.3 ms).
        Execution.objects.select_related(
            "pipeline__project__organization", "version", "triggered_by"
        )
        .filter(pk=pk)
        .first()
    )
    if found is None:
        raise NotFound(missing)
    permissions.check(user, action, found, missing=missing)
    return found
