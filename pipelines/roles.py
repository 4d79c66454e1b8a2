"""Roles are granted per project (or on one pipeline) and turned into guardian permissions.

A ``RoleAssignment`` row gives one user or one group one role on a whole project or on one
of its pipelines (at most one row per subject and target). ``assign_role``, ``change_role``
and ``revoke_role`` keep those rows and the object permissions they stand for in step, in
one transaction: a role grants exactly the actions of ``ROLE_ACTIONS``, changing it adds and
removes only the difference, revoking it removes exactly what it granted. Each change is
written to the audit trail. Only these functions write role permissions: the Access page,
the admin and anything else that grants go through them (a permission written anywhere else
is audited by ``pipelines.grants``, which asks ``writing()`` to tell them apart).

Each function is its own guard. The acting user (``granted_by`` / ``changed_by`` /
``revoked_by``; ``None`` only for the system itself: seeding, tests' set-up) must hold
Manage access on the project (``NotFound`` / ``Forbidden`` otherwise), and a project always
keeps at least one project-wide Project Admin (``Conflict``): that rule is checked here, after
locking the project's row, so two admins demoting each other at the same moment cannot both
pass (the second waits for the first and then sees it is the last one).
"""

from __future__ import annotations

from contextvars import ContextVar

from django.contrib.auth.models import AnonymousUser, Group, User
from django.db import IntegrityError, transaction
from guardian.shortcuts import assign_perm, remove_perm

from pipelines import permissions
from pipelines.models import AuditEvent, Pipeline, Project, Role, RoleAssignment
from stageline.errors import Conflict, Invalid

AnyUser = User | AnonymousUser

ROLE_ACTIONS: dict[str, tuple[str, ...]] = {
    Role.VIEWER: ("view",),
    Role.EXECUTOR: ("view", "execute"),
    Role.APPROVER: ("view", "approve"),
    Role.ADMIN: ("view", "execute", "approve", "change", "manage_access"),
}


_writing: ContextVar[bool] = ContextVar("stageline_roles_writing", default=False)


def writing() -> bool:
    """Whether the permission being saved or deleted right now is a role's (audited as one)."""
    return _writing.get()


class RoleError(Invalid):
    """A role change that cannot be made as asked; ``message`` says why."""


def _subject(assignment: RoleAssignment) -> User | Group:
    subject = assignment.user if assignment.user_id else assignment.group
    assert subject is not None  # a database constraint: a user or a group
    return subject


def _target(assignment: RoleAssignment) -> tuple[Project | Pipeline, str]:
    if assignment.pipeline_id and assignment.pipeline is not None:
        return assignment.pipeline, "pipeline"
    return assignment.project, "project"


def _set_actions(assignment: RoleAssignment, *, add: set[str], remove: set[str]) -> None:
    target, model = _target(assignment)
    subject = _subject(assignment)
    token = _writing.set(True)
    try:
        for action in sorted(add):
            assign_perm(f"pipelines.{action}_{model}", subject, target)
        for action in sorted(remove):
            remove_perm(f"pipelines.{action}_{model}", subject, target)
    finally:
        _writing.reset(token)
    permissions.forget(assignment.user)


def describe(assignment: RoleAssignment) -> str:
    """ "user bob as Pipeline Executor on pipeline web_deploy" (for messages and the audit trail)."""
    who = f"user {assignment.user}" if assignment.user_id else f"group {assignment.group}"
    target = (
        f"pipeline {assignment.pipeline.identifier}"
        if assignment.pipeline_id and assignment.pipeline is not None
        else "the whole project"
    )
    return f"{who} as {Role(assignment.role).label} on {target}"


def _check_role(role: str) -> None:
    if role not in ROLE_ACTIONS:
        raise RoleError(f"Unknown role '{role}': choose one of {', '.join(Role.values)}.")


def _guard(actor: AnyUser | None, project: Project) -> None:
    """Check that ``actor`` may manage ``project``'s access, then lock the project's row: every
    role change of a project waits for the one before it, so the last-admin rule below reads
    the assignments as the change before it left them."""
    if actor is not None:
        permissions.check(actor, "manage_access", project)
    locked = Project.objects.select_for_update().filter(pk=project.pk).values_list("pk", flat=True)
    if not list(locked):
        raise RoleError("This project no longer exists.")


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


