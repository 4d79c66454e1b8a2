"""What the management commands share: acting as a user (refusals exit with status 2, see
``stageline.errors.refusals_exit_2``). Following an execution is ``executions.cli.follow``."""

from __future__ import annotations

from django.contrib.auth import get_user_model

from stageline.errors import Invalid, NotFound


def user_named(username: str | None):
    """The active user named ``username`` (``--as``), or a refusal."""
    if not username:
        raise Invalid("say who is acting with --as USER")
    user = get_user_model().objects.filter(username=username).first()
    if user is None or not user.is_active:
        raise NotFound(f"no active user named '{username}'")
    return user
