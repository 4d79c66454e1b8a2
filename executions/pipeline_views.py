"""The pages of projects and pipelines that show or start executions: the project page (its
pipelines with their last execution, and its executions list), the project's retry insights,
the pipeline page's Executions tab and the Run dialog.

They serve URLs of the pipelines' pages but live in the executions app because they read
executions: executions builds on pipelines, never the other way (tests/test_layering.py). The
pipeline page's other tabs are ``pipelines.views``; both use ``pipelines.presenters`` for the
page head. Objects are loaded through ``pipelines.loaders`` (404 for what the user may not see,
403 with the reason); ``run_pipeline`` holds the rules and its refusals are shown in place.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods
from django.views.decorators.vary import vary_on_headers
from django_htmx.http import trigger_client_event

from executions import bulk, insights, listing
from executions.forms import ExecutionFilterForm, RunForm, parse_filters, run_entries
from executions.models import Status
from executions.retry import FAILED_ONLY
from executions.selection import picker_rows
from executions.services import run_pipeline
from pipelines import permissions
from pipelines.loaders import load_pipeline, load_project
from pipelines.models import Pipeline, Project
from pipelines.presenters import pipeline_context, run_reason
from pipelines.spec.model import PipelineSpec
from stageline.errors import Forbidden, Invalid, NotFound, Refusal
from stageline.htmx import done, page_or_partial, render_dialog
from stageline.numbers import NumberError, parse_int


def _executions_listing(
    request: HttpRequest, *, project: Project, pipeline: Pipeline | None, pipelines=None
):
    """The filter form and the page of executions it selects (or the form's errors)."""
    form = ExecutionFilterForm(request.GET, pipelines=pipelines)
    if not form.is_valid():
        return form, None
    queryset = listing.visible_executions(request.user, project=project, pipeline=pipeline)
    filters = form.filters(pipeline=pipeline)
    queryset = listing.apply_filters(queryset, filters)
    page = listing.page_of(
        queryset,
        before=form.cleaned_data["before"],
        after=form.cleaned_data["after"],
        only_pipelines=listing.pipelines_for_newest_page(request.user, filters, project=project),
    )
    listing.with_durations(page.rows)
    return form, page


# --- pages ------------------------------------------------------------------------------------


@require_GET
@login_required
@vary_on_headers("HX-Request")
def project_detail(request: HttpRequest, org: str, project: str) -> HttpResponse:
    project_obj = load_project(request.user, org, project)
    pipelines = listing.pipelines_with_last_execution(request.user, project_obj)
    form, page = _executions_listing(
        request, project=project_obj, pipeline=None, pipelines=pipelines
    )
    permissions.prefetch(request.user, [project_obj, *pipelines])
    for pipeline in pipelines:
        pipeline.run_reason = run_reason(request.user, pipeline)
        pipeline.last_status_label = (
            Status(pipeline.last_status).label if pipeline.last_status else ""
        )
    context = {
        "project": project_obj,
        "pipelines": pipelines,
        "form": form,
        "page": page,
        "list_url": reverse("project", args=[org, project]),
        "can_manage_access": permissions.can(request.user, "manage_access", project_obj),
        "can_edit_secrets": permissions.can(request.user, "change", project_obj),
        **_bulk_context(request, project_obj, None, page),
    }
    template = page_or_partial(request, "pipelines/project.html", "executions")
    return render(request, template, context, status=200 if page is not None else 400)


@require_GET
@login_required
@vary_on_headers("HX-Request")
def pipeline_detail(request: HttpRequest, org: str, project: str, identifier: str) -> HttpResponse:
    pipeline = load_pipeline(request.user, org, project, identifier)
    form, page = _executions_listing(request, project=pipeline.project, pipeline=pipeline)
    context = pipeline_context(request.user, pipeline, "executions") | {
        "form": form,
        "page": page,
        "list_url": request.path,
        **_bulk_context(request, pipeline.project, pipeline, page),
    }
    template = page_or_partial(request, "pipelines/pipeline.html", "executions")
    return render(request, template, context, status=200 if page is not None else 400)


def _run_context(
    pipeline: Pipeline, spec: PipelineSpec, form: RunForm, error: Refusal | None = None
) -> dict:
    picked = form.picked_stages(offered=True) if form.is_bound else None
    return {
        "pipeline": pipeline,
        "project": pipeline.project,
        "form": form,
        "error": error.message if error else "",
        "stages": picker_rows(spec, picked) if spec.allow_stage_selection else [],
        "version": pipeline.current_version,
        "run_url": reverse(
            "pipeline_run",
            args=[pipeline.project.organization.slug, pipeline.project.slug, pipeline.identifier],
        ),
    }


def _refusal(request: HttpRequest, pipeline: Pipeline, refusal: Refusal) -> HttpResponse:
    """The Run dialog saying why the user may not run (in place of the form)."""
    context = {"pipeline": pipeline, "project": pipeline.project, "reason": refusal.message}
    return render_dialog(request, "pipelines/run.html", context | {"refused": True}, refusal.status)


@require_http_methods(["GET", "POST"])
@login_required
@vary_on_headers("HX-Request")
def pipeline_run(request: HttpRequest, org: str, project: str, identifier: str) -> HttpResponse:
    """The Run dialog (a page without htmx): the runtime inputs form built from the current
    version's ``spec.inputs``. POST starts the run and goes to the new execution's page; bad
    inputs come back in place with each message at its field."""
    try:
        pipeline = load_pipeline(request.user, org, project, identifier, "execute")
    except Forbidden as refusal:
        pipeline = load_pipeline(request.user, org, project, identifier)
        return _refusal(request, pipeline, refusal)
    version = pipeline.current_version
    if version is None:
        return _refusal(request, pipeline, Invalid("This pipeline has no definition yet."))
    spec = version.spec
    status = 200
    error: Refusal | None = None
    entries = run_entries(spec)
    if request.method == "POST":
        form = RunForm(request.POST, entries=entries, spec=spec)
        try:
            execution = run_pipeline(
                pipeline=pipeline,
                user=request.user,
                inputs=form.posted_inputs(),
                stages=form.picked_stages(offered=spec.allow_stage_selection),
            )
        except (Forbidden, NotFound) as refusal:
            return _refusal(request, pipeline, refusal)
        except Refusal as exc:
            form.show_field_errors(exc.field_errors)
            error, status = exc, exc.status
        else:
            target = reverse("execution", args=[execution.pk])
            messages.success(request, f"Started {pipeline.name} #{execution.sequence}.")
            return done(request, target)
    else:
        form = RunForm(entries=entries, spec=spec)
    return render_dialog(
        request, "pipelines/run.html", _run_context(pipeline, spec, form, error), status
    )


# --- bulk retry -------------------------------------------------------------------------------


def _bulk_url(project: Project, pipeline: Pipeline | None) -> str:
    org = project.organization.slug
    if pipeline is not None:
        return reverse("pipeline_bulk_retry", args=[org, project.slug, pipeline.identifier])
    return reverse("project_bulk_retry", args=[org, project.slug])


def _bulk_context(
    request: HttpRequest, project: Project, pipeline: Pipeline | None, page: listing.Page | None
) -> dict:
    """The list's checkboxes (``selectable``: the rows' ids that get one) and bulk retry buttons,
    for a user with Execute on a pipeline of the list only (``bulk_url`` is then set)."""
    if page is None or not bulk.may_retry_in(request.user, project, pipeline):
        return {}
    return {
        "bulk_url": _bulk_url(project, pipeline),
        "bulk_limit": bulk.BULK_LIMIT,
        "selectable": bulk.selectable(request.user, page.rows),
    }


def _posted_ids(values: list[str]) -> list[int]:
    ids: list[int] = []
    for value in values:
        try:
            ids.append(parse_int(value, "ids", minimum=1, maximum=10**18 - 1))
        except NumberError as exc:
            raise Invalid(str(exc), field_errors={"ids": str(exc)}) from None
    return ids


@require_http_methods(["GET", "POST"])
@login_required
@vary_on_headers("HX-Request")
def project_bulk_retry(request: HttpRequest, org: str, project: str) -> HttpResponse:
    """Bulk retry from the project's executions list; see ``_bulk_retry``."""
    return _bulk_retry(request, load_project(request.user, org, project), None)


@require_http_methods(["GET", "POST"])
@login_required
@vary_on_headers("HX-Request")
def pipeline_bulk_retry(
    request: HttpRequest, org: str, project: str, identifier: str
) -> HttpResponse:
    """Bulk retry from a pipeline's executions list; see ``_bulk_retry``."""
    pipeline = load_pipeline(request.user, org, project, identifier)
    return _bulk_retry(request, pipeline.project, pipeline)


def _bulk_retry(request: HttpRequest, project: Project, pipeline: Pipeline | None) -> HttpResponse:
    """Bulk retry from an executions list (``executions.bulk``): GET previews the checked
    executions (``ids``) or all retryable ones matching the list's filters (``all=1``), each
    from its failed stage (``mode``: failed_only or all for a failed parallel group); POST
    retries exactly the previewed ones and reports each, and tells the list to refresh
    (``bulk-retried``). 403 without Execute on any pipeline of the list, whatever is posted."""
    user = request.user
    org = project.organization.slug
    back = (
        reverse("pipeline", args=[org, project.slug, pipeline.identifier])
        if pipeline is not None
        else reverse("project", args=[org, project.slug])
    )
    context: dict = {"project": project, "back": back, "bulk_url": _bulk_url(project, pipeline)}
    data = request.POST if request.method == "POST" else request.GET
    try:
        bulk.check_may_retry_in(user, project, pipeline)
        mode = bulk.check_mode(data.get("mode"))
        if request.method == "POST":
            selection = bulk.bulk_selection(
                user, project, pipeline=pipeline, ids=_posted_ids(data.getlist("ids"))
            )
            reason = data.get("reason", "")[:2000]
            items = bulk.create_bulk_retry(user, selection.executions, mode=mode, reason=reason)
            context |= {"submitted": True}
        else:
            if data.get("all"):
                pipelines = (
                    None
                    if pipeline is not None
                    else permissions.visible_pipelines(user).filter(project=project)
                )
                form = parse_filters(data, pipelines=pipelines)
                selection = bulk.bulk_selection(
                    user, project, pipeline=pipeline, filters=form.filters(pipeline=pipeline)
                )
            else:
                selection = bulk.bulk_selection(
                    user, project, pipeline=pipeline, ids=_posted_ids(data.getlist("ids"))
                )
            items = bulk.plan_bulk_retry(user, selection.executions, mode=mode)
    except Refusal as refusal:
        context |= {"error": refusal.message}
        return render_dialog(request, "executions/bulk_retry.html", context, refusal.status)
    context |= {
        "items": items,
        "selection": selection,
        "planned": [item for item in items if item.outcome == bulk.PLANNED],
        "limit": bulk.BULK_LIMIT,
        "mode": mode or FAILED_ONLY,
        "has_groups": any(item.plan is not None and item.plan.mode for item in items),
    }
    response = render_dialog(request, "executions/bulk_retry.html", context)
    if request.method == "POST":
        trigger_client_event(response, "bulk-retried")
    return response


@require_GET
@login_required
def project_insights(request: HttpRequest, org: str, project: str) -> HttpResponse:
    """Retry insights of the project over ``?days=`` (7, 30 or 90; ``executions.insights``);
    an unknown period answers 400 with the page saying which ones there are."""
    project_obj = load_project(request.user, org, project)
    context: dict = {"project": project_obj, "periods": insights.PERIODS, "here": "Insights"}
    try:
        days = insights.parse_period(request.GET.get("days"))
    except Invalid as refusal:
        context |= {"error": refusal.message, "days": None}
        return render(request, "executions/insights.html", context, status=400)
    figures = insights.project_insights(request.user, project_obj, days)
    context |= {"insights": figures, "days": days}
    return render(request, "executions/insights.html", context)
