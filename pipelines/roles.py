"""Roles are granted per project (or on one pipeline) and turned into guardian permissions.

A ``RoleAssignment`` row gives one user or one group one role on a whole project or on one
of its pipelines (at most one row per subject and target). ``assign_role``, ``change_role``
and ``revoke_role`` keep those rows and the object permissions they stand for in step, in
one transaction: a role grants exactly the actions of ``ROLE_ACTIONS``, changing it adds and
removes only the difference, revoking it removes exactly what it granted. Each change is
written to the audit trail. Only these functions write role permissions.
"""

from __future__ import annotations

from django.contrib.auth.models import Group
from django.db import IntegrityError, transaction
from guardian.shortcuts import assign_perm, remove_perm

from pipelines.models import AuditEvent, Pipeline, Project, Role, RoleAssignment
from pipelines.permissions import forget

ROLE_ACTIONS: dict[str, tuple[str, ...]] = {
    Role.VIEWER: ("view",),
    Role.EXECUTOR: ("view", "execute"),
    Role.APPROVER: ("view", "approve"),
    Role.ADMIN: ("view", "execute", "approve", "change", "manage_access"),
}


class RoleError(ValueError):
    """A role change that cannot be made; ``str()`` is the message to show."""


def _subject(assignment: RoleAssignment):
    return assignment.user if assignment.user_id else assignment.group


def _target(assignment: RoleAssignment) -> tuple[Project | Pipeline, str]:
    if assignment.pipeline_id:
        return assignment.pipeline, "pipeline"
    return assignment.project, "project"


def _set_actions(assignment: RoleAssignment, *, add: set[str], remove: set[str]) -> None:
    target, model = _target(assignment)
    subject = _subject(assignment)
    for action in sorted(add):
        assign_perm(f"pipelines.{action}_{model}", subject, target)
    for action in sorted(remove):
        remove_perm(f"pipelines.{action}_{model}", subject, target)
    forget(assignment.user)


def describe(assignment: RoleAssignment) -> str:
    """ "user bob as Pipeline Executor on pipeline web_deploy" (for messages and the audit trail)."""
    who = f"user {assignment.user}" if assignment.user_id else f"group {assignment.group}"
    target = (
        f"pipeline {assignment.pipeline.identifier}"
        if assignment.pipeline_id
        else "the whole project"
    )
    return f"{who} as {Role(assignment.role).label} on {target}"


def _check_role(role: str) -> None:
    if role not in ROLE_ACTIONS:
        raise RoleError(f"Unknown role '{role}': choose one of {', '.join(Role.values)}.")


def _stored(assignment: RoleAssignment) -> RoleAssignment:
    """The saved row, locked; refuses an in-memory change of who or what it applies to."""
    stored = (
        RoleAssignment.objects.select_for_update(of=("self",))
        .select_related("user", "group", "pipeline", "project")
        .filter(pk=assignment.pk)
        .first()
    )
    if stored is None:
        raise RoleError("This role assignment no longer exists.")
    for field in ("project_id", "pipeline_id", "user_id", "group_id"):
        if getattr(stored, field) != getattr(assignment, field):
            raise RoleError(
                "A role assignment's user, group, project and pipeline cannot change: "
                "remove it and add a new one."
            )
    return stored


@transaction.atomic
def assign_role(
    *,
    project: Project,
    role: str,
    user=None,
    group: Group | None = None,
    pipeline: Pipeline | None = None,
    granted_by=None,
) -> RoleAssignment:
    """Give ``user`` or ``group`` a role on ``project`` (or on one of its pipelines).

    An existing assignment for the same subject and target gets the new role instead.
    """
    if (user is None) == (group is None):
        raise RoleError("A role goes to a user or to a group, not both and not neither.")
    _check_role(role)
    if pipeline is not None and pipeline.project_id != project.pk:
        raise RoleError(f"Pipeline {pipeline.identifier} is not in project {project.name}.")
    lookup = {"project": project, "pipeline": pipeline, "user": user, "group": group}
    existing = RoleAssignment.objects.filter(**lookup).first()
    if existing is None:
        try:
            with transaction.atomic():
                assignment = RoleAssignment.objects.create(
                    **lookup, role=role, granted_by=granted_by
                )
        except IntegrityError:  # someone assigned the same subject and target at the same moment
            existing = RoleAssignment.objects.get(**lookup)
    if existing is not None:
        return change_role(assignment=existing, role=role, changed_by=granted_by)
    _set_actions(assignment, add=set(ROLE_ACTIONS[role]), remove=set())
    AuditEvent.objects.create(
        actor=granted_by, project=project, action="role.assigned", detail=describe(assignment)
    )
    return assignment


@transaction.atomic
def change_role(*, assignment: RoleAssignment, role: str, changed_by=None) -> RoleAssignment:
    """Give an existing assignment another role: grants what the new role adds, removes what
    it no longer includes. Changing to the same role only restores its permissions."""
    _check_role(role)
    stored = _stored(assignment)
    old, new = set(ROLE_ACTIONS[stored.role]), set(ROLE_ACTIONS[role])
    _set_actions(stored, add=new, remove=old - new)
    if stored.role != role:
        previous = Role(stored.role).label
        stored.role = role
        stored.granted_by = changed_by
        stored.save(update_fields=["role", "granted_by"])
        AuditEvent.objects.create(
            actor=changed_by,
            project=stored.project,
            action="role.changed",
            detail=f"{describe(stored)} (was {previous})",
        )
    assignment.role, assignment.granted_by_id = stored.role, stored.granted_by_id
    return stored


@transaction.atomic
def revoke_role(*, assignment: RoleAssignment, revoked_by=None) -> None:
    """Remove an assignment and exactly the permissions its role granted."""
    stored = _stored(assignment)
    _set_actions(stored, add=set(), remove=set(ROLE_ACTIONS[stored.role]))
    AuditEvent.objects.create(
        actor=revoked_by, project=stored.project, action="role.revoked", detail=describe(stored)
    )
    stored.delete()


def last_admin_problem(assignment: RoleAssignment, new_role: str | None = None) -> str:
    """Why changing ``assignment`` to ``new_role`` (``None``: removing it) would leave its project
    without a project-wide Project Admin; empty when it would not."""
    if assignment.pipeline_id or assignment.role != Role.ADMIN or new_role == Role.ADMIN:
        return ""
    others = RoleAssignment.objects.filter(
        project_id=assignment.project_id, pipeline__isnull=True, role=Role.ADMIN
    ).exclude(pk=assignment.pk)
    if others.exists():
        return ""
    return (
        f"The project would have no Project Admin left ({describe(assignment)} is the last one): "
        "make someone else Project Admin first."
    )
