"""The one place that answers "may this user do X to this object" and "what may they see".

Actions: ``view``, ``execute`` (run, retry, rerun, abort), ``approve``, ``change`` (edit the
YAML) and ``manage_access`` (assign roles). A user holds an action on a pipeline when a
guardian object permission grants it on the pipeline's project or on that pipeline alone,
to the user or to one of their groups; an execution follows its pipeline. A grant on one
pipeline makes its project visible (the project page then lists that pipeline only), nothing
more. Superusers hold every action. Inactive and anonymous users hold none.

Lists are filtered in the database (``visible_projects`` / ``visible_pipelines``: one query
with sub-selects, whatever the number of rows; executions follow their pipeline, see
``Execution.objects.visible_to``). ``can``
costs one query per (project, pipeline) per user object, remembered on that object until a
permission or group membership changes; ``prefetch`` answers it for a whole page of rows in
one query. A request loads a fresh user, so a revoked role is gone at the next request.

``check`` is the one guard: services call it with the acting user and it raises the typed
refusal (``NotFound`` for what the user may not see, ``Forbidden`` naming the missing
permission); page loaders (``pipelines.loaders``, ``executions.loaders``) use it too.
Everything else (views, services, admin, management commands) asks this module; apart from
``pipelines.roles`` (which writes the permissions) and ``pipelines.grants`` (which audits and
lists those written outside roles) no other code reads guardian tables.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from django.contrib.auth import get_user_model
from django.db.models import Q, QuerySet
from django.db.models.signals import m2m_changed, post_delete, post_save

from pipelines.models import (
    Pipeline,
    PipelineGroupObjectPermission,
    PipelineUserObjectPermission,
    Project,
    ProjectGroupObjectPermission,
    ProjectUserObjectPermission,
)
from stageline.errors import Forbidden, NotFound

ACTIONS = ("view", "execute", "approve", "change", "manage_access")
ACTION_LABELS = {
    "view": "View",
    "execute": "Execute",
    "approve": "Approve",
    "change": "Edit",
    "manage_access": "Manage access",
}
_APP = "pipelines"
_CACHE_ATTR = "_stageline_permissions"
_generation = 0


def _is_active(user) -> bool:
    return bool(user is not None and user.is_authenticated and user.is_active)


def _perm_filter(action: str, model: str) -> Q:
    return Q(permission__content_type__app_label=_APP, permission__codename=f"{action}_{model}")


def _on_projects(user, action: str, field: str) -> Q:
    direct = ProjectUserObjectPermission.objects.filter(_perm_filter(action, "project"), user=user)
    by_group = ProjectGroupObjectPermission.objects.filter(
        _perm_filter(action, "project"), group__user=user
    )
    return Q(**{f"{field}__in": direct.values("content_object_id")}) | Q(
        **{f"{field}__in": by_group.values("content_object_id")}
    )


def _on_pipelines(user, action: str, field: str) -> Q:
    direct = PipelineUserObjectPermission.objects.filter(
        _perm_filter(action, "pipeline"), user=user
    )
    by_group = PipelineGroupObjectPermission.objects.filter(
        _perm_filter(action, "pipeline"), group__user=user
    )
    return Q(**{f"{field}__in": direct.values("content_object_id")}) | Q(
        **{f"{field}__in": by_group.values("content_object_id")}
    )


# --- which objects a user may see (one query each, filtered in the database) ---------------


def projects_with(user, action: str, queryset: QuerySet | None = None) -> QuerySet:
    """Projects where ``user`` holds ``action`` on the whole project (not via one pipeline)."""
    queryset = Project.objects.all() if queryset is None else queryset
    if not _is_active(user):
        return queryset.none()
    if user.is_superuser:
        return queryset
    return queryset.filter(_on_projects(user, action, "id"))


def pipelines_with(user, action: str, queryset: QuerySet | None = None) -> QuerySet:
    """Pipelines on which ``user`` holds ``action``, by a project-wide or a pipeline grant."""
    queryset = Pipeline.objects.all() if queryset is None else queryset
    if not _is_active(user):
        return queryset.none()
    if user.is_superuser:
        return queryset
    return queryset.filter(
        _on_projects(user, action, "project_id") | _on_pipelines(user, action, "id")
    )


def visible_projects(user, queryset: QuerySet | None = None) -> QuerySet:
    """Projects ``user`` may see: a project-wide grant, or a grant on one of its pipelines."""
    queryset = Project.objects.all() if queryset is None else queryset
    if not _is_active(user):
        return queryset.none()
    if user.is_superuser:
        return queryset
    via_pipeline = Pipeline.objects.filter(_on_pipelines(user, "view", "id")).values("project_id")
    return queryset.filter(_on_projects(user, "view", "id") | Q(id__in=via_pipeline))


def visible_pipelines(user, queryset: QuerySet | None = None) -> QuerySet:
    """Pipelines ``user`` may see (a project grant shows all of them, a pipeline grant one)."""
    return pipelines_with(user, "view", queryset)


# --- what a user may do to one object -------------------------------------------------------


def _granted(user, project_ids: Iterable[int], pipeline_ids: Iterable[int]) -> tuple[dict, dict]:
    """Actions held per project id and per pipeline id, read in one query (a UNION of four)."""
    project_ids, pipeline_ids = set(project_ids), set(pipeline_ids)
    parts = []
    model: Any  # four guardian tables; their common base has no manager or content_object
    for ids, models in (
        (project_ids, (ProjectUserObjectPermission, ProjectGroupObjectPermission)),
        (pipeline_ids, (PipelineUserObjectPermission, PipelineGroupObjectPermission)),
    ):
        if not ids:
            continue
        for model, who in zip(models, ("user", "group__user"), strict=True):
            parts.append(
                model.objects.filter(
                    permission__content_type__app_label=_APP,
                    content_object_id__in=ids,
                    **{who: user},
                ).values_list("content_object_id", "permission__codename")
            )
    on_project: dict[int, set[str]] = {pk: set() for pk in project_ids}
    on_pipeline: dict[int, set[str]] = {pk: set() for pk in pipeline_ids}
    if not parts:
        return on_project, on_pipeline
    for object_id, codename in parts[0].union(*parts[1:], all=True):
        action, _, model = codename.rpartition("_")
        if action in ACTIONS:
            target = on_project if model == "project" else on_pipeline
            if object_id in target:
                target[object_id].add(action)
    return on_project, on_pipeline


def _cache(user) -> dict:
    cached = getattr(user, _CACHE_ATTR, None)
    if cached is None or cached[0] != _generation:
        cached = (_generation, {})
        setattr(user, _CACHE_ATTR, cached)
    return cached[1]


class FollowsPipeline(Protocol):
    """An object whose access is its pipeline's (an execution, say: this module does not
    know the executions app, which builds on this one)."""

    @property
    def pipeline(self) -> Pipeline: ...


Target = Project | Pipeline | FollowsPipeline


def _scope(obj: Target) -> tuple[int, int | None, str]:
    """(project id, pipeline id or None, label for messages) of what ``obj``'s access follows."""
    if isinstance(obj, Project):
        return obj.pk, None, f"project {obj.name}"
    pipeline = obj if isinstance(obj, Pipeline) else getattr(obj, "pipeline", None)
    if not isinstance(pipeline, Pipeline):
        raise TypeError(f"no permissions on {type(obj).__name__}")
    return pipeline.project_id, pipeline.pk, f"pipeline {pipeline.identifier}"


