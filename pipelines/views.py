"""Pages for projects and pipelines. Every view loads its object through
``pipelines.permissions`` first: what the user may not see is a 404."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from executions.models import Execution
from pipelines import permissions
from pipelines.models import Pipeline, Project


def get_project_for_user(user, org: str, project: str) -> Project:
    found = (
        permissions.visible_projects(user)
        .select_related("organization")
        .filter(organization__slug=org, slug=project)
        .first()
    )
    if found is None:
        raise Http404("No such project.")
    return found


def get_pipeline_for_user(user, org: str, project: str, identifier: str) -> Pipeline:
    found = (
        permissions.visible_pipelines(user)
        .select_related("project__organization", "current_version")
        .filter(project__organization__slug=org, project__slug=project, identifier=identifier)
        .first()
    )
    if found is None:
        raise Http404("No such pipeline.")
    return found


@require_GET
@login_required
def home(request: HttpRequest) -> HttpResponse:
    projects = permissions.visible_projects(request.user).select_related("organization")
    return render(request, "pipelines/home.html", {"projects": projects})


@require_GET
@login_required
def project_detail(request: HttpRequest, org: str, project: str) -> HttpResponse:
    project_obj = get_project_for_user(request.user, org, project)
    pipelines = permissions.visible_pipelines(request.user).filter(project=project_obj)
    executions = (
        Execution.objects.filter(pipeline__in=pipelines.values("id"))
        .select_related("pipeline", "triggered_by")
        .order_by("-id")[:50]
    )
    return render(
        request,
        "pipelines/project.html",
        {"project": project_obj, "pipelines": pipelines, "executions": executions},
    )


@require_GET
@login_required
def pipeline_detail(request: HttpRequest, org: str, project: str, identifier: str) -> HttpResponse:
    pipeline = get_pipeline_for_user(request.user, org, project, identifier)
    executions = pipeline.executions.select_related("triggered_by").order_by("-id")[:50]
    return render(request, "pipelines/pipeline.html", {"pipeline": pipeline, "executions": executions})
