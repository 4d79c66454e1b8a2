"""The project's Access page: who holds which role, and (for Project Admins) adding, changing
and removing role assignments.

The project comes from ``pipelines.loaders.load_project``: a user who may not see it gets a
404; one who may see it without Manage access gets a 403 that says so. Every change goes
through ``pipelines.roles``, which holds the rules (Manage access, and a project always keeps a
project-wide Project Admin); a refused change re-renders the page with the reason and the
refusal's status, and changes nothing. This module holds no permission logic of its own.

The page lists every effective grant: the role assignments, and any permission given outside
roles (``pipelines.grants``: a superuser's direct object permission), which an admin can
remove here. Revoking a role removes only what the role granted.
"""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import Group
from django.db.models import F
from django.db.models.functions import Coalesce
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST

from pipelines import grants, permissions, roles
from pipelines.loaders import load_project
from pipelines.models import Pipeline, Project, Role, RoleAssignment
from stageline.errors import Forbidden, NotFound, Refusal
from stageline.htmx import done, is_htmx, render_dialog

REMOVE_TEMPLATE = "pipelines/access_remove.html"
ROLE_ERROR = {"invalid_choice": "Choose one of the roles: " + ", ".join(Role.labels) + "."}


class AddRoleForm(forms.Form):
    """Give a user or a group (by name) a role on the whole project or on one of its pipelines."""

    kind = forms.ChoiceField(
        label="Give the role to a",
        choices=[("user", "User"), ("group", "Group")],
        initial="user",
        widget=forms.RadioSelect,
        error_messages={"invalid_choice": "Choose User or Group."},
    )
    name = forms.CharField(label="Username or group name", max_length=150)
    role = forms.ChoiceField(choices=Role.choices, error_messages=ROLE_ERROR)
    pipeline = forms.ModelChoiceField(
        label="Applies to",
        queryset=Pipeline.objects.none(),
        required=False,
        empty_label="The whole project",
        error_messages={
            "invalid_choice": "Choose the whole project or one of this project's pipelines."
        },
    )

    def __init__(self, *args, project: Project, **kwargs):
        super().__init__(*args, **kwargs)
        self.project = project
        field = self.fields["pipeline"]
        assert isinstance(field, forms.ModelChoiceField)
        field.queryset = Pipeline.objects.filter(project=project).order_by("identifier")

    def clean(self):
        data = super().clean()
        kind, name = data.get("kind"), (data.get("name") or "").strip()
        if not kind or not name:
            return data
        data["user"] = data["group"] = None
        if kind == "user":
            data["user"] = get_user_model().objects.filter(username=name, is_active=True).first()
            if data["user"] is None:
                self.add_error("name", f"No active user is named '{name}'.")
                return data
        else:
            data["group"] = Group.objects.filter(name=name).first()
            if data["group"] is None:
                self.add_error("name", f"No group is named '{name}'.")
                return data
        if self.errors:
            return data
        existing = (
            RoleAssignment.objects.filter(
                project=self.project,
                pipeline=data.get("pipeline"),
                user=data["user"],
                group=data["group"],
            )
            .select_related("user", "group", "pipeline")
            .first()
        )
        if existing is not None:
            raise forms.ValidationError(
                f"{roles.describe(existing)} already exists: change its role in the list instead."
            )
        return data


class ChangeRoleForm(forms.Form):
    role = forms.ChoiceField(choices=Role.choices, error_messages=ROLE_ERROR)


def _assignment(project: Project, assignment_id: int) -> RoleAssignment:
    found = (
        RoleAssignment.objects.select_related("user", "group", "pipeline", "project")
        .filter(project=project, pk=assignment_id)
        .first()
    )
    if found is None:
        raise NotFound("No such role assignment in this project.")
    return found


def _page(
    request: HttpRequest,
    project: Project,
    *,
    form: AddRoleForm | None = None,
    error: str = "",
    denied: str = "",
    status: int = 200,
) -> HttpResponse:
    context: dict = {"project": project, "denied": denied, "error": error}
    if not denied:
        context.update(
            form=form or AddRoleForm(project=project),
            assignments=RoleAssignment.objects.filter(project=project)
            .select_related("user", "group", "pipeline", "granted_by")
            .order_by(
                F("pipeline__identifier").asc(nulls_first=True),
                Coalesce("user__username", "group__name"),
            ),
            direct_grants=grants.direct_grants(project),
            kept=roles.kept_admins(project),
            role_choices=Role.choices,
            role_help=[
                (Role(role).label, [permissions.ACTION_LABELS[a] for a in actions])
                for role, actions in roles.ROLE_ACTIONS.items()
            ],
        )
    return render(request, "pipelines/access.html", context, status=status)


