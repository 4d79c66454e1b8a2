"""Admin pages. A staff user sees and edits only the projects they administer (Manage access
on the whole project) and what belongs to them; anything else is a 404, never listed, never
offered in a choice or a filter. Superusers see everything. Role assignments are edited per
project (inline on the project page, or on their own page) and always saved through
``pipelines.roles``, so that the guardian permissions follow. Roles are the only way to grant
project rights: guardian's object-permission pages of Project and Pipeline are for superusers
only (a 403 for anyone else), and what a superuser changes there is audited
(``pipelines.grants``) and listed on the project's Access page."""

from __future__ import annotations

import copy

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import ActionLocation
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.http import Http404, QueryDict
from django.shortcuts import redirect
from guardian.admin import GuardedModelAdmin

from pipelines import grants, permissions, roles, secrets
from pipelines.models import (
    AuditEvent,
    Organization,
    Pipeline,
    PipelineVersion,
    Project,
    ProjectSecret,
    Role,
    RoleAssignment,
)
from stageline.errors import Refusal


def administered_projects(request):
    """Projects whose access the request's user manages (all of them for a superuser)."""
    return permissions.projects_with(request.user, "manage_access")


def _administers_any(request) -> bool:
    if not hasattr(request, "_stageline_administers"):
        request._stageline_administers = administered_projects(request).exists()
    return request._stageline_administers


class ScopedAdmin(admin.ModelAdmin):
    """Limits rows to the projects the staff user administers; ``project_path`` is the lookup
    from a row to its project (``"pk"`` for projects themselves).

    A refusal raised by a service while saving (``pipelines.roles``: the last Project Admin, a
    missing permission) rolls the whole save back; the page is shown again, as it now is, with
    the reason (status 200), like a form error."""

    project_path = "project"

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except Refusal as refusal:
            self.message_user(request, refusal.message, messages.ERROR)
            again = copy.copy(request)
            again.method, again.POST = "GET", QueryDict()
            return super().changeform_view(again, object_id, form_url, extra_context)

    def get_queryset(self, request):
        qs = super().get_queryset(request)
        if request.user.is_superuser:
            return qs
        return qs.filter(
            **{f"{self.project_path}__in": administered_projects(request).values("pk")}
        )

    def get_object(self, request, object_id, from_field=None):
        """A row outside the user's projects is a 404, exactly like a row that does not exist."""
        obj = super().get_object(request, object_id, from_field)
        if obj is None:
            raise Http404(
                f"No {self.opts.verbose_name} with id {object_id} in the projects you administer."
            )
        return obj

    def project_of(self, obj) -> Project:
        if self.project_path == "pk":
            return obj
        for part in self.project_path.split("__"):
            obj = getattr(obj, part)
        return obj

    def _may_manage(self, request, obj=None) -> bool:
        user = request.user
        if not (user.is_active and user.is_staff):
            return False
        if user.is_superuser:
            return True
        if obj is None:
            return _administers_any(request)
        return permissions.can(user, "manage_access", self.project_of(obj))

    def has_module_permission(self, request):
        return self._may_manage(request)

    def has_view_permission(self, request, obj=None):
        return self._may_manage(request, obj)

    def has_change_permission(self, request, obj=None):
        return self._may_manage(request, obj)

    def has_add_permission(self, request):
        return request.user.is_superuser

    def has_delete_permission(self, request, obj=None):
        return request.user.is_superuser


class ProjectListFilter(admin.RelatedOnlyFieldListFilter):
    """The projects of the rows listed (so, administered ones), named in one query."""

    def field_choices(self, field, request, model_admin):
        ids = model_admin.get_queryset(request).values(f"{self.field_path}__pk")
        projects = Project.objects.filter(pk__in=ids).select_related("organization")
        return [(project.pk, str(project)) for project in projects]


@admin.register(Organization)
class OrganizationAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "created_at"]
    search_fields = ["name", "slug"]


# --- role assignments -----------------------------------------------------------------------


def _active_users():
    return get_user_model().objects.filter(is_active=True).order_by(get_user_model().USERNAME_FIELD)


