"""Pages for projects and pipelines: the project list, a project (its pipelines and executions),
a pipeline (executions, definition, editor, version history) and the Run dialog.

Every view loads its object through ``pipelines.loaders`` first: what the user may not see
is a 404, what they may see but not do is a 403 with the reason (``stageline.errors``). Changes go through the
services (``save_pipeline``, ``run_pipeline``), which hold the rules; this module only turns
their refusals into messages next to the field they are about. A view that serves a page
also serves its HTMX fragment (``template#partial``) when asked by htmx.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import OuterRef, Subquery
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods
from django.views.decorators.vary import vary_on_headers

from executions import listing
from executions.forms import RunForm, run_entries
from executions.models import Execution, Status
from executions.selection import picker_rows
from executions.services import run_pipeline
from pipelines import permissions
from pipelines.diffs import unified_rows
from pipelines.forms import (
    ExecutionFilterForm,
    PipelineEditForm,
    annotate_lines,
)
from pipelines.loaders import load_pipeline, load_project
from pipelines.models import Pipeline, PipelineVersion, Project
from pipelines.services import save_pipeline
from pipelines.spec.errors import SpecError, SpecErrors
from pipelines.spec.model import PipelineSpec
from pipelines.spec.redact import mask_pair, mask_secrets
from stageline.errors import Conflict, Forbidden, Invalid, NotFound, Refusal
from stageline.htmx import done, page_or_partial, render_dialog
from stageline.numbers import NumberError, parse_int


def _pipelines_with_last_execution(user, project: Project) -> list[Pipeline]:
    """The project's pipelines ``user`` may see, each with its last execution's id, number,
    status and time as annotations (one query, whatever the number of pipelines)."""
    last = Execution.objects.filter(pipeline=OuterRef("pk")).order_by("-id")
    return list(
        permissions.visible_pipelines(user)
        .filter(project=project)
        .select_related("project__organization")
        .annotate(
            last_id=Subquery(last.values("id")[:1]),
            last_number=Subquery(last.values("sequence")[:1]),
            last_status=Subquery(last.values("status")[:1]),
            last_at=Subquery(last.values("created_at")[:1]),
        )
        .order_by("name", "identifier")
    )


# --- what a reader may see of a definition ----------------------------------------------------


def _readable_yaml(version: PipelineVersion | None) -> str:
    """A version's text as readers see it: every Secret literal masked, lines kept."""
    return mask_secrets(version.yaml) if version is not None else ""


# --- shared pieces of the pipeline pages ------------------------------------------------------


def _pipeline_context(request: HttpRequest, pipeline: Pipeline, tab: str) -> dict:
    user = request.user
    return {
        "pipeline": pipeline,
        "project": pipeline.project,
        "tab": tab,
        "run_reason": _run_reason(user, pipeline),
        "can_change": permissions.can(user, "change", pipeline),
    }


def _run_reason(user, pipeline: Pipeline) -> str:
    """Why Run is disabled for ``user`` ("" when it is not)."""
    reason = permissions.why_not(user, "execute", pipeline)
    if not reason and pipeline.current_version_id is None:
        reason = "This pipeline has no definition yet."
    return reason


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
def home(request: HttpRequest) -> HttpResponse:
    projects = permissions.visible_projects(request.user).select_related("organization")
    return render(request, "pipelines/home.html", {"projects": projects})


@require_GET
@login_required
@vary_on_headers("HX-Request")
def project_detail(request: HttpRequest, org: str, project: str) -> HttpResponse:
    project_obj = load_project(request.user, org, project)
    pipelines = _pipelines_with_last_execution(request.user, project_obj)
    form, page = _executions_listing(
        request, project=project_obj, pipeline=None, pipelines=pipelines
    )
    permissions.prefetch(request.user, [project_obj, *pipelines])
    for pipeline in pipelines:
        pipeline.run_reason = _run_reason(request.user, pipeline)
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
    }
    template = page_or_partial(request, "pipelines/project.html", "executions")
    return render(request, template, context, status=200 if page is not None else 400)


@require_GET
@login_required
@vary_on_headers("HX-Request")
def pipeline_detail(request: HttpRequest, org: str, project: str, identifier: str) -> HttpResponse:
    pipeline = load_pipeline(request.user, org, project, identifier)
    form, page = _executions_listing(request, project=pipeline.project, pipeline=pipeline)
    context = _pipeline_context(request, pipeline, "executions") | {
        "form": form,
        "page": page,
        "list_url": request.path,
    }
    template = page_or_partial(request, "pipelines/pipeline.html", "executions")
    return render(request, template, context, status=200 if page is not None else 400)