def _administered(
    request: HttpRequest, org: str, project: str
) -> tuple[Project, HttpResponse | None]:
    """The project (``NotFound`` when the user may not see it) and, when they may not manage
    its access, the page saying so (403)."""
    try:
        return load_project(request.user, org, project, "manage_access"), None
    except Forbidden as refusal:
        found = load_project(request.user, org, project)
        return found, _page(request, found, denied=refusal.message, status=refusal.status)


def _refused(request: HttpRequest, project: Project, refusal: Refusal) -> HttpResponse:
    """The page again with the reason a role function gave (nothing was changed)."""
    if isinstance(refusal, Forbidden):
        return _page(request, project, denied=refusal.message, status=refusal.status)
    return _page(request, project, error=refusal.message, status=refusal.status)


def _after_change(request: HttpRequest, project: Project) -> HttpResponse:
    """Back to the Access page, or to what is left for a user who just gave up their own access."""
    if permissions.can(request.user, "manage_access", project):
        return redirect("project_access", project.organization.slug, project.slug)
    if permissions.can(request.user, "view", project):
        return redirect("project", project.organization.slug, project.slug)
    return redirect("home")


@require_http_methods(["GET", "POST"])
@login_required
def project_access(request: HttpRequest, org: str, project: str) -> HttpResponse:
    """The Access page (GET) and adding a role assignment (POST)."""
    project_obj, refused = _administered(request, org, project)
    if refused is not None:
        return refused
    if request.method == "GET":
        return _page(request, project_obj)
    form = AddRoleForm(request.POST, project=project_obj)
    if not form.is_valid():
        return _page(request, project_obj, form=form, status=400)
    data = form.cleaned_data
    try:
        assignment = roles.assign_role(
            project=project_obj,
            role=data["role"],
            user=data["user"],
            group=data["group"],
            pipeline=data["pipeline"],
            granted_by=request.user,
        )
    except Refusal as refusal:
        return _refused(request, project_obj, refusal)
    messages.success(request, f"Added {roles.describe(assignment)}.")
    return redirect(
        reverse("project_access", args=[project_obj.organization.slug, project_obj.slug])
    )


@require_POST
@login_required
def change_assignment(
    request: HttpRequest, org: str, project: str, assignment_id: int
) -> HttpResponse:
    """Give an existing assignment another role."""
    project_obj, refused = _administered(request, org, project)
    if refused is not None:
        return refused
    assignment = _assignment(project_obj, assignment_id)
    form = ChangeRoleForm(request.POST)
    if not form.is_valid():
        return _page(request, project_obj, error=str(form.errors["role"][0]), status=400)
    role = form.cleaned_data["role"]
    if role == assignment.role:
        messages.info(request, f"Nothing changed: {roles.describe(assignment)} already.")
        return redirect("project_access", project_obj.organization.slug, project_obj.slug)
    try:
        assignment = roles.change_role(assignment=assignment, role=role, changed_by=request.user)
    except Refusal as refusal:
        return _refused(request, project_obj, refusal)
    messages.success(request, f"Changed to {roles.describe(assignment)}.")
    return _after_change(request, project_obj)


@require_http_methods(["GET", "POST"])
@login_required
def remove_assignment(
    request: HttpRequest, org: str, project: str, assignment_id: int
) -> HttpResponse:
    """Asks first (GET: a confirmation dialog saying what the user or group loses, or why the
    role cannot go), then removes the assignment and the permissions its role granted (POST)."""
    project_obj, refused = _administered(request, org, project)
    if refused is not None:
        return refused
    assignment = _assignment(project_obj, assignment_id)
    description = roles.describe(assignment)
    context = {
        "project": project_obj,
        "assignment": assignment,
        "description": description,
        "loses": [permissions.ACTION_LABELS[a] for a in roles.ROLE_ACTIONS[assignment.role]],
        "error": roles.kept_admins(project_obj).get(assignment.pk, ""),
    }
    if request.method == "GET":
        return render_dialog(request, REMOVE_TEMPLATE, context)
    try:
        roles.revoke_role(assignment=assignment, revoked_by=request.user)
    except Refusal as refusal:
        if is_htmx(request):
            context["error"] = refusal.message
            return render_dialog(request, REMOVE_TEMPLATE, context, status=refusal.status)
        return _refused(request, project_obj, refusal)
    messages.success(request, f"Removed {description}.")
    after = _after_change(request, project_obj)
    return done(request, after["Location"]) if is_htmx(request) else after


@require_POST
@login_required
def remove_direct_grant(request: HttpRequest, org: str, project: str) -> HttpResponse:
    """Remove a permission given outside roles (all its actions on one target)."""
    project_obj, refused = _administered(request, org, project)
    if refused is not None:
        return refused
    try:
        removed = grants.remove_direct_grant(
            project=project_obj, key=request.POST.get("grant", ""), removed_by=request.user
        )
    except Forbidden as refusal:
        return _refused(request, project_obj, refusal)
    messages.success(
        request, f"Removed {', '.join(removed.actions)} of {removed.who} on {removed.where}."
    )
    return _after_change(request, project_obj)
