"""The project's Secrets page: Project Admins add, replace and delete the project's secrets.

Values are write-only: the page lists names with who set them and when, and each secret offers
"replace" (a new value) and "delete"; no value is ever sent back, not even to an admin. A user
who may not see the project gets a 404, one who may see it without Edit on the whole project a
403 (``pipelines.loaders.load_project``). The rules live in ``pipelines.secrets``.
"""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from pipelines import secrets
from pipelines.loaders import load_project
from pipelines.models import Project, ProjectSecret
from stageline.errors import Invalid

VALUE_WIDGET = forms.Textarea(
    attrs={"rows": 2, "autocomplete": "off", "spellcheck": "false", "class": "secret-value"}
)


class SecretForm(forms.Form):
    """A new secret: its name and value (the value is never shown again)."""

    name = forms.CharField(label="Name", max_length=64)
    value = forms.CharField(label="Value", strip=False, widget=VALUE_WIDGET)

    def without_value(self) -> SecretForm:
        """The form to show again after a refusal: the value typed is not sent back."""
        self.data = {**dict(self.data.items()), "value": ""}
        return self


class ReplaceForm(forms.Form):
    value = forms.CharField(label="New value", strip=False, widget=VALUE_WIDGET)


def _page(
    request: HttpRequest,
    project: Project,
    *,
    form: SecretForm | None = None,
    error: str = "",
    status: int = 200,
) -> HttpResponse:
    context = {
        "project": project,
        "form": form or SecretForm(),
        "error": error,
        "secrets": ProjectSecret.objects.filter(project=project)
        .select_related("created_by", "updated_by")
        .defer("value")
        .order_by("name"),
    }
    return render(request, "pipelines/secrets.html", context, status=status)


def _back(project: Project) -> HttpResponse:
    return redirect("project_secrets", project.organization.slug, project.slug)


@require_http_methods(["GET", "POST"])
@login_required
def project_secrets(request: HttpRequest, org: str, project: str) -> HttpResponse:
    """The Secrets page (GET) and adding a secret (POST)."""
    project_obj = load_project(request.user, org, project, action="change")
    if request.method == "GET":
        return _page(request, project_obj)
    form = SecretForm(request.POST)
    if not form.is_valid():
        return _page(request, project_obj, form=form.without_value(), status=400)
    name = form.cleaned_data["name"].strip()
    if ProjectSecret.objects.filter(project=project_obj, name=name).exists():
        form.add_error("name", f"A secret named '{name}' exists: replace its value in the list.")
        return _page(request, project_obj, form=form.without_value(), status=400)
    try:
        secrets.set_secret(
            project=project_obj, name=name, value=form.cleaned_data["value"], user=request.user
        )
    except Invalid as exc:
        for field, message in exc.field_errors.items():
            form.add_error(field if field in form.fields else None, message)
        return _page(request, project_obj, form=form.without_value(), error=exc.message, status=400)
    messages.success(request, f"Added secret {name}. Refer to it as <+secrets.{name}>.")
    return _back(project_obj)


@require_POST
@login_required
def replace_secret(request: HttpRequest, org: str, project: str, name: str) -> HttpResponse:
    project_obj = load_project(request.user, org, project, action="change")
    if not ProjectSecret.objects.filter(project=project_obj, name=name).exists():
        return _page(request, project_obj, error=f"There is no secret named '{name}'.", status=404)
    form = ReplaceForm(request.POST)
    if not form.is_valid():
        return _page(request, project_obj, error=f"Enter the new value of {name}.", status=400)
    try:
        secrets.set_secret(
            project=project_obj, name=name, value=form.cleaned_data["value"], user=request.user
        )
    except Invalid as exc:
        return _page(request, project_obj, error=exc.message, status=400)
    messages.success(request, f"Replaced the value of {name}.")
    return _back(project_obj)


@require_POST
@login_required
def delete_secret(request: HttpRequest, org: str, project: str, name: str) -> HttpResponse:
    project_obj = load_project(request.user, org, project, action="change")
    secrets.delete_secret(project=project_obj, name=name, user=request.user)
    messages.success(request, f"Deleted secret {name}.")
    return _back(project_obj)
