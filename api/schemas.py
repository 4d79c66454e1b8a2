"""The JSON shapes of the API (pydantic models through ``ninja.Schema``): what each endpoint
takes and answers. The OpenAPI schema at /api/v1/schema is generated from these and from the
endpoints' signatures, so it cannot drift from the code."""

from __future__ import annotations

from datetime import datetime

from ninja import Schema
from pydantic import Field, field_validator
from pydantic_core import PydanticCustomError

from executions.services import INTERVENTION_ANSWERS

# A runtime input value as JSON may carry it; the service validates it against the pipeline.
InputValue = str | int | float | bool | None


class Error(Schema):
    detail: str = Field(description="What was wrong, in words a person reads.")
    errors: dict[str, str] = Field(
        default_factory=dict, description="Messages by field (400), when the problem has a place."
    )


class Project(Schema):
    organization: str
    slug: str
    name: str
    url: str = Field(description="The project's page.")


class LastExecution(Schema):
    id: int
    sequence: int
    status: str
    created_at: datetime


class Pipeline(Schema):
    identifier: str
    name: str
    version: int | None = Field(description="Number of the current version (None: no YAML yet).")
    last_execution: LastExecution | None
    can_run: bool = Field(description="Whether the caller may run it (Execute permission).")
    url: str


class ExecutionSummary(Schema):
    id: int
    pipeline: str = Field(description="org/project/pipeline")
    sequence: int
    status: str = Field(description="e.g. INTERVENTION_WAITING: a failed step waits for a person")
    status_label: str = Field(description="The status as the page names it.")
    triggered_by: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    duration_seconds: float | None
    attempt: int
    retry_of: int | None
    retried_as: int | None
    rerun_of: int | None
    url: str = Field(description="The execution's page.")


class ExecutionRow(ExecutionSummary):
    needs_intervention: bool = Field(
        description="A step waits for an intervention (also while other parallel stages run)."
    )


class ExecutionPage(Schema):
    items: list[ExecutionRow]
    older: int | None = Field(description="Pass as ?before= for the next (older) page.")
    newer: int | None = Field(description="Pass as ?after= for the previous (newer) page.")


class Intervention(Schema):
    due_at: datetime | None = Field(description="When ``on_timeout`` applies if nobody answers.")
    on_timeout: str | None = Field(
        description="What happens then (ignore, mark_as_success, mark_as_failure, abort); null "
        "once the timeout has begun to apply."
    )
    answer_url: str = Field(description="POST an answer here (``InterventionIn``).")


class Attempt(Schema):
    number: int = Field(description="1 for the first run of the step.")
    status: str
    status_label: str
    exit_code: int | None
    error_class: str = Field(
        description="script, timeout, worker_lost, approval_rejected, approval_expired; '' if it "
        "did not fail."
    )
    error: str
    worker: str = Field(description="Where it ran (host:pid).")
    started_at: datetime | None
    finished_at: datetime | None
    duration_seconds: float | None
    log_bytes: int
    latest: bool = Field(description="The step's current attempt (the others are archived).")
    log_url: str = Field(description="This attempt's log.")


class Step(Schema):
    id: int
    identifier: str
    name: str
    type: str
    status: str = Field(description="e.g. IGNORED (failed, a rule said go on: counts as success)")
    status_label: str = Field(description="The status as the page names it.")
    started_at: datetime | None
    finished_at: datetime | None
    exit_code: int | None
    error: str
    attempts: int = Field(description="How many times a worker has claimed it.")
    attempts_planned: int = Field(
        description="How many attempts it gets: 1 + the count of the retry rule that decides "
        "its failure (as the page's 'attempt 2 of 4')."
    )
    attempt_history: list[Attempt] = Field(
        description="Each attempt with its own result, earliest first; the last is the current."
    )
    next_attempt_at: datetime | None = Field(
        description="A retry waiting for its interval: when its next attempt starts."
    )
    intervention: Intervention | None = Field(
        description="Set while the step waits for intervention (INTERVENTION_WAITING)."
    )
    decided_by: str | None = Field(description="Who answered its approval or intervention.")
    decided_at: datetime | None
    comment: str = Field(description="The comment of that answer.")
    carried_from_execution: int | None = Field(
        description="The execution whose result this carried-over step shows."
    )
    log_bytes: int
    log_url: str


class Stage(Schema):
    identifier: str
    name: str
    group_index: int
    status: str
    status_label: str
    started_at: datetime | None
    finished_at: datetime | None
    error: str
    carried_from_execution: int | None
    steps: list[Step]


class ChainLink(Schema):
    id: int
    sequence: int
    attempt: int
    status: str


class ExecutionDetail(ExecutionSummary):
    version: int
    error: str
    inputs: dict[str, str] = Field(description="Runtime input values (secrets are not shown).")
    secret_inputs: list[str] = Field(description="Names of the secret inputs that were set.")
    resumed_from: str
    retry_mode: str
    reason: str
    changed_inputs: list[str]
    stages: list[Stage]
    chain: list[ChainLink] = Field(description="The retry chain, oldest first.")


