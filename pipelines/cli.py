"""What the management commands share: acting as a user (refusals exit with status 2, see
``stageline.errors.refusals_exit_2``), and following an execution until it ends."""

from __future__ import annotations

import time

from django.contrib.auth import get_user_model

from stageline.errors import Invalid, NotFound


def user_named(username: str | None):
    if not username:
        raise Invalid("say who is acting with --as USER")
    user = get_user_model().objects.filter(username=username).first()
    if user is None or not user.is_active:
        raise NotFound(f"no active user named '{username}'")
    return user


def follow(execution, write, *, poll: float = 0.2, timeout: float | None = None) -> str:
    """Print each stage's status changes until ``execution`` ends; return its final status."""
    from executions.models import Execution
    from executions.states import TERMINAL

    seen: dict[str, str] = {}
    started = time.monotonic()
    while True:
        current = Execution.objects.get(pk=execution.pk)
        for run in current.stage_runs.order_by("position"):
            if seen.get(run.identifier) != run.status:
                seen[run.identifier] = run.status
                extra = f" ({run.error})" if run.error and run.status in TERMINAL else ""
                carried = " [carried over]" if run.carried_from_id else ""
                write(f"  {run.identifier}: {run.status}{carried}{extra}")
        if current.status in TERMINAL:
            return current.status
        if timeout is not None and time.monotonic() - started > timeout:
            return current.status
        time.sleep(poll)