class RoleAssignmentForm(forms.ModelForm):
    """A role for a user or a group, on the whole project or one of its pipelines.

    Who and what an existing assignment applies to cannot change (only its role): remove it
    and add another. Refusals name the problem; nothing is saved until the form is valid."""

    class Meta:
        model = RoleAssignment
        fields = ["project", "user", "group", "pipeline", "role"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if "user" in self.fields:
            self.fields["user"].queryset = _active_users()
        if self.instance.pk:
            for name in ("project", "user", "group", "pipeline"):
                if name in self.fields:
                    self.fields[name].disabled = True

    def _project(self):
        if "project" in self.fields:
            return self.cleaned_data.get("project")
        return self.instance.project if self.instance.project_id else None

    def clean(self):
        data = super().clean()
        if self.instance.pk:
            return data  # only the role changes; pipelines.roles decides whether it may
        user, group, pipeline = data.get("user"), data.get("group"), data.get("pipeline")
        project = self._project()
        if (user is None) == (group is None):
            raise ValidationError("Choose a user or a group (one of them, not both).")
        if project is not None and pipeline is not None and pipeline.project_id != project.pk:
            raise ValidationError(
                {"pipeline": f"Pipeline {pipeline.identifier} is not in project {project.name}."}
            )
        if project is not None:
            found = (
                RoleAssignment.objects.filter(
                    project=project, pipeline=pipeline, user=user, group=group
                )
                .select_related("user", "group", "pipeline")
                .first()
            )
            if found is not None:
                raise ValidationError(
                    f"{roles.describe(found)} already exists: change that assignment's role instead."
                )
        return data

    def validate_constraints(self):
        """``clean`` has already said, in words, what the database constraints would refuse."""


class RoleAssignmentInline(admin.TabularInline):
    model = RoleAssignment
    form = RoleAssignmentForm
    extra = 0
    fields = ["user", "group", "pipeline", "role", "granted_by", "granted_at"]
    readonly_fields = ["granted_by", "granted_at"]

    def get_formset(self, request, obj=None, **kwargs):
        formset = super().get_formset(request, obj, **kwargs)
        # modelform_factory made a fresh form class: narrowing its fields touches nobody else.
        pipelines = (
            Pipeline.objects.filter(project=obj) if obj is not None else Pipeline.objects.none()
        )
        formset.form.base_fields["pipeline"].queryset = pipelines
        return formset

    def get_queryset(self, request):
        return (
            super().get_queryset(request).select_related("user", "group", "pipeline", "granted_by")
        )

    def has_view_permission(self, request, obj=None):
        return obj is None or permissions.can(request.user, "manage_access", obj)

    def has_add_permission(self, request, obj=None):
        return self.has_view_permission(request, obj)

    def has_change_permission(self, request, obj=None):
        return self.has_view_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        return self.has_view_permission(request, obj)


def save_assignment_forms(request, project: Project, formset) -> None:
    """Save an inline formset of role assignments through ``pipelines.roles``.

    New Project Admins first, removals last: a form that hands the project to someone else
    and demotes the old admin in one save passes the last-admin rule at every step. A refusal
    rolls the whole save back (``ScopedAdmin.changeform_view`` shows why)."""
    formset.save(commit=False)  # fills new/changed/deleted_objects for the admin's change message
    changed = [
        form for form in formset.forms if form not in formset.deleted_forms and form.has_changed()
    ]
    changed.sort(key=lambda form: form.instance.role != Role.ADMIN)
    for form in changed:
        obj = form.instance
        if obj.pk:
            roles.change_role(assignment=obj, role=obj.role, changed_by=request.user)
        else:
            created = roles.assign_role(
                project=project,
                role=obj.role,
                user=obj.user,
                group=obj.group,
                pipeline=obj.pipeline,
                granted_by=request.user,
            )
            form.instance = created
    for form in formset.deleted_forms:
        if form.instance.pk:
            roles.revoke_role(assignment=form.instance, revoked_by=request.user)


class SuperusersGrantDirectly(GuardedModelAdmin):
    """guardian's object-permission pages, for superusers only: they write permissions past the
    roles (the Access page lists them, ``pipelines.grants`` audits them as the superuser's).
    Anyone else is refused with a 403, whatever the method: project rights come from roles."""

    def _direct_grants(self, request, view, object_pk, *args):
        self.get_object(request, object_pk)  # outside the user's projects: a 404, as everywhere
        if not request.user.is_superuser:
            raise PermissionDenied(
                "Only superusers may edit object permissions here: give a role on the "
                "project's Access page (or under Role assignments) instead."
            )
        with grants.acting_as(request.user):
            return view(request, object_pk, *args)

    def obj_perms_manage_view(self, request, object_pk):
        return self._direct_grants(request, super().obj_perms_manage_view, object_pk)

    def obj_perms_manage_user_view(self, request, object_pk, user_id):
        return self._direct_grants(request, super().obj_perms_manage_user_view, object_pk, user_id)

    def obj_perms_manage_group_view(self, request, object_pk, group_id):
        return self._direct_grants(
            request, super().obj_perms_manage_group_view, object_pk, group_id
        )


# guardian types change_form_template as str, django-stubs as str | list | None: the stubs of
# two packages disagree, nothing of ours.
@admin.register(Project)
class ProjectAdmin(ScopedAdmin, SuperusersGrantDirectly):  # type: ignore[misc]
    project_path = "pk"
    list_display = ["__str__", "name", "created_at"]
    list_select_related = ["organization"]
    search_fields = ["name", "slug"]
    inlines = [RoleAssignmentInline]

    def get_readonly_fields(self, request, obj=None):
        if obj is not None and not request.user.is_superuser:
            return ["organization"]  # moving a project to another organization is for superusers
        return []

    def save_formset(self, request, form, formset, change):
        """Role assignments go through ``pipelines.roles`` so guardian permissions follow."""
        if formset.model is not RoleAssignment:
            return super().save_formset(request, form, formset, change)
        save_assignment_forms(request, form.instance, formset)


class PipelineVersionInline(admin.TabularInline):
    model = PipelineVersion
    extra = 0
    fields = readonly_fields = ("number", "sha256", "created_by", "created_at")
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(Pipeline)
class PipelineAdmin(ScopedAdmin, SuperusersGrantDirectly):  # type: ignore[misc]  # as ProjectAdmin
    list_display = ["identifier", "name", "project", "current_version", "created_at"]
    list_filter = [("project", ProjectListFilter)]
    list_select_related = [
        "project__organization",
        "current_version__pipeline__project__organization",
    ]
    search_fields = ["identifier", "name"]
    inlines = [PipelineVersionInline]

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return ["current_version", "last_sequence"]
        # The identifier is the YAML's; the project decides who may see its executions.
        return ["project", "identifier", "current_version", "last_sequence"]


@admin.register(PipelineVersion)
class PipelineVersionAdmin(ScopedAdmin):
    project_path = "pipeline__project"
    list_display = ["pipeline", "number", "sha256", "created_by", "created_at"]
    list_select_related = ["pipeline__project__organization", "created_by"]
    readonly_fields = ["pipeline", "number", "yaml", "sha256", "created_by", "created_at"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(RoleAssignment)
class RoleAssignmentAdmin(ScopedAdmin):
    form = RoleAssignmentForm
    list_display = ["project", "pipeline", "user", "group", "role", "granted_by", "granted_at"]
    list_filter = ["role", ("project", ProjectListFilter)]
    list_select_related = [
        "project__organization",
        "pipeline__project__organization",
        "user",
        "group",
        "granted_by",
    ]
    readonly_fields = ["granted_by", "granted_at"]
    actions = ["revoke_selected"]

    def has_add_permission(self, request):
        return self._may_manage(request)

    def has_delete_permission(self, request, obj=None):
        return self._may_manage(request, obj)

    def get_actions(self, request, action_location=ActionLocation.CHANGE_LIST):
        actions = super().get_actions(request, action_location=action_location)
        actions.pop("delete_selected", None)  # a bulk delete would skip pipelines.roles
        return actions

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)
        if not request.user.is_superuser:
            projects = administered_projects(request)
            form.base_fields["project"].queryset = projects
            form.base_fields["pipeline"].queryset = Pipeline.objects.filter(
                project__in=projects.values("pk")
            )
        return form

    def save_model(self, request, obj, form, change):
        if change:
            roles.change_role(assignment=obj, role=obj.role, changed_by=request.user)
        else:
            created = roles.assign_role(
                project=obj.project,
                role=obj.role,
                user=obj.user,
                group=obj.group,
                pipeline=obj.pipeline,
                granted_by=request.user,
            )
            obj.pk, obj.granted_by, obj.granted_at = (
                created.pk,
                created.granted_by,
                created.granted_at,
            )

    def delete_model(self, request, obj):
        roles.revoke_role(assignment=obj, revoked_by=request.user)

    def delete_view(self, request, object_id, extra_context=None):
        try:
            return super().delete_view(request, object_id, extra_context)
        except Refusal as refusal:  # nothing was deleted: back to the assignment, with the reason
            self.message_user(request, refusal.message, messages.ERROR)
            return redirect("admin:pipelines_roleassignment_change", object_id)

    @admin.action(description="Revoke the selected role assignments", permissions=["delete"])
    def revoke_selected(self, request, queryset):
        chosen = list(queryset.select_related("project", "pipeline", "user", "group"))
        try:
            with transaction.atomic():  # all of them or none
                for assignment in chosen:
                    roles.revoke_role(assignment=assignment, revoked_by=request.user)
        except Refusal as refusal:
            self.message_user(request, f"Nothing was revoked: {refusal.message}", messages.ERROR)
            return
        self.message_user(request, f"Revoked {len(chosen)} role assignment(s).", messages.SUCCESS)


class ProjectSecretForm(forms.ModelForm):
    """Name and a new value; the stored value is never shown ("set" / "replace")."""

    new_value = forms.CharField(
        label="Value",
        required=False,
        strip=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Write-only: the value is encrypted and never shown again. On an existing "
        "secret, a value replaces the stored one; blank keeps it.",
    )

    class Meta:
        model = ProjectSecret
        fields = ["project", "name"]

    def clean(self):
        data = super().clean()
        if self.instance.pk is None and not data.get("new_value"):
            self.add_error("new_value", "Enter the secret's value.")
        return data


@admin.register(ProjectSecret)
class ProjectSecretAdmin(ScopedAdmin):
    """The project secret store; every change goes through ``pipelines.secrets`` (audited)."""

    form = ProjectSecretForm
    list_display = ["project", "name", "value_state", "updated_by", "updated_at"]
    list_filter = [("project", ProjectListFilter)]
    list_select_related = ["project__organization", "updated_by"]
    readonly_fields = ["value_state", "created_by", "created_at", "updated_by", "updated_at"]
    actions = ["delete_secrets"]

    @admin.display(description="Value")
    def value_state(self, obj) -> str:
        return "set" if obj.pk else "—"

    def get_readonly_fields(self, request, obj=None):
        fixed = ["project", "name"] if obj is not None else []  # references name it: no rename
        return [*fixed, *self.readonly_fields]

    def has_add_permission(self, request):
        return self._may_manage(request)

    def has_delete_permission(self, request, obj=None):
        return self._may_manage(request, obj)

    def get_actions(self, request, action_location=ActionLocation.CHANGE_LIST):
        actions = super().get_actions(request, action_location=action_location)
        actions.pop("delete_selected", None)  # a bulk delete would skip the audit trail
        return actions

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)
        if not request.user.is_superuser and "project" in form.base_fields:
            form.base_fields["project"].queryset = administered_projects(request)
        return form

    def save_model(self, request, obj, form, change):
        value = form.cleaned_data.get("new_value")
        if change and not value:
            return  # nothing to change: the name and project are fixed
        saved, _ = secrets.set_secret(
            project=obj.project, name=obj.name, value=value, user=request.user
        )
        obj.pk = saved.pk

    def delete_model(self, request, obj):
        secrets.delete_secret(project=obj.project, name=obj.name, user=request.user)

    @admin.action(description="Delete the selected secrets", permissions=["delete"])
    def delete_secrets(self, request, queryset):
        chosen = list(queryset.select_related("project"))
        for secret in chosen:
            secrets.delete_secret(project=secret.project, name=secret.name, user=request.user)
        self.message_user(request, f"Deleted {len(chosen)} secret(s).", messages.SUCCESS)


@admin.register(AuditEvent)
class AuditEventAdmin(ScopedAdmin):
    list_display = ["at", "actor", "project", "action", "detail"]
    list_filter = ["action"]
    list_select_related = ["actor", "project__organization"]
    readonly_fields = ["at", "actor", "project", "action", "detail"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
