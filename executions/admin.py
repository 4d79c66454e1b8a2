"""Admin pages for executions: read-only (executions change only through the engine and its
services), scoped like every admin page to the projects the staff user administers
(``pipelines.admin.ScopedAdmin``). Secret input values are never shown here."""

from __future__ import annotations

from django.contrib import admin

from executions.models import (
    Event,
    Execution,
    LogChunk,
    PendingWait,
    StageRun,
    StepAttempt,
    StepRun,
)
from pipelines.admin import ScopedAdmin


class ReadOnlyAdmin(ScopedAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class StageRunInline(admin.TabularInline):
    model = StageRun
    extra = 0
    fields = readonly_fields = (
        "position",
        "identifier",
        "status",
        "started_at",
        "finished_at",
        "carried_from",
        "error",
    )
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class StepAttemptInline(admin.TabularInline):
    """A step run's earlier attempts (the step run itself holds the latest)."""

    model = StepAttempt
    extra = 0
    fields = readonly_fields = (
        "number",
        "status",
        "error_class",
        "exit_code",
        "error",
        "worker",
        "started_at",
        "finished_at",
        "log_bytes",
    )
    can_delete = False

    def has_view_permission(self, request, obj=None):
        return True  # on the step run's page, which its own (scoped) admin let the user see

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(Execution)
class ExecutionAdmin(ReadOnlyAdmin):
    project_path = "pipeline__project"
    list_display = ["__str__", "status", "triggered_by", "created_at", "attempt", "retry_of"]
    list_filter = ["status"]
    exclude = ["secret_inputs"]
    inlines = [StageRunInline]
    list_select_related = ["pipeline", "triggered_by", "retry_of__pipeline"]


@admin.register(StageRun)
class StageRunAdmin(ReadOnlyAdmin):
    project_path = "execution__pipeline__project"
    list_display = ["__str__", "status", "started_at", "finished_at"]
    list_filter = ["status"]
    list_select_related = ["execution__pipeline"]


@admin.register(StepRun)
class StepRunAdmin(ReadOnlyAdmin):
    project_path = "execution__pipeline__project"
    list_display = ["__str__", "type", "status", "exit_code", "attempts", "worker"]
    list_filter = ["status", "type"]
    list_select_related = ["stage_run__execution__pipeline"]
    inlines = [StepAttemptInline]


@admin.register(StepAttempt)
class StepAttemptAdmin(ReadOnlyAdmin):
    """The earlier attempts of steps (a failure strategy's retries); the latest is the step run."""

    project_path = "step_run__execution__pipeline__project"
    list_display = ["__str__", "status", "error_class", "exit_code", "started_at", "finished_at"]
    list_filter = ["status", "error_class"]
    list_select_related = ["step_run__stage_run__execution__pipeline"]


@admin.register(LogChunk)
class LogChunkAdmin(ReadOnlyAdmin):
    project_path = "step_run__execution__pipeline__project"
    list_display = ["__str__", "attempt", "created_at"]


@admin.register(Event)
class EventAdmin(ReadOnlyAdmin):
    project_path = "execution__pipeline__project"
    list_display = ["at", "execution", "from_status", "to_status", "action", "actor"]
    list_filter = ["action", "to_status"]
    list_select_related = ["execution__pipeline", "actor"]


@admin.register(PendingWait)
class PendingWaitAdmin(ReadOnlyAdmin):
    project_path = "execution__pipeline__project"
    list_display = ["__str__", "execution", "kind", "state", "due_at", "started_at"]
    list_filter = ["kind", "state"]
    list_select_related = ["execution__pipeline"]
