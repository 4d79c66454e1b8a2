"""The one place that answers "may this user do X to this object" and "what may they see".

Actions: ``view``, ``execute`` (run, retry, rerun, abort), ``approve``, ``change`` (edit the
YAML) and ``manage_access`` (assign roles). A user holds an action on a pipeline when a role
grants it on the pipeline's project or on that pipeline alone; an execution follows its
pipeline. Superusers hold every action. Inactive and anonymous users hold none.

Everything else (views, services, admin, management commands) asks this module; no other code
reads guardian tables.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.core.exceptions import PermissionDenied
from django.db.models import Q, QuerySet
from django.http import Http404

from pipelines.models import (
    Pipeline,
    PipelineGroupObjectPermission,
    PipelineUserObjectPermission,
    Project,
    ProjectGroupObjectPermission,
    ProjectUserObjectPermission,
)

if TYPE_CHECKING:
    from executions.models import Execution

ACTIONS = ("view", "execute", "approve", "change", "manage_access")
ACTION_LABELS = {
    "view": "View",
    "execute": "Execute",
    "approve": "Approve",
    "change": "Edit",
    "manage_access": "Manage access",
}


def _is_active(user) -> bool:
    return bool(user is not None and user.is_authenticated and user.is_active)


def _codename_filter(action: str, model: str) -> Q:
    return Q(permission__codename=f"{action}_{model}")


def _project_ids(user, action: str):
    """Subquery: ids of projects where ``user`` holds ``action`` project-wide (directly or by group)."""
    direct = ProjectUserObjectPermission.objects.filter(
        _codename_filter(action, "project"), user=user
    ).values("content_object_id")
    by_group = ProjectGroupObjectPermission.objects.filter(
        _codename_filter(action, "project"), group__user=user
    ).values("content_object_id")
    return direct, by_group


def _pipeline_ids(user, action: str):
    direct = PipelineUserObjectPermission.objects.filter(
        _codename_filter(action, "pipeline"), user=user
    ).values("content_object_id")
    by_group = PipelineGroupObjectPermission.objects.filter(
        _codename_filter(action, "pipeline"), group__user=user
    ).values("content_object_id")
    return direct, by_group


def visible_projects(user, queryset: QuerySet | None = None) -> QuerySet:
    """Projects ``user`` may see: a project-wide grant, or a grant on one of its pipelines."""
    queryset = Project.objects.all() if queryset is None else queryset
    if not _is_active(user):
        return queryset.none()
    if user.is_superuser:
        return queryset
    direct, by_group = _project_ids(user, "view")
    pipe_direct, pipe_group = _pipeline_ids(user, "view")
    via_pipeline = Pipeline.objects.filter(Q(id__in=pipe_direct) | Q(id__in=pipe_group)).values("project_id")
    return queryset.filter(Q(id__in=direct) | Q(id__in=by_group) | Q(id__in=via_pipeline))


def pipelines_with(user, action: str, queryset: QuerySet | None = None) -> QuerySet:
    """Pipelines on which ``user`` holds ``action``, filtered in one query."""
    queryset = Pipeline.objects.all() if queryset is None else queryset
    if not _is_active(user):
        return queryset.none()
    if user.is_superuser:
        return queryset
    direct, by_group = _project_ids(user, action)
    pipe_direct, pipe_group = _pipeline_ids(user, action)
    return queryset.filter(
        Q(project_id__in=direct) | Q(project_id__in=by_group) | Q(id__in=pipe_direct) | Q(id__in=pipe_group)
    )


def visible_pipelines(user, queryset: QuerySet | None = None) -> QuerySet:
    return pipelines_with(user, "view", queryset)


def visible_executions(user, queryset: QuerySet | None = None) -> QuerySet:
    from executions.models import Execution

    queryset = Execution.objects.all() if queryset is None else queryset
    if not _is_active(user):
        return queryset.none()
    if user.is_superuser:
        return queryset
    return queryset.filter(pipeline__in=visible_pipelines(user).values("id"))


def _actions_on(user, project_id: int, pipeline_id: int | None) -> frozenset[str]:
    """Every action ``user`` holds on a project (and one of its pipelines): two queries."""
    if not _is_active(user):
        return frozenset()
    if user.is_superuser:
        return frozenset(ACTIONS)
    cache = user.__dict__.setdefault("_stageline_actions", {})
    key = (project_id, pipeline_id)
    if key in cache:
        return cache[key]
    codenames = set(
        ProjectUserObjectPermission.objects.filter(
            Q(user=user), content_object_id=project_id
        ).values_list("permission__codename", flat=True)
    ) | set(
        ProjectGroupObjectPermission.objects.filter(
            group__user=user, content_object_id=project_id
        ).values_list("permission__codename", flat=True)
    )
    actions = {c.removesuffix("_project") for c in codenames if c.endswith("_project")}
    if pipeline_id is not None:
        pipe_codenames = set(
            PipelineUserObjectPermission.objects.filter(
                user=user, content_object_id=pipeline_id
            ).values_list("permission__codename", flat=True)
        ) | set(
            PipelineGroupObjectPermission.objects.filter(
                group__user=user, content_object_id=pipeline_id
            ).values_list("permission__codename", flat=True)
        )
        actions |= {c.removesuffix("_pipeline") for c in pipe_codenames if c.endswith("_pipeline")}
    elif "view" not in actions and visible_projects(user, Project.objects.filter(pk=project_id)).exists():
        actions.add("view")  # a grant on one pipeline lets the user see the project itself
    result = frozenset(a for a in actions if a in ACTIONS)
    cache[key] = result
    return result


def forget(user) -> None:
    """Drop what this user object remembers of its permissions (after a role change)."""
    if user is not None:
        user.__dict__.pop("_stageline_actions", None)


def _scope(obj) -> tuple[int, int | None, str]:
    from executions.models import Execution

    if isinstance(obj, Project):
        return obj.pk, None, f"project {obj}"
    if isinstance(obj, Pipeline):
        return obj.project_id, obj.pk, f"pipeline {obj.identifier}"
    if isinstance(obj, Execution):
        pipeline = obj.pipeline
        return pipeline.project_id, pipeline.pk, f"pipeline {pipeline.identifier}"
    raise TypeError(f"no permissions on {type(obj).__name__}")


def can(user, action: str, obj: Project | Pipeline | Execution) -> bool:
    """Whether ``user`` may do ``action`` to ``obj``."""
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}")
    project_id, pipeline_id, _ = _scope(obj)
    return action in _actions_on(user, project_id, pipeline_id)


def why_not(user, action: str, obj) -> str:
    """The reason shown when ``user`` may not do ``action`` (empty when they may)."""
    if can(user, action, obj):
        return ""
    _, _, label = _scope(obj)
    return f"You need the {ACTION_LABELS[action]} permission on {label}."


def require(user, action: str, obj) -> None:
    """404 if the user may not even see ``obj``; 403 with the reason if they may not act."""
    if not can(user, "view", obj):
        raise Http404("No such object.")
    if action != "view" and not can(user, action, obj):
        raise PermissionDenied(why_not(user, action, obj))


class AccessDenied(Exception):
    """Raised by services for a user acting without permission (commands print it, exit 2)."""


def check(user, action: str, obj) -> None:
    """Like ``require`` for services and commands: raises ``AccessDenied`` with the reason."""
    if not can(user, action, obj):
        if not can(user, "view", obj):
            raise AccessDenied("not found, or you may not see it")
        raise AccessDenied(why_not(user, action, obj))


def projects_with(user, action: str, queryset: QuerySet | None = None) -> QuerySet:
    """Projects where ``user`` holds ``action`` project-wide."""
    queryset = Project.objects.all() if queryset is None else queryset
    if not _is_active(user):
        return queryset.none()
    if user.is_superuser:
        return queryset
    direct, by_group = _project_ids(user, action)
    return queryset.filter(Q(id__in=direct) | Q(id__in=by_group))