@require_GET
@login_required
def pipeline_definition(
    request: HttpRequest, org: str, project: str, identifier: str
) -> HttpResponse:
    pipeline = load_pipeline(request.user, org, project, identifier)
    version = pipeline.current_version
    spec = version.spec if version else None
    context = _pipeline_context(request, pipeline, "definition") | {
        "version": version,
        "spec": spec,
        "lines": annotate_lines(_readable_yaml(version), [])[0],
    }
    return render(request, "pipelines/definition.html", context)


@require_http_methods(["GET", "POST"])
@login_required
@vary_on_headers("HX-Request")
def pipeline_edit(request: HttpRequest, org: str, project: str, identifier: str) -> HttpResponse:
    """The editor (Edit permission). Saving validates the YAML: errors are shown at their lines
    and nothing changes; a good definition becomes a new version."""
    try:
        pipeline = load_pipeline(request.user, org, project, identifier, "change")
    except Forbidden as refusal:
        pipeline = load_pipeline(request.user, org, project, identifier)
        context = {"pipeline": pipeline, "project": pipeline.project, "reason": refusal.message}
        return render(request, "pipelines/refused.html", context, status=refusal.status)
    current = pipeline.current_version
    current_number = current.number if current else 0
    lines: list[dict] = []
    unplaced: list[SpecError] = []
    status = 200
    if request.method == "POST":
        form = PipelineEditForm(request.POST)
        form.is_valid()
        text = form.cleaned_data.get("yaml", "")
        if form.has_error("yaml"):
            status = 400  # the field already says what is wrong (a NUL character, say)
        else:
            try:
                result = save_pipeline(
                    project=pipeline.project,
                    yaml_text=text,
                    user=request.user,
                    pipeline=pipeline,
                    base_version=form.cleaned_data.get("base_version"),
                )
            except Conflict as refusal:  # saved by someone else meanwhile: keep the text
                form.add_error(None, refusal.message)
                form.data = form.data.copy()
                form.data["base_version"] = str(refusal.extra["current"])
                status = refusal.status
            except Invalid as refusal:
                for field, message in refusal.field_errors.items() or [(None, refusal.message)]:
                    form.add_error(field, message)
                status = refusal.status
            except SpecErrors as exc:
                lines, unplaced = annotate_lines(text, exc.errors)
                count = len(exc.errors)
                form.add_error(
                    None,
                    f"The definition has {count} problem{'s' if count != 1 else ''}; nothing was saved.",
                )
                status = 400
            else:
                if result.created_version:
                    messages.success(
                        request, f"Saved version {result.version.number} of {result.pipeline.name}."
                    )
                else:
                    messages.info(
                        request, "No changes: the definition is the same as the current version."
                    )
                for warning in result.warnings:
                    messages.warning(request, f"Warning, {warning}")
                target = reverse("pipeline_definition", args=[org, project, identifier])
                return done(request, target)
    else:
        form = PipelineEditForm(
            initial={"yaml": _readable_yaml(current), "base_version": current_number}
        )
    context = _pipeline_context(request, pipeline, "definition") | {
        "form": form,
        "lines": lines,
        "unplaced": unplaced,
        "version": current,
    }
    template = page_or_partial(request, "pipelines/edit.html", "editor")
    return render(request, template, context, status=status)


@require_GET
@login_required
def pipeline_history(request: HttpRequest, org: str, project: str, identifier: str) -> HttpResponse:
    """Every version of the definition, and the changes one version made (``?version=N``,
    the newest by default) against the one before it."""
    pipeline = load_pipeline(request.user, org, project, identifier)
    versions = list(
        pipeline.versions.select_related("created_by").defer("yaml").order_by("-number")
    )
    context = _pipeline_context(request, pipeline, "history") | {
        "versions": versions,
        "selected": None,
    }
    if not versions:
        return render(request, "pipelines/history.html", context)
    raw = request.GET.get("version", "")
    numbers = {v.number for v in versions}
    try:
        number = parse_int(raw, "version") if raw else versions[0].number
    except NumberError:
        number = 0
    if number not in numbers:
        context["error"] = (
            f"There is no version '{raw[:20]}' of this pipeline; "
            f"pick one of 1 to {versions[0].number}."
        )
        return render(request, "pipelines/history.html", context, status=400)
    pair = {
        v.number: v
        for v in PipelineVersion.objects.filter(pipeline=pipeline, number__in=[number, number - 1])
    }
    selected, previous = pair[number], pair.get(number - 1)
    context |= {
        "selected": selected,
        "previous": previous,
        "diff": unified_rows(
            *mask_pair(previous.yaml if previous else "", selected.yaml),
            f"version {previous.number}" if previous else "(nothing)",
            f"version {selected.number}",
        ),
    }
    return render(request, "pipelines/history.html", context)


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
