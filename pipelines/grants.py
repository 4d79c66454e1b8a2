"""Object permissions given outside roles ("direct grants"): audited, listed, removable.

Roles are the only way to grant project rights (SPEC §6): ``pipelines.roles`` writes the
guardian rows a role stands for and audits the role. A row written any other way (guardian's
object-permission admin pages, which only superusers may use; a shell; a script) is audited
here, from the permission tables' own signals, as ``permission.granted`` or
``permission.revoked`` with who did it when known (``acting_as``). Rows that go with their
project, pipeline, user or group when that is deleted are not audited one by one. Adding a
user to a group, or removing one, gives or takes the group's rights: it is audited as
``group.member_added`` / ``group.member_removed`` in every project where the group has any.

``direct_grants(project)`` lists the rows of a project and its pipelines that no role
assignment explains; the Access page shows them next to the roles, and a Project Admin
removes them there (``remove_direct_grant``). A role's revocation removes only what the role
granted: a direct grant stays until it is removed, visibly, on that page.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, User
from django.db import transaction
from django.db.models import Model, Q, QuerySet
from django.db.models.signals import m2m_changed, post_delete, post_save

from pipelines import permissions
from pipelines.models import (
    AuditEvent,
    Pipeline,
    PipelineGroupObjectPermission,
    PipelineUserObjectPermission,
    Project,
    ProjectGroupObjectPermission,
    ProjectUserObjectPermission,
    RoleAssignment,
)
from pipelines.permissions import ACTION_LABELS
from pipelines.roles import ROLE_ACTIONS, writing
from stageline.errors import NotFound

PERMISSION_MODELS: tuple[type[Model], ...] = (
    ProjectUserObjectPermission,
    ProjectGroupObjectPermission,
    PipelineUserObjectPermission,
    PipelineGroupObjectPermission,
)
PIPELINE_MODELS = (PipelineUserObjectPermission, PipelineGroupObjectPermission)
GROUP_MODELS = (ProjectGroupObjectPermission, PipelineGroupObjectPermission)

_actor: ContextVar[User | None] = ContextVar("stageline_grants_actor", default=None)


@contextmanager
def acting_as(user: User | None) -> Iterator[None]:
    """Permission changes made inside are audited as ``user``'s."""
    token = _actor.set(user)
    try:
        yield
    finally:
        _actor.reset(token)


@dataclass
class DirectGrant:
    """The permissions one user or group holds on one target outside any role."""

    subject: User | Group
    is_group: bool
    target: Project | Pipeline
    rows: list = field(default_factory=list)

    @property
    def key(self) -> str:
        """Names the grant in the remove form: ``user:12:pipeline:3``."""
        kind = "group" if self.is_group else "user"
        model = "pipeline" if isinstance(self.target, Pipeline) else "project"
        return f"{kind}:{self.subject.pk}:{model}:{self.target.pk}"

    @property
    def actions(self) -> list[str]:
        return sorted(_action_label(row) for row in self.rows)

    @property
    def who(self) -> str:
        return f"group {self.subject}" if self.is_group else f"user {self.subject}"

    @property
    def pipeline(self) -> Pipeline | None:
        return self.target if isinstance(self.target, Pipeline) else None

    @property
    def where(self) -> str:
        return f"pipeline {self.pipeline.identifier}" if self.pipeline else "the whole project"


def _action(row) -> str:
    """``execute`` for ``execute_pipeline``; the whole codename for a permission of no action."""
    model = "pipeline" if isinstance(row, PIPELINE_MODELS) else "project"
    return row.permission.codename.removesuffix(f"_{model}")


def _action_label(row) -> str:
    return ACTION_LABELS.get(_action(row)) or row.permission.name


def _describe(row) -> tuple[Project, str]:
    target = row.content_object
    project = target.project if isinstance(target, Pipeline) else target
    grant = DirectGrant(
        subject=row.group if isinstance(row, GROUP_MODELS) else row.user,
        is_group=isinstance(row, GROUP_MODELS),
        target=target,
        rows=[row],
    )
    return project, f"{grant.who}: {_action_label(row)} on {grant.where} (outside roles)"


def _audit(action: str, row) -> None:
    project, detail = _describe(row)
    AuditEvent.objects.create(actor=_actor.get(), project=project, action=action, detail=detail)


def _saved(sender, instance, created: bool = False, raw: bool = False, **kwargs) -> None:
    if created and not raw and not writing():
        _audit("permission.granted", instance)


