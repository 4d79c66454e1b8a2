"""Admin pages. Staff users see only the projects they administer (``manage_access``);
superusers see everything. Project and Pipeline have guardian's object-permission pages."""

from __future__ import annotations

from django.contrib import admin
from guardian.admin import GuardedModelAdmin

from pipelines import permissions, roles
from pipelines.models import AuditEvent, Organization, Pipeline, PipelineVersion, Project, RoleAssignment


def administered_projects(request):
    return permissions.projects_with(request.user, "manage_access")


class ScopedAdmin(admin.ModelAdmin):
    """Limits rows to the projects the staff user administers; ``project_path`` says how."""

    project_path = "project"

    def get_queryset(self, request):
        qs = super().get_queryset(request)
        if request.user.is_superuser:
            return qs
        return qs.filter(**{f"{self.project_path}__in": administered_projects(request)})

    def has_module_permission(self, request):
        return request.user.is_active and request.user.is_staff

    def has_view_permission(self, request, obj=None):
        return request.user.is_superuser or (request.user.is_staff and administered_projects(request).exists())

    def has_change_permission(self, request, obj=None):
        return self.has_view_permission(request, obj)

    def has_add_permission(self, request):
        return request.user.is_superuser

    def has_delete_permission(self, request, obj=None):
        return request.user.is_superuser


@admin.register(Organization)
class OrganizationAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "created_at"]
    search_fields = ["name", "slug"]


class RoleAssignmentInline(admin.TabularInline):
    model = RoleAssignment
    extra = 0
    fields = ["user", "group", "pipeline", "role", "granted_by", "granted_at"]
    readonly_fields = ["granted_by", "granted_at"]
    autocomplete_fields = ["user"]

    def has_add_permission(self, request, obj=None):
        return True

    def has_change_permission(self, request, obj=None):
        return True

    def has_delete_permission(self, request, obj=None):
        return True


@admin.register(Project)
class ProjectAdmin(ScopedAdmin, GuardedModelAdmin):
    project_path = "pk"
    list_display = ["__str__", "name", "created_at"]
    search_fields = ["name", "slug"]
    inlines = [RoleAssignmentInline]

    def get_queryset(self, request):
        qs = admin.ModelAdmin.get_queryset(self, request)
        if request.user.is_superuser:
            return qs
        return qs.filter(pk__in=administered_projects(request).values("pk"))

    def save_formset(self, request, form, formset, change):
        """Role assignments go through ``pipelines.roles`` so guardian permissions follow."""
        if formset.model is not RoleAssignment:
            return super().save_formset(request, form, formset, change)
        instances = formset.save(commit=False)
        for obj in formset.deleted_objects:
            roles.revoke_role(assignment=obj, revoked_by=request.user)
        for obj in instances:
            if obj.pk:
                roles.change_role(assignment=obj, role=obj.role, changed_by=request.user)
            else:
                roles.assign_role(
                    project=form.instance, role=obj.role, user=obj.user, group=obj.group,
                    pipeline=obj.pipeline, granted_by=request.user,
                )
        formset.save_m2m()


class PipelineVersionInline(admin.TabularInline):
    model = PipelineVersion
    extra = 0
    fields = ["number", "sha256", "created_by", "created_at"]
    readonly_fields = fields
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Pipeline)
class PipelineAdmin(ScopedAdmin, GuardedModelAdmin):
    list_display = ["identifier", "name", "project", "current_version", "created_at"]
    list_filter = ["project"]
    search_fields = ["identifier", "name"]
    readonly_fields = ["current_version", "last_sequence"]
    inlines = [PipelineVersionInline]


@admin.register(PipelineVersion)
class PipelineVersionAdmin(ScopedAdmin):
    project_path = "pipeline__project"
    list_display = ["pipeline", "number", "sha256", "created_by", "created_at"]
    readonly_fields = ["pipeline", "number", "yaml", "sha256", "created_by", "created_at"]

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(RoleAssignment)
class RoleAssignmentAdmin(ScopedAdmin):
    list_display = ["project", "pipeline", "user", "group", "role", "granted_by", "granted_at"]
    list_filter = ["role", "project"]
    readonly_fields = ["granted_by", "granted_at"]

    def has_add_permission(self, request):
        return request.user.is_superuser or administered_projects(request).exists()

    def has_delete_permission(self, request, obj=None):
        return self.has_view_permission(request, obj)

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "project" and not request.user.is_superuser:
            kwargs["queryset"] = administered_projects(request)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def save_model(self, request, obj, form, change):
        if change:
            roles.change_role(assignment=obj, role=obj.role, changed_by=request.user)
        else:
            created = roles.assign_role(
                project=obj.project, role=obj.role, user=obj.user, group=obj.group,
                pipeline=obj.pipeline, granted_by=request.user,
            )
            obj.pk = created.pk

    def delete_model(self, request, obj):
        roles.revoke_role(assignment=obj, revoked_by=request.user)


@admin.register(AuditEvent)
class AuditEventAdmin(ScopedAdmin):
    list_display = ["at", "actor", "project", "action", "detail"]
    list_filter = ["action"]
    readonly_fields = ["at", "actor", "project", "action", "detail"]

    def has_change_permission(self, request, obj=None):
        return False
