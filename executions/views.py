"""Execution pages. The object is loaded through ``pipelines.permissions`` (404 if hidden)."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from executions.models import Execution
from pipelines import permissions


def get_execution_for_user(user, pk: int) -> Execution:
    found = (
        permissions.visible_executions(user)
        .select_related("pipeline__project__organization", "version", "triggered_by")
        .filter(pk=pk)
        .first()
    )
    if found is None:
        raise Http404("No such execution.")
    return found


@require_GET
@login_required
def execution_detail(request: HttpRequest, pk: int) -> HttpResponse:
    execution = get_execution_for_user(request.user, pk)
    stage_runs = execution.stage_runs.prefetch_related("step_runs").select_related("carried_from__execution")
    return render(request, "executions/detail.html", {"execution": execution, "stage_runs": stage_runs})