def prefetch(user, objects: Iterable[Target]) -> None:
    """Answer ``can`` for all ``objects`` in one or two queries (for lists with per-row buttons).

    Executions should come with ``select_related("pipeline")``.
    """
    if not _is_active(user) or user.is_superuser:
        return
    cache = _cache(user)
    keys = {_scope(obj)[:2] for obj in objects} - set(cache)
    if not keys:
        return
    on_project, on_pipeline = _granted(
        user,
        {project for project, _ in keys},
        {pipeline for _, pipeline in keys if pipeline is not None},
    )
    unseen = [
        project
        for project, pipeline in keys
        if pipeline is None and "view" not in on_project[project]
    ]
    seen_via_pipeline = (
        set(
            pipelines_with(user, "view")
            .filter(project_id__in=unseen)
            .values_list("project_id", flat=True)
        )
        if unseen
        else set()
    )
    for project, pipeline in keys:
        actions = set(on_project[project])
        if pipeline is not None:
            actions |= on_pipeline[pipeline]
        elif project in seen_via_pipeline:
            actions.add("view")  # a grant on one pipeline lets the user see the project itself
        cache[(project, pipeline)] = frozenset(actions)


def actions_on(user, obj: Target) -> frozenset[str]:
    """Every action ``user`` holds on ``obj`` (one query the first time, then remembered)."""
    if not _is_active(user):
        return frozenset()
    if user.is_superuser:
        return frozenset(ACTIONS)
    project_id, pipeline_id, _ = _scope(obj)
    key = (project_id, pipeline_id)
    cache = _cache(user)
    if key not in cache:
        prefetch(user, [obj])
    return cache[key]


def can(user, action: str, obj: Target) -> bool:
    """Whether ``user`` may do ``action`` to ``obj``."""
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}")
    return action in actions_on(user, obj)


def why_not(user, action: str, obj: Target) -> str:
    """The reason shown when ``user`` may not do ``action`` (empty when they may)."""
    if can(user, action, obj):
        return ""
    _, _, label = _scope(obj)
    return f"You need the {ACTION_LABELS[action]} permission on {label}."


def check(user, action: str, obj: Target, *, missing: str = "") -> None:
    """The one guard: returns when ``user`` may do ``action`` to ``obj``; raises ``NotFound``
    when they may not even see it (``missing`` is its message, never confirming that the object
    exists) and ``Forbidden`` naming the missing permission when they may see it."""
    if not can(user, "view", obj):
        raise NotFound(missing or "Not found, or you may not see it.")
    if action != "view" and not can(user, action, obj):
        raise Forbidden(why_not(user, action, obj))


def forget(user=None) -> None:
    """Forget every remembered answer, in this process (called after permissions change).

    Other processes do not need it: each request and each command loads a fresh user.
    """
    global _generation
    _generation += 1
    if user is not None:
        try:
            delattr(user, _CACHE_ATTR)
        except AttributeError:
            pass


def _permissions_changed(**kwargs) -> None:
    forget()


for _model in (
    ProjectUserObjectPermission,
    ProjectGroupObjectPermission,
    PipelineUserObjectPermission,
    PipelineGroupObjectPermission,
):
    post_save.connect(
        _permissions_changed, sender=_model, dispatch_uid=f"stageline-forget-{_model.__name__}"
    )
    post_delete.connect(
        _permissions_changed, sender=_model, dispatch_uid=f"stageline-forget-del-{_model.__name__}"
    )
m2m_changed.connect(
    _permissions_changed,
    sender=get_user_model().groups.through,
    dispatch_uid="stageline-forget-groups",
)