def _last_admin_message(stored: RoleAssignment) -> str:
    return (
        f"The project would have no Project Admin left ({describe(stored)} is the last "
        "one): make someone else Project Admin first."
    )


def _keep_an_admin(stored: RoleAssignment, new_role: str | None) -> None:
    """Refuse (``Conflict``) to change ``stored`` to ``new_role`` (``None``: remove it) when
    that leaves its project without a project-wide Project Admin. Call with the project locked."""
    if stored.pipeline_id or stored.role != Role.ADMIN or new_role == Role.ADMIN:
        return
    others = RoleAssignment.objects.filter(
        project_id=stored.project_id, pipeline__isnull=True, role=Role.ADMIN
    ).exclude(pk=stored.pk)
    if not others.exists():
        raise Conflict(_last_admin_message(stored))


def kept_admins(project: Project) -> dict[int, str]:
    """The assignments the last-admin rule would not let go right now (removed or given another
    role), each with the reason ``_keep_an_admin`` would give: for pages to show before anyone
    tries. Read without the lock: the role functions decide under it."""
    admins = list(
        RoleAssignment.objects.filter(project=project, pipeline__isnull=True, role=Role.ADMIN)
        .select_related("user", "group", "pipeline", "project")
        .order_by("pk")[:2]
    )
    return {admins[0].pk: _last_admin_message(admins[0])} if len(admins) == 1 else {}


@transaction.atomic
def assign_role(
    *,
    project: Project,
    role: str,
    user: User | None = None,
    group: Group | None = None,
    pipeline: Pipeline | None = None,
    granted_by: AnyUser | None = None,
) -> RoleAssignment:
    """Give ``user`` or ``group`` a role on ``project`` (or on one of its pipelines).

    An existing assignment for the same subject and target gets the new role instead (through
    ``change_role``, so the last-admin rule holds there too)."""
    _guard(granted_by, project)
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
                    **lookup, role=role, granted_by=_person(granted_by)
                )
        except IntegrityError:  # someone assigned the same subject and target at the same moment
            existing = RoleAssignment.objects.get(**lookup)
    if existing is not None:
        return change_role(assignment=existing, role=role, changed_by=granted_by)
    _set_actions(assignment, add=set(ROLE_ACTIONS[role]), remove=set())
    AuditEvent.objects.create(
        actor=_person(granted_by),
        project=project,
        action="role.assigned",
        detail=describe(assignment),
    )
    return assignment


@transaction.atomic
def change_role(
    *, assignment: RoleAssignment, role: str, changed_by: AnyUser | None = None
) -> RoleAssignment:
    """Give an existing assignment another role: grants what the new role adds, removes what
    it no longer includes. Changing to the same role only restores its permissions."""
    _guard(changed_by, assignment.project)
    _check_role(role)
    stored = _stored(assignment)
    _keep_an_admin(stored, role)
    old, new = set(ROLE_ACTIONS[stored.role]), set(ROLE_ACTIONS[role])
    _set_actions(stored, add=new, remove=old - new)
    if stored.role != role:
        previous = Role(stored.role).label
        stored.role = role
        stored.granted_by = _person(changed_by)
        stored.save(update_fields=["role", "granted_by"])
        AuditEvent.objects.create(
            actor=_person(changed_by),
            project=stored.project,
            action="role.changed",
            detail=f"{describe(stored)} (was {previous})",
        )
    assignment.role, assignment.granted_by_id = stored.role, stored.granted_by_id
    return stored


@transaction.atomic
def revoke_role(*, assignment: RoleAssignment, revoked_by: AnyUser | None = None) -> None:
    """Remove an assignment and exactly the permissions its role granted."""
    _guard(revoked_by, assignment.project)
    stored = _stored(assignment)
    _keep_an_admin(stored, None)
    _set_actions(stored, add=set(), remove=set(ROLE_ACTIONS[stored.role]))
    AuditEvent.objects.create(
        actor=_person(revoked_by),
        project=stored.project,
        action="role.revoked",
        detail=describe(stored),
    )
    stored.delete()


def _person(actor: AnyUser | None) -> User | None:
    """The actor as stored on rows (an anonymous user is nobody)."""
    return actor if isinstance(actor, User) else None
