"""Pages for projects and pipelines: the project list and a pipeline's definition, editor and
version history. (The project page, the pipeline page's Executions tab and the Run dialog show
or start executions: they are ``executions.pipeline_views``, as pipelines never imports
executions.)

Every view loads its object through ``pipelines.loaders`` first: what the user may not see
is a 404, what they may see but not do is a 403 with the reason (``stageline.errors``). Changes go through the
services (``save_pipeline``, ``run_pipeline``), which hold the rules; this module only turns
their refusals into messages next to the field they are about. A view that serves a page
also serves its HTMX fragment (``template#partial``) when asked by htmx.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods
from django.views.decorators.vary import vary_on_headers

from pipelines import permissions
from pipelines.diffs import unified_rows
from pipelines.forms import (
    PipelineEditForm,
    annotate_lines,
)
from pipelines.loaders import load_pipeline
from pipelines.models import PipelineVersion
from pipelines.presenters import pipeline_context
from pipelines.services import save_pipeline
from pipelines.spec.errors import SpecError, SpecErrors
from pipelines.spec.redact import mask_pair, mask_secrets
from stageline.errors import Conflict, Forbidden, Invalid
from stageline.htmx import done, page_or_partial
from stageline.numbers import NumberError, parse_int

# --- what a reader may see of a definition ----------------------------------------------------


def _readable_yaml(version: PipelineVersion | None) -> str:
    """A version's text as readers see it: every Secret literal masked, lines kept."""
    return mask_secrets(version.yaml) if version is not None else ""


# --- pages ------------------------------------------------------------------------------------


@require_GET
@login_required
def home(request: HttpRequest) -> HttpResponse:
    projects = permissions.visible_projects(request.user).select_related("organization")
    return render(request, "pipelines/home.html", {"projects": projects})


@require_GET
@login_required
def pipeline_definition(
    request: HttpRequest, org: str, project: str, identifier: str
) -> HttpResponse:
    pipeline = load_pipeline(request.user, org, project, identifier)
    version = pipeline.current_version
    spec = version.spec if version else None
    context = pipeline_context(request.user, pipeline, "definition") | {
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
                data = request.POST.copy()
                data["base_version"] = str(refusal.extra["current"])
                form.data = data
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
    context = pipeline_context(request.user, pipeline, "definition") | {
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
    context = pipeline_context(request.user, pipeline, "history") | {
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
