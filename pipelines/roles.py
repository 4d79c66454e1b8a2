"""Roles are granted per project (or per pipeline) and turned into guardian permissions.

``assign_role``, ``change_role`` and ``revoke_role`` keep ``RoleAssignment`` rows and the
object permissions they stand for in step, atomically.
"""

from __future__ import annotations

from django.contrib.auth.models import Group
from django.db import transaction
from guardian.shortcuts import assign_perm, remove_perm

from pipelines.models import AuditEvent, Pipeline, Project, Role, RoleAssignment
from pipelines.permissions import ACTIONS, forget

ROLE_ACTIONS: dict[str, tuple[str, ...]] = {
    Role.VIEWER: ("view",),
    Role.EXECUTOR: ("view", "execute"),
    Role.APPROVER: ("view", "approve"),
    Role.ADMIN: ("view", "execute", "approve", "change", "manage_access"),
}


def _target(assignment: RoleAssignment) -> tuple[Project | Pipeline, str]:
    if assignment.pipeline_id:
        return assignment.pipeline, "pipeline"
    return assignment.project, "project"


def _apply(assignment: RoleAssignment, *, grant: bool) -> None:
    target, model = _target(assignment)
    subject = assignment.user or assignment.group
    wanted = set(ROLE_ACTIONS[assignment.role]) if grant else set()
    for action in ACTIONS:
        perm = f"pipelines.{action}_{model}"
        if action in wanted:
            assign_perm(perm, subject, target)
        else:
            remove_perm(perm, subject, target)
    if assignment.user is not None:
        forget(assignment.user)


def _describe(assignment: RoleAssignment) -> str:
    who = f"user {assignment.user}" if assignment.user_id else f"group {assignment.group}"
    target = f"pipeline {assignment.pipeline.identifier}" if assignment.pipeline_id else "the project"
    return f"{who} as {Role(assignment.role).label} on {target}"


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

    An existing assignment for the same subject and target is replaced.
    """
    if (user is None) == (group is None):
        raise ValueError("a role goes to a user or to a group, not both")
    if role not in ROLE_ACTIONS:
        raise ValueError(f"unknown role {role!r}")
    if pipeline is not None and pipeline.project_id != project.pk:
        raise ValueError("the pipeline is not in this project")
    existing = RoleAssignment.objects.filter(project=project, pipeline=pipeline, user=user, group=group).first()
    if existing:
        return change_role(assignment=existing, role=role, changed_by=granted_by)
    assignment = RoleAssignment.objects.create(
        project=project, pipeline=pipeline, user=user, group=group, role=role, granted_by=granted_by
    )
    _apply(assignment, grant=True)
    AuditEvent.objects.create(actor=granted_by, project=project, action="role.assigned", detail=_describe(assignment))
    return assignment


@transaction.atomic
def change_role(*, assignment: RoleAssignment, role: str, changed_by=None) -> RoleAssignment:
    if role not in ROLE_ACTIONS:
        raise ValueError(f"unknown role {role!r}")
    assignment.role = role
    assignment.granted_by = changed_by
    assignment.save(update_fields=["role", "granted_by"])
    _apply(assignment, grant=True)
    AuditEvent.objects.create(
        actor=changed_by, project=assignment.project, action="role.changed", detail=_describe(assignment)
    )
    return assignment


@transaction.atomic
def revoke_role(*, assignment: RoleAssignment, revoked_by=None) -> None:
    _apply(assignment, grant=False)
    AuditEvent.objects.create(
        actor=revoked_by, project=assignment.project, action="role.revoked", detail=_describe(assignment)
    )
    assignment.delete()
