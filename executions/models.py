"""Executions and what they are made of: stage runs, step runs, log chunks and events.

Statuses, their sets, the worst-status order and the table of allowed moves live in
``executions.states``; every status change goes through ``executions.transitions``, the only
writer, which checks the table and appends an ``Event``. A retry never modifies the execution it
retries, apart from the ``retry_of`` link that the new execution holds.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from executions.states import RETRYABLE, TERMINAL, Status, is_terminal
from pipelines import permissions
from stageline.crypto import SealedValues


def _seconds_between(started_at: datetime, finished_at: datetime | None) -> float:
    """How long something ran: until it finished, or until now while it runs."""
    return ((finished_at or timezone.now()) - started_at).total_seconds()


class SecretValuesField(models.JSONField):
    """Secret values by name, stored as Fernet tokens (``stageline.crypto``), never as text.

    Read back as ``SealedValues``: names are listed without a key, a value is decrypted when it
    is read. Any mapping assigned to the field is encrypted when the row is saved.
    """

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> Any:
        data = super().from_db_value(value, expression, connection)
        return SealedValues(data) if isinstance(data, dict) else data

    def get_prep_value(self, value: Any) -> Any:
        if isinstance(value, Mapping):
            value = SealedValues.seal(value).tokens
        return super().get_prep_value(value)

    # dumpdata / loaddata carry the tokens (never the values), marked so that loading them
    # does not encrypt them a second time.
    SEALED = "__sealed__"

    def value_to_string(self, obj: Any) -> Any:
        value = self.value_from_object(obj)
        return {self.SEALED: value.tokens} if isinstance(value, SealedValues) else value

    def to_python(self, value: Any) -> Any:
        if isinstance(value, dict) and set(value) == {self.SEALED}:
            return SealedValues(value[self.SEALED])
        return super().to_python(value)


class ExecutionQuerySet(models.QuerySet):
    def visible_to(self, user) -> ExecutionQuerySet:
        """The executions of the pipelines ``user`` may see (the one visible-executions query)."""
        if not (user is not None and user.is_authenticated and user.is_active):
            return self.none()
        if user.is_superuser:
            return self
        # A list of ids, not a sub-select: the permission sub-selects cost the planner 7-20 ms
        # on every list query; the ids cost one small query.
        return self.filter(
            pipeline__in=list(permissions.visible_pipelines(user).values_list("id", flat=True))
        )

    def for_pipeline(self, pipeline) -> ExecutionQuerySet:
        return self.filter(pipeline=pipeline)

    def chain_of(self, execution: Execution) -> ExecutionQuerySet:
        root_id = execution.root_id
        return self.filter(Q(id=root_id) | Q(chain_root_id=root_id)).order_by("attempt", "id")


class Execution(models.Model):
    """One run of a pipeline version: who started it, with which inputs, and how it ended.

    A retry is a new execution on the same version whose ``retry_of`` points at the one it
    retries (unique: exactly one retry per execution) and whose ``chain_root`` points at the
    chain's original execution (the retry window is measured from there).
    """

    pipeline = models.ForeignKey(
        "pipelines.Pipeline", on_delete=models.PROTECT, related_name="executions"
    )
    version = models.ForeignKey(
        "pipelines.PipelineVersion", on_delete=models.PROTECT, related_name="executions"
    )
    sequence = models.PositiveIntegerField()
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.QUEUED)
    triggered_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    inputs = models.JSONField(
        default=dict, blank=True, help_text="Runtime input values (no secrets)."
    )
    secret_inputs = SecretValuesField(
        default=dict, blank=True, editable=False, help_text="Secret runtime inputs, encrypted."
    )
    error = models.TextField(blank=True)

    retry_of = models.OneToOneField(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="retry"
    )
    chain_root = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="chain_members"
    )
    attempt = models.PositiveSmallIntegerField(default=1)
    resumed_from = models.CharField(max_length=80, blank=True)
    retry_mode = models.CharField(max_length=12, blank=True)
    reason = models.TextField(blank=True)
    changed_inputs = models.JSONField(default=list, blank=True)
    rerun_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="reruns"
    )
    selected_stages = models.JSONField(default=list, blank=True)

    objects = ExecutionQuerySet.as_manager()

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["pipeline", "sequence"], name="execution_sequence_unique"
            ),
        ]
        indexes = [
            models.Index(fields=["pipeline", "-id"], name="execution_pipeline_id_idx"),
            models.Index(fields=["status", "-id"], name="execution_status_id_idx"),
            models.Index(fields=["triggered_by", "-id"], name="execution_who_id_idx"),
            models.Index(fields=["created_at"], name="execution_created_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.pipeline.identifier} #{self.sequence}"

    @property
    def root_id(self) -> int:
        return self.chain_root_id or self.id

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def is_retryable_status(self) -> bool:
        return self.status in RETRYABLE

    @property
    def duration_seconds(self) -> float | None:
        if not self.started_at:
            return None
        return _seconds_between(self.started_at, self.finished_at)


class StageRun(models.Model):
    """One stage inside an execution. A carried-over stage points at the run it came from."""

    execution = models.ForeignKey(Execution, on_delete=models.CASCADE, related_name="stage_runs")
    identifier = models.CharField(max_length=64)
    name = models.CharField(max_length=200)
    group_index = models.PositiveIntegerField()
    position = models.PositiveIntegerField()
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.NOT_STARTED)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    outputs = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    queue = models.CharField(max_length=64, blank=True)
    carried_from = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="carried_into"
    )

    class Meta:
        ordering = ["execution_id", "position"]
        constraints = [
            models.UniqueConstraint(fields=["execution", "identifier"], name="stage_run_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.execution} / {self.identifier}"

    @property
    def is_carried_over(self) -> bool:
        return self.carried_from_id is not None

    @property
    def duration_seconds(self) -> float | None:
        if not self.started_at:
            return None
        return _seconds_between(self.started_at, self.finished_at)


class StepRun(models.Model):
    """One step of a stage run: its process, its lease while running, its result.

    ``lease_expires_at`` is pushed forward by the worker's heartbeat while the step runs; the
    reaper fails a RUNNING step whose lease lapsed ("worker lost"). ``attempts`` counts claims
    (QUEUED → RUNNING): 1 for a step that ran; a redelivered task finds it claimed and stops.

    The row holds the step's latest attempt (``attempt_number``): when a failure strategy's
    retry starts another one, the attempt that failed is archived as a ``StepAttempt`` and the
    per-attempt columns start afresh (``executions.strategies.retry_step``).
    """

    stage_run = models.ForeignKey(StageRun, on_delete=models.CASCADE, related_name="step_runs")
    execution = models.ForeignKey(Execution, on_delete=models.CASCADE, related_name="step_runs")
    identifier = models.CharField(max_length=64)
    name = models.CharField(max_length=200)
    type = models.CharField(max_length=20)
    position = models.PositiveIntegerField()
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.NOT_STARTED)
    queued_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    exit_code = models.IntegerField(null=True, blank=True)
    outputs = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    # The class of the failure (SPEC §9: script, timeout, worker_lost …) when a failure
    # strategy handled it; "" otherwise (``StepRun.failure_class`` tells it from the status).
    error_class = models.CharField(max_length=20, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    worker = models.CharField(max_length=200, blank=True)
    pid = models.IntegerField(null=True, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    deadline = models.DateTimeField(
        null=True, blank=True, help_text="When a waiting approval expires."
    )
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    comment = models.TextField(blank=True)
    log_bytes = models.PositiveBigIntegerField(default=0)
    log_truncated = models.BooleanField(default=False)
    carried_from = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="carried_into"
    )

    class Meta:
        ordering = ["stage_run_id", "position"]
        constraints = [
            models.UniqueConstraint(fields=["stage_run", "identifier"], name="step_run_unique"),
        ]
        indexes = [
            models.Index(fields=["status", "lease_expires_at"], name="step_run_status_lease_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.stage_run} / {self.identifier}"

    @property
    def log_closed(self) -> bool:
        """Every byte of the log is stored: the step has ended and no worker writes it any more.

        A worker holds a running step's lease; it is released when the runner's result is
        stored, when the reaper fails the step (worker lost), and, when the step was ended by
        someone else (an abort), once the worker has stored the last lines (the kill notice)
        (``engine.run_step``). A lease that lapsed means that no worker writes it either.
        """
        if not is_terminal(self.status):
            return False
        return self.lease_expires_at is None or self.lease_expires_at <= timezone.now()

    @property
    def attempt_number(self) -> int:
        """Which attempt this row holds: the claims so far (``attempts``), or the next one while
        the step waits QUEUED to be claimed (a first run, or a retry's next attempt)."""
        if self.status == Status.QUEUED:
            return self.attempts + 1
        return max(self.attempts, 1)

    @property
    def failure_class(self) -> str:
        """The class of this attempt's failure ("" if it did not fail): the one a failure
        strategy recorded, else what its status says (SPEC §9's classes)."""
        if self.error_class:
            return self.error_class
        if self.status == Status.REJECTED:
            return "approval_rejected"
        if self.status == Status.EXPIRED:
            return "approval_expired" if self.type == "Approval" else "timeout"
        if self.status == Status.FAILED:
            return "worker_lost" if self.error.startswith("worker lost") else "script"
        return ""

    @property
    def log_source(self) -> StepRun:
        """The step run whose log this one shows (a carried-over step shows the original's)."""
        return self.carried_from or self  # None when carried_from_id is: no query

    @property
    def duration_seconds(self) -> float | None:
        if not self.started_at:
            return None
        return _seconds_between(self.started_at, self.finished_at)


class StepAttempt(models.Model):
    """An earlier attempt of a step (SPEC §9): archived, with its own result and times, when a
    failure strategy's retry (or an intervention's Retry) queues the next attempt. The latest
    attempt is the ``StepRun`` itself; each attempt's log is the step's ``LogChunk`` rows of
    its ``number``."""

    step_run = models.ForeignKey(StepRun, on_delete=models.CASCADE, related_name="earlier_attempts")
    number = models.PositiveSmallIntegerField()
    status = models.CharField(max_length=20, choices=Status.choices)
    exit_code = models.IntegerField(null=True, blank=True)
    error_class = models.CharField(max_length=20, blank=True)
    error = models.TextField(blank=True)
    worker = models.CharField(max_length=200, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    log_bytes = models.PositiveBigIntegerField(default=0)
    log_truncated = models.BooleanField(default=False)

    class Meta:
        ordering = ["step_run_id", "number"]
        constraints = [
            models.UniqueConstraint(fields=["step_run", "number"], name="step_attempt_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.step_run} / attempt {self.number}"

    @property
    def duration_seconds(self) -> float | None:
        if not self.started_at:
            return None
        return _seconds_between(self.started_at, self.finished_at)


class PendingWaitQuerySet(models.QuerySet):
    def due(self, now: datetime) -> PendingWaitQuerySet:
        """What the scheduler starts now: pending waits whose time has come, oldest first."""
        return self.filter(state=PendingWait.State.PENDING, due_at__lte=now).order_by("due_at")

    def claim(self, wait: PendingWait, now: datetime) -> bool:
        """Pending → started, a compare-and-set: True for the one caller that won, so a wait is
        started once however many schedulers (or restarts) pick it up."""
        return bool(
            self.filter(pk=wait.pk, state=PendingWait.State.PENDING).update(
                state=PendingWait.State.STARTED, started_at=now
            )
        )

    def cancel(self, **where: Any) -> int:
        """Pending → cancelled for the waits ``where`` selects (an abort, an answer)."""
        return self.filter(state=PendingWait.State.PENDING, **where).update(
            state=PendingWait.State.CANCELLED
        )


class PendingWait(models.Model):
    """A durable wait of a failure strategy (SPEC §9): a retry's interval before the next
    attempt, or a manual intervention's timeout. The row, not a worker's timer, holds the
    due time, so a worker or scheduler restart loses nothing; the scheduler (``engine.reap``)
    starts what is due, claiming each row with a compare-and-set so nothing starts twice; an
    abort cancels the execution's pending waits."""

    class Kind(models.TextChoices):
        RETRY = "retry", "Retry interval"
        INTERVENTION = "intervention", "Intervention timeout"

    class State(models.TextChoices):
        PENDING = "pending", "Pending"
        STARTED = "started", "Started"
        CANCELLED = "cancelled", "Cancelled"

    execution = models.ForeignKey(Execution, on_delete=models.CASCADE, related_name="waits")
    step_run = models.ForeignKey(StepRun, on_delete=models.CASCADE, related_name="waits")
    kind = models.CharField(max_length=12, choices=Kind.choices)
    due_at = models.DateTimeField()
    state = models.CharField(max_length=12, choices=State.choices, default=State.PENDING)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    # An intervention's action when nobody answers in time (the rule's ``on_timeout``).
    on_timeout = models.CharField(max_length=20, blank=True)

    objects = PendingWaitQuerySet.as_manager()

    class Meta:
        ordering = ["due_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["step_run"],
                condition=Q(state="pending"),
                name="pending_wait_one_per_step",
            ),
        ]
        indexes = [models.Index(fields=["state", "due_at"], name="pending_wait_due_idx")]

    def __str__(self) -> str:
        return (
            f"{self.get_kind_display()} of step run {self.step_run_id} due {self.due_at:%H:%M:%S}"
        )


class LogChunk(models.Model):
    """A piece of a step's output, stored as it is produced (secrets already masked). Each
    attempt of the step (``StepRun.attempts`` when it was claimed) has a log of its own, its
    chunks numbered from 0."""

    step_run = models.ForeignKey(StepRun, on_delete=models.CASCADE, related_name="log_chunks")
    attempt = models.PositiveSmallIntegerField(default=1)
    seq = models.PositiveIntegerField()
    text = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["step_run_id", "attempt", "seq"]
        constraints = [
            models.UniqueConstraint(
                fields=["step_run", "attempt", "seq"], name="log_chunk_attempt_unique"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.step_run_id}:{self.attempt}:{self.seq}"


class Event(models.Model):
    """A status transition or an operator action: the history and audit trail of an execution.

    ``action`` names what happened (``created``, ``retried``, ``aborted``, ``approved``; failure
    strategies, SPEC §9: ``strategy.retry`` / ``retry_started`` / ``ignored`` /
    ``marked_as_success`` / ``marked_as_failure`` / ``aborted``, ``intervention.requested`` /
    ``timed_out``); ``actor`` is the person (an intervention's answer is the ``strategy.*``
    event of the move it makes, with the person and their ``comment``), None for the engine or
    a rule, which ``message`` then names ("step failure strategy at line 12")."""

    execution = models.ForeignKey(Execution, on_delete=models.CASCADE, related_name="events")
    stage_run = models.ForeignKey(
        StageRun, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    step_run = models.ForeignKey(
        StepRun, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    from_status = models.CharField(max_length=20, blank=True)
    to_status = models.CharField(max_length=20, blank=True)
    action = models.CharField(max_length=40, blank=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    message = models.TextField(blank=True)
    # What the person wrote with their answer (an intervention, an approval: the comment that
    # the transition writes on the step), apart from the message that says what happened and why. A default in the database too: the engine's
    # one-statement handover (``transitions.finish_and_claim_next``) inserts events in SQL.
    comment = models.TextField(blank=True, default="", db_default="")
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["execution_id", "id"]

    def __str__(self) -> str:
        subject = self.step_run_id and "step" or self.stage_run_id and "stage" or "execution"
        return f"{self.execution_id} {subject} {self.from_status}→{self.to_status} {self.action}"


# --- retry insights rollup (executions.insights) -----------------------------------------------


class InsightDay(models.Model):
    """What the executions of one pipeline created in one UTC hour (``hour`` 0-23), or on one
    UTC day (``hour`` 24), add to the retry insights, once they have ended: per stage
    (``identifier``) the stage runs and the retries from it, and per pipeline (``identifier``
    ``""``) the retries and the run time they saved. Written by ``executions.rollup.record_ended``
    in the transaction that ends an execution (one upsert), rebuilt by ``manage.py
    backfill_insights``; read by the insights page for the whole hours and days of the period
    (docs/retry.md "Insights", docs/performance.md)."""

    pipeline = models.ForeignKey(
        "pipelines.Pipeline", on_delete=models.CASCADE, related_name="+", db_index=False
    )
    identifier = models.CharField(max_length=64, blank=True)  # "": the pipeline as a whole
    day = models.DateField()  # the UTC day the execution was created
    hour = models.PositiveSmallIntegerField(default=24)  # its UTC hour; 24: the whole day's row
    # The least name and position seen in that hour or day; NULL when no stage run gave one (MIN skips
    # NULL, where "" would win).
    name = models.CharField(max_length=200, null=True, blank=True)  # noqa: DJ001
    position = models.PositiveIntegerField(null=True, blank=True)
    runs = models.PositiveIntegerField(default=0)
    failures = models.PositiveIntegerField(default=0)
    retries = models.PositiveIntegerField(default=0)
    retries_succeeded = models.PositiveIntegerField(default=0)
    flaky_passes = models.PositiveIntegerField(default=0)
    saved_seconds = models.FloatField(default=0.0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["pipeline", "day", "hour", "identifier"], name="insight_day_hour_unique"
            ),
        ]
        # The whole days of a period, without stepping over their hours' rows (24 a day) and
        # without reading the table: every column the page reads is in the index (as keys:
        # SQLite has no INCLUDE).
        indexes = [
            models.Index(
                fields=[
                    "pipeline",
                    "day",
                    "hour",
                    "identifier",
                    "name",
                    "position",
                    "runs",
                    "failures",
                    "retries",
                    "retries_succeeded",
                    "flaky_passes",
                    "saved_seconds",
                ],
                condition=Q(hour=24),
                name="insight_day_whole_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.pipeline_id} {self.identifier or '(pipeline)'} {self.day}"


class InsightRecovery(models.Model):
    """One recovered chain (its original, created on ``day`` at ``hour`` UTC, ended badly; a
    later attempt ended SUCCESS): the seconds from the original's end to that success, once for
    the pipeline (``identifier`` ``""``) and once per stage that failed in the original. Medians
    cannot be summed: the page takes them over these rows. Written with ``InsightDay``."""

    pipeline = models.ForeignKey(
        "pipelines.Pipeline", on_delete=models.CASCADE, related_name="+", db_index=False
    )
    identifier = models.CharField(max_length=64, blank=True)
    day = models.DateField()
    hour = models.PositiveSmallIntegerField(default=0)
    seconds = models.FloatField()

    class Meta:
        indexes = [
            models.Index(fields=["pipeline", "day"], name="insight_recovery_day_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.pipeline_id} {self.identifier or '(pipeline)'} {self.day}: {self.seconds}"