class StepLog(Schema):
    step: int
    attempt: int = Field(description="Whose log this is: pass ?attempt=N for an earlier one.")
    latest: bool = Field(description="It is the step's current attempt.")
    offset: int = Field(description="Byte offset of ``text`` in the log.")
    next_offset: int = Field(description="Pass as ?after= to read on.")
    text: str
    complete: bool = Field(description="Every byte of the log is stored (the step has ended).")
    more: bool = Field(description="More bytes are stored after ``next_offset`` already.")
    truncated: bool = Field(description="The middle of an over-long log was dropped.")
    exit_code: int | None
    outputs: dict[str, str] = Field(description="The step's outputs, secrets masked.")


class RunIn(Schema):
    inputs: dict[str, InputValue] = Field(default_factory=dict)
    stages: list[str] | None = Field(
        default=None,
        description="Stages to run (pipelines with allow_stage_selection); all if null.",
    )


class RetryIn(Schema):
    from_stage: str = Field(default="", description="A stage or parallel group identifier.")
    mode: str | None = Field(default=None, description="failed_only (default) or all")
    inputs: dict[str, InputValue] = Field(default_factory=dict)
    reason: str = ""


class RerunIn(Schema):
    inputs: dict[str, InputValue] = Field(default_factory=dict)
    stages: list[str] | None = None


class ApprovalIn(Schema):
    stage: str = Field(default="", description="The waiting stage; may be left out when one waits.")
    comment: str = ""


class InterventionIn(Schema):
    action: str = Field(
        description="What happens to the failed step.",
        json_schema_extra={"enum": list(INTERVENTION_ANSWERS)},
    )
    comment: str = Field(default="", description="Kept with the answer (at most 2000 characters).")

    @field_validator("action")
    @classmethod
    def _an_answer(cls, value: str) -> str:
        if value not in INTERVENTION_ANSWERS:
            raise PydanticCustomError(
                "answer",
                "'{value}' is not an answer: use one of {answers}",
                {"value": value[:40], "answers": ", ".join(INTERVENTION_ANSWERS)},
            )
        return value


class InterventionAnswer(Schema):
    execution: ExecutionSummary
    step: Step = Field(description="The step as it is after the answer.")


class StageOption(Schema):
    key: str
    name: str
    stages: list[str]
    status: str
    member_statuses: dict[str, str]
    parallel: bool
    duration_seconds: float | None
    notes: dict[str, str] = Field(
        default_factory=dict,
        description="Why a member succeeded when a failure strategy decided it, by stage "
        "('failure ignored', 'marked as success').",
    )


class CarriedStage(Schema):
    identifier: str
    name: str
    status: str
    from_sequence: int
    from_execution: int
    duration_seconds: float | None
    note: str = Field(
        "",
        description="'failure ignored' / 'marked as success': a failure strategy made it succeed.",
    )


class RunAgainStage(Schema):
    identifier: str
    name: str
    steps: list[str]
    previous_status: str
    note: str = Field("", description="As the carried stages' note, for its previous run.")


class PlanInput(Schema):
    key: str
    type: str
    stage: str | None
    value: str = Field(description="The previous value ('' for a secret).")
    secret: bool
    has_value: bool
    editable: bool
    reason: str = Field(description="Why it may not change.")


class RetryPlan(Schema):
    execution: int
    options: list[StageOption]
    selected: str | None
    mode: str
    carried: list[CarriedStage]
    run_again: list[RunAgainStage]
    inputs: list[PlanInput]
    time_saved_seconds: float
    pipeline_changed: bool
    diff: str


class BulkFilter(Schema):
    pipeline: str = ""
    status: str = ""
    who: str = ""
    since: str = Field(default="", description="YYYY-MM-DD")
    until: str = Field(default="", description="YYYY-MM-DD, included")


class BulkRetryIn(Schema):
    ids: list[int] | None = Field(default=None, description="Executions to retry (at most 50).")
    filter: BulkFilter | None = Field(
        default=None, description="Or: all retryable executions matching it (newest 50)."
    )
    mode: str | None = Field(
        default=None, description="a failed parallel group: failed_only (default) or all"
    )
    reason: str = ""


class BulkItem(Schema):
    execution: int
    pipeline: str
    sequence: int
    status: str
    outcome: str = Field(description="planned | cannot | created | already_retried")
    reason: str = Field(description="Why it cannot be (or was not) retried.")
    from_stage: str | None
    mode: str
    carried: list[str]
    run_again: list[str]
    retry: int | None = Field(description="The retry made (or the one made first).")


class BulkRetry(Schema):
    items: list[BulkItem]
    capped: bool = Field(description="The filter matched more than 50: the newest 50 were taken.")
    missing: list[int] = Field(description="Ids not found (or not visible).")