def _deleted(sender, instance, origin=None, **kwargs) -> None:
    """Audits a permission row deleted for itself (not with its project, user or group)."""
    if writing():
        return
    origin_model = origin.model if isinstance(origin, QuerySet) else type(origin)
    if origin_model in PERMISSION_MODELS:
        _audit("permission.revoked", instance)


def _projects_of(group: Group) -> QuerySet:
    """Projects where ``group`` holds anything: a role, or a permission outside roles."""
    return Project.objects.filter(
        Q(role_assignments__group=group)
        | Q(projectgroupobjectpermission__group=group)
        | Q(pipelines__pipelinegroupobjectpermission__group=group)
    ).distinct()


def _membership_changed(sender, instance, action: str, reverse: bool, pk_set, **kwargs) -> None:
    """Audits a user joining or leaving a group that has rights in a project (either side of
    the relation: ``user.groups.add(group)`` or ``group.user_set.add(user)``)."""
    if action == "pre_clear":  # the members are known only before they are gone
        related = instance.user_set.all() if reverse else instance.groups.all()
        pk_set, action = {related_one.pk for related_one in related}, "post_remove"
    if action not in {"post_add", "post_remove"} or not pk_set:
        return
    users = get_user_model().objects.filter(pk__in=pk_set) if reverse else [instance]
    groups = [instance] if reverse else Group.objects.filter(pk__in=pk_set)
    verb = "added to" if action == "post_add" else "removed from"
    event = "group.member_added" if action == "post_add" else "group.member_removed"
    for group in groups:
        projects = list(_projects_of(group))
        for user in users:
            AuditEvent.objects.bulk_create(
                AuditEvent(
                    actor=_actor.get(),
                    project=project,
                    action=event,
                    detail=f"user {user} {verb} group {group}, which has rights in this project",
                )
                for project in projects
            )


m2m_changed.connect(
    _membership_changed,
    sender=get_user_model().groups.through,
    dispatch_uid="stageline-audit-group-members",
)
for _model in PERMISSION_MODELS:
    post_save.connect(_saved, sender=_model, dispatch_uid=f"stageline-audit-{_model.__name__}")
    post_delete.connect(
        _deleted, sender=_model, dispatch_uid=f"stageline-audit-del-{_model.__name__}"
    )


def _explained(project: Project) -> set[tuple[bool, int | None, bool, int | None, str]]:
    """(is_group, subject id, on a pipeline, target id, action) for every role of ``project``."""
    explained = set()
    for assignment in RoleAssignment.objects.filter(project=project):
        is_group = assignment.group_id is not None
        subject_id = assignment.group_id if is_group else assignment.user_id
        on_pipeline = assignment.pipeline_id is not None
        target_id = assignment.pipeline_id if on_pipeline else project.pk
        for action in ROLE_ACTIONS[assignment.role]:
            explained.add((is_group, subject_id, on_pipeline, target_id, action))
    return explained


def direct_grants(project: Project) -> list[DirectGrant]:
    """The permissions held on ``project`` or its pipelines that no role assignment explains,
    one entry per (user or group, project or pipeline). Five queries, whatever the size."""
    explained = _explained(project)
    found: dict[tuple[bool, int | None, bool, int | None], DirectGrant] = {}
    for model in PERMISSION_MODELS:
        is_group = model in GROUP_MODELS
        on_pipeline = model in PIPELINE_MODELS
        rows: QuerySet[Any] = model._default_manager.select_related(
            "permission", "group" if is_group else "user", "content_object"
        ).order_by("id")
        where = {"content_object__project": project} if on_pipeline else {"content_object": project}
        for row in rows.filter(**where):
            subject = row.group if is_group else row.user
            place = (is_group, subject.pk, on_pipeline, row.content_object_id)
            if (*place, _action(row)) in explained:
                continue
            grant = found.setdefault(
                place, DirectGrant(subject=subject, is_group=is_group, target=row.content_object)
            )
            grant.rows.append(row)
    return sorted(found.values(), key=lambda g: (g.where, g.is_group, str(g.subject)))


@transaction.atomic
def remove_direct_grant(*, project: Project, key: str, removed_by) -> DirectGrant:
    """Remove every permission of one direct grant (named by its ``key``); each is audited.
    The remover needs Manage access on the project, like for a role."""
    permissions.check(removed_by, "manage_access", project)
    grant = next((g for g in direct_grants(project) if g.key == key), None)
    if grant is None:
        raise NotFound(
            "No such permission outside roles in this project (it may have been removed already)."
        )
    with acting_as(removed_by):
        for row in grant.rows:
            row.delete()
    return grant
