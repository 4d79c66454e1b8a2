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
    """The audit trail: each status move and each recorded action (an operator's, a failure
    strategy's or an intervention's, SPEC §9) with who (a person; none for the engine or a rule,
    which the message names), when, what, why and the comment. Filter by action to see, say,
    every ``strategy.ignored``: by a rule (no person) or answering an intervention (the person,
    with their comment)."""

    project_path = "execution__pipeline__project"
    list_display = [
        "at",
        "execution",
        "step",
        "action",
        "who",
        "from_status",
        "to_status",
        "short_message",
        "short_comment",
    ]
    list_filter = ["action", "to_status"]
    search_fields = ["message", "comment"]
    list_select_related = ["execution__pipeline", "actor", "step_run__stage_run", "stage_run"]
    fields = readonly_fields = (
        "at",
        "execution",
        "stage_run",
        "step_run",
        "action",
        "actor",
        "from_status",
        "to_status",
        "message",
        "comment",
    )

    @admin.display(description="stage / step")
    def step(self, obj: Event) -> str:
        if obj.step_run is not None:
            return f"{obj.step_run.stage_run.identifier}.{obj.step_run.identifier}"
        return obj.stage_run.identifier if obj.stage_run is not None else ""

    @admin.display(description="who", ordering="actor__username")
    def who(self, obj: Event) -> str:
        if obj.actor is not None:
            return obj.actor.username
        return "failure strategy" if obj.action.startswith(("strategy.", "intervention.")) else ""

    @admin.display(description="message")
    def short_message(self, obj: Event) -> str:
        return obj.message if len(obj.message) <= 120 else obj.message[:119] + "…"

    @admin.display(description="comment")
    def short_comment(self, obj: Event) -> str:
        return obj.comment if len(obj.comment) <= 80 else obj.comment[:79] + "…"


@admin.register(PendingWait)
class PendingWaitAdmin(ReadOnlyAdmin):
    project_path = "execution__pipeline__project"
    list_display = ["__str__", "execution", "kind", "state", "due_at", "started_at"]
    list_filter = ["kind", "state"]
    list_select_related = ["execution__pipeline"]
