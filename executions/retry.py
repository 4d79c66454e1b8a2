"""Retry a failed execution from the failed stage or any earlier one (SPEC §4), and Rerun (§5).

``plan_retry`` answers, without writing anything, everything the dialog and the command show:
whether retry is possible (and the exact reason when not), the stage options, and for a chosen
option what is carried over, what runs again, which inputs may be edited, the time saved and
whether the pipeline changed since. ``create_retry`` re-checks all of it on the server and
creates the new execution in one transaction; a database constraint (``Execution.retry_of`` is
unique) makes sure that an execution is retried at most once, however many operators click.

Rules written down where the SPEC is silent:
- Stage options run from the first group up to and including the first group that did not
  succeed (SKIPPED counts as succeeded). Each option is a serial stage or a whole parallel group;
  a member stage's identifier selects its group.
- The retry keeps a rerun's stage selection: a stage that was not selected stays SKIPPED.
- "Time saved" is the sum of the carried-over stages' run times (compute time not paid again).
- Failure strategies (SPEC §9): a stage whose step ended IGNORED (failure ignored) or SUCCESS
  "marked as success by strategy" ended SUCCESS, so it counts as succeeded: it is carried over
  like any other, and the plan says why it succeeded (``StageOption.notes``,
  ``CarriedStage.note``). The retry's stages that run again start with fresh attempt budgets
  (their steps' ``attempts`` start at 0: ``services._copy_runs`` does not copy them), and no
  wait or intervention of the retried execution is carried over.
- Secret inputs are never sent back to a form; a blank secret field keeps the previous value,
  and a frozen secret sent again with its stored value counts as unchanged.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser, User
from django.db import IntegrityError, transaction
from django.db.models import Count, Q
from django.utils import timezone

from executions.inputs import InputErrors, check_value, validate_inputs
from executions.models import Event, Execution, StageRun, StepRun
from executions.services import create_execution, run_pipeline
from executions.states import ACTIVE, RETRYABLE, SUCCEEDED, TERMINAL, Status, worst
from executions.strategies import MARKED_AS_SUCCESS
from executions.transitions import record
from pipelines import permissions
from pipelines.diffs import unified_diff
from pipelines.spec.model import PipelineSpec, Variable
from pipelines.spec.redact import mask_pair
from stageline.errors import Conflict, Forbidden, Invalid, Refusal

FAILED_ONLY = "failed_only"
ALL = "all"
MODES = (FAILED_ONLY, ALL)

# Who asks: request.user (maybe anonymous: the guards refuse it) or a command's user.
AnyUser = AbstractBaseUser | AnonymousUser


class AlreadyRetried(Conflict):
    """The execution has a retry already (maybe created a moment ago by someone else)."""

    def __init__(self, message: str, *, retry: Execution):
        super().__init__(message, retry_id=retry.pk)
        self.retry = retry


@dataclass
class StageOption:
    key: str  # a serial stage's identifier, or a parallel group's ("parallel_2")
    name: str
    stages: list[str]
    status: str
    member_statuses: dict[str, str]
    parallel: bool
    duration_seconds: float | None
    # Why a member that succeeded did so, when a failure strategy decided it ("failure
    # ignored", "marked as success"), by stage identifier.
    notes: dict[str, str] = field(default_factory=dict)

    @property
    def note(self) -> str:
        """The strategies' notes of the option ("failure ignored"; "eu: marked as success" for
        a member of a parallel group)."""
        if not self.parallel:
            return self.notes.get(self.key, "")
        return "; ".join(f"{key}: {note}" for key, note in self.notes.items())

    @property
    def has_failed_member(self) -> bool:
        return self.parallel and any(s not in SUCCEEDED for s in self.member_statuses.values())

    @property
    def status_label(self) -> str:
        return Status(self.status).label


@dataclass
class CarriedStage:
    identifier: str
    name: str
    status: str
    from_sequence: int
    from_execution_id: int
    duration_seconds: float | None
    note: str = ""  # "failure ignored", "marked as success": a failure strategy made it succeed


@dataclass
class RunAgainStage:
    identifier: str
    name: str
    steps: list[str]
    previous_status: str
    note: str = ""  # as CarriedStage.note, for its previous run


@dataclass
class InputField:
    variable: Variable
    value: str  # the prefilled value ("" for a secret)
    editable: bool
    reason: str = ""  # why it is read-only
    has_value: bool = False  # a secret that was set

    @property
    def key(self) -> str:
        return self.variable.key

    @property
    def is_secret(self) -> bool:
        return self.variable.is_secret


@dataclass
class RetryPlan:
    execution: Execution
    allowed: bool
    reason: str = ""
    latest: Execution | None = None
    options: list[StageOption] = field(default_factory=list)
    selected: StageOption | None = None
    mode: str = ""
    carried: list[CarriedStage] = field(default_factory=list)
    run_again: list[RunAgainStage] = field(default_factory=list)
    inputs: list[InputField] = field(default_factory=list)
    time_saved_seconds: float = 0.0
    pipeline_changed: bool = False
    diff: str = ""
    # The version declares failure strategies (SPEC §9): the dialog says how a retry treats them.
    strategies: bool = False
    # The execution's stage runs by identifier, as read for the plan (those of a terminal
    # execution do not change any more: the submit carries them over from here).
    runs: dict[str, StageRun] = field(default_factory=dict, repr=False)
    # Why not, typed (Forbidden without Execute, else Conflict); None when allowed.
    refusal: Refusal | None = None

    @property
    def editable_inputs(self) -> list[InputField]:
        return [f for f in self.inputs if f.editable]

    @property
    def frozen_inputs(self) -> list[InputField]:
        return [f for f in self.inputs if not f.editable]


def wall_clock_seconds(runs: Iterable[StageRun]) -> float:
    """How much time on the clock the runs took: the union of their [start, end] spans, so
    parallel stages count once and the wait between two executions (a carried-over stage of an
    earlier attempt) counts not at all. "Time saved" by a retry is this for its carried part."""
    spans = sorted(
        (run.started_at, run.finished_at) for run in runs if run.started_at and run.finished_at
    )
    total = 0.0
    current: tuple[datetime, datetime] | None = None
    for start, end in spans:
        if current is not None and start <= current[1]:
            current = (current[0], max(current[1], end))
            continue
        if current is not None:
            total += (current[1] - current[0]).total_seconds()
        current = (start, end)
    if current is not None:
        total += (current[1] - current[0]).total_seconds()
    return total


IGNORED_NOTE = "failure ignored"
MARKED_NOTE = "marked as success"


def strategy_notes(runs: Iterable[StageRun]) -> dict[str, str]:
    """Per stage identifier, why a stage that succeeded did so when a failure strategy (or an
    intervention's answer) decided it: a step ended IGNORED ("failure ignored") or SUCCESS
    marked as success ("marked as success"); both, joined. One query; stages without such a
    step are absent. A carried-over step keeps its status and error, so a note holds along a
    chain of retries."""
    by_pk = {run.pk: run.identifier for run in runs if run.status in SUCCEEDED}
    if not by_pk:
        return {}
    found: dict[str, set[str]] = {}
    steps = StepRun.objects.filter(stage_run__in=list(by_pk)).filter(
        Q(status=Status.IGNORED) | Q(status=Status.SUCCESS, error=MARKED_AS_SUCCESS)
    )
    for stage_run_id, status in steps.values_list("stage_run_id", "status"):
        note = IGNORED_NOTE if status == Status.IGNORED else MARKED_NOTE
        found.setdefault(by_pk[stage_run_id], set()).add(note)
    order = (IGNORED_NOTE, MARKED_NOTE)
    return {
        identifier: ", ".join(n for n in order if n in notes) for identifier, notes in found.items()
    }


# --- why not ------------------------------------------------------------------------------


def chain_latest(execution: Execution) -> Execution:
    return Execution.objects.chain_of(execution).select_related("pipeline").last() or execution


def retry_blocker(execution: Execution, user: AnyUser) -> tuple[str, Execution | None]:
    """The reason retry is not possible ("" if it is), and the chain's latest attempt when the
    execution was retried already (the page links there)."""
    number = f"#{execution.sequence}"
    if execution.status in ACTIVE:
        return f"Execution {number} is still running: wait for it to end or abort it.", None
    if execution.status == Status.SUCCESS:
        return (
            f"Execution {number} succeeded: only a failed, aborted, expired or rejected execution "
            "can be retried. Use Rerun to run it again.",
            None,
        )
    if execution.status not in RETRYABLE:
        return (
            f"Execution {number} is {execution.get_status_display().lower()} and cannot be retried.",
            None,
        )
    retry = Execution.objects.filter(retry_of=execution).first()
    if retry is not None:
        latest = chain_latest(execution)
        return (
            f"Execution {number} was already retried as #{retry.sequence}; the latest attempt is "
            f"#{latest.sequence}.",
            latest,
        )
    days = settings.STAGELINE_RETRY_WINDOW_DAYS
    root = execution.chain_root or execution
    if root.created_at < timezone.now() - timedelta(days=days):
        return (
            f"The original execution #{root.sequence} started on {root.created_at:%Y-%m-%d}, more than "
            f"{days} days ago: it can no longer be retried. Use Rerun instead.",
            None,
        )
    if not permissions.can(user, "execute", execution):
        return permissions.why_not(user, "execute", execution), None
    return "", None


# --- the plan -----------------------------------------------------------------------------


def stage_options(
    execution: Execution, spec: PipelineSpec, runs: dict[str, StageRun]
) -> list[StageOption]:
    options: list[StageOption] = []
    for group in spec.groups:
        members = {
            s.identifier: runs[s.identifier].status for s in group.stages if s.identifier in runs
        }
        durations = [runs[s].duration_seconds or 0.0 for s in members if runs[s].started_at]
        option = StageOption(
            key=group.identifier,
            name=group.name,
            stages=[s.identifier for s in group.stages],
            status=worst(members.values()) if members else Status.NOT_STARTED,
            member_statuses=members,
            parallel=group.parallel,
            duration_seconds=max(durations) if durations else None,
        )
        options.append(option)
        if any(status not in SUCCEEDED for status in members.values()):
            break
    return options


def _find_option(options: list[StageOption], spec: PipelineSpec, key: str) -> StageOption:
    for option in options:
        if key == option.key or key in option.stages:
            return option
    if spec.stage(key) is None and spec.group(key) is None:
        raise Invalid(
            f"Stage '{key}' is not in this pipeline.", field_errors={"from_stage": "unknown stage"}
        )
    offered = ", ".join(o.key for o in options)
    raise Invalid(
        f"Stage '{key}' cannot be retried from: it did not run. Pick one of: {offered}.",
        field_errors={"from_stage": "not offered"},
    )


def _source(run: StageRun) -> tuple[int, int]:
    """(execution id, sequence) of the run whose result a stage run holds."""
    if run.carried_from_id and run.carried_from is not None:
        return run.carried_from.execution_id, run.carried_from.execution.sequence
    return run.execution_id, run.execution.sequence


def _refusal(execution: Execution, user: AnyUser, reason: str) -> Refusal | None:
    """The refusal a dialog answers with while ``reason`` blocks it: 403 for a user without
    Execute (whatever blocks it first), 409 for one who could act but not now."""
    if not reason:
        return None
    if not permissions.can(user, "execute", execution):
        return Forbidden(reason)
    return Conflict(reason)


def plan_retry(
    execution: Execution, user: AnyUser, *, from_stage: str | None = None, mode: str | None = None
) -> RetryPlan:
    """Everything the retry dialog shows, for ``from_stage`` (default: the first failed one)."""
    permissions.check(user, "view", execution)
    reason, latest = retry_blocker(execution, user)
    plan = RetryPlan(
        execution=execution,
        allowed=not reason,
        reason=reason,
        latest=latest,
        refusal=_refusal(execution, user, reason),
    )
    if execution.status not in TERMINAL:
        return plan
    spec = execution.version.spec
    plan.strategies = spec.has_failure_strategies
    runs = {
        r.identifier: r
        # The related manager already sets run.execution; step runs are not used here.
        for r in execution.stage_runs.select_related("carried_from__execution")
    }
    plan.runs = runs
    plan.options = stage_options(execution, spec, runs)
    if not plan.options:
        return plan
    notes = strategy_notes(runs.values())
    for each in plan.options:
        each.notes = {key: notes[key] for key in each.stages if key in notes}
    option = _find_option(plan.options, spec, from_stage) if from_stage else plan.options[-1]
    plan.selected = option
    if mode not in (None, "", *MODES):
        raise Invalid(
            f"Unknown retry mode '{mode}': use failed_only or all.",
            field_errors={"mode": "unknown"},
        )
    plan.mode = (mode or FAILED_ONLY) if option.has_failed_member else ""

    selected_index = next(g.index for g in spec.groups if g.identifier == option.key)
    carried_ids: list[str] = [s.identifier for g in spec.groups[:selected_index] for s in g.stages]
    if plan.mode == FAILED_ONLY:
        carried_ids += [s for s, status in option.member_statuses.items() if status in SUCCEEDED]
    for identifier in carried_ids:
        run = runs[identifier]
        source_id, source_seq = _source(run)
        plan.carried.append(
            CarriedStage(
                identifier,
                run.name,
                run.status,
                source_seq,
                source_id,
                run.duration_seconds,
                note=notes.get(identifier, ""),
            )
        )
    carried_set = set(carried_ids)
    for stage in spec.stages:
        if stage.identifier not in carried_set:
            previous = (
                runs[stage.identifier].status if stage.identifier in runs else Status.NOT_STARTED
            )
            plan.run_again.append(
                RunAgainStage(
                    stage.identifier,
                    stage.name,
                    [s.name for s in stage.steps],
                    previous,
                    note=notes.get(stage.identifier, ""),
                )
            )
    plan.time_saved_seconds = wall_clock_seconds(runs[identifier] for identifier in carried_ids)
    plan.inputs = _input_fields(execution, spec, carried_set)
    current = execution.pipeline.current_version
    if current is not None and current.pk != execution.version_id:
        plan.pipeline_changed = True
        # Fixed Secret values never leave the server, not even in a diff: both sides are masked
        # before they are compared.
        old, new = mask_pair(execution.version.yaml, current.yaml)
        plan.diff = unified_diff(
            old,
            new,
            f"v{execution.version.number} (this execution)",
            f"v{current.number} (current)",
        )
    return plan


def _input_fields(execution: Execution, spec: PipelineSpec, carried: set[str]) -> list[InputField]:
    fields: list[InputField] = []
    for var in spec.inputs:
        if var.stage is None:
            editable, reason = (
                False,
                "a pipeline-level input cannot change on retry: use Rerun to change it",
            )
        elif var.stage in carried:
            editable, reason = (
                False,
                f"stage '{var.stage}' is carried over: use Rerun to change its inputs",
            )
        else:
            editable, reason = True, ""
        if var.is_secret:
            fields.append(
                InputField(var, "", editable, reason, has_value=var.key in execution.secret_inputs)
            )
        else:
            fields.append(InputField(var, str(execution.inputs.get(var.key, "")), editable, reason))
    return fields


# --- creating the retry ---------------------------------------------------------------------


def _resolve_inputs(
    plan: RetryPlan, submitted: dict[str, object]
) -> tuple[dict[str, str], dict[str, str], list[str]]:
    """Merge edited inputs over the previous ones; refuse changes to frozen ones."""
    execution = plan.execution
    by_key = {f.key: f for f in plan.inputs}
    errors: dict[str, str] = {}
    for key, raw in submitted.items():
        if key not in by_key:
            errors[key] = f"'{key}' is not a runtime input of this pipeline version"
            continue
        entry = by_key[key]
        if entry.editable:
            continue
        value = "" if raw is None else str(raw)
        if entry.is_secret:  # blank, or the stored value sent again (compared in constant time)
            stored = execution.secret_inputs.get(key, "") if entry.has_value else ""
            unchanged = value == "" or hmac.compare_digest(value.encode(), stored.encode())
        else:
            unchanged = value == entry.value
        if not unchanged:
            errors[key] = f"Input '{key}' cannot change: {entry.reason}."
    if errors:
        raise Invalid(" ".join(errors.values()), field_errors=errors)

    values = dict(execution.inputs)
    secrets = dict(execution.secret_inputs)
    edited: dict[str, object] = {}
    for entry in plan.editable_inputs:
        if entry.key not in submitted:
            continue
        raw = submitted[entry.key]
        if entry.is_secret and (raw is None or raw == "") and entry.has_value:
            continue  # a blank secret keeps its previous value
        edited[entry.key] = raw
    try:
        new_values, new_secrets = validate_inputs(
            execution.version.spec,
            edited,
            editable=[e.variable for e in plan.editable_inputs if e.key in edited],
        )
    except InputErrors as exc:
        raise Invalid(
            "Some runtime inputs are not valid: " + str(exc), field_errors=exc.errors
        ) from None
    changed = [k for k, v in new_values.items() if values.get(k) != v]
    changed += [k for k, v in new_secrets.items() if secrets.get(k) != v]
    values.update(new_values)
    secrets.update(new_secrets)
    # A required editable input left without a value in the previous run must be given now.
    for entry in plan.editable_inputs:
        store = secrets if entry.is_secret else values
        if entry.key not in store:
            value, error = check_value(entry.variable, None)
            if error:
                raise Invalid(
                    f"{entry.key} {error}", field_errors={entry.key: f"{entry.key} {error}"}
                )
            store[entry.key] = value
    return values, secrets, sorted(changed)


def create_retry(
    *,
    execution: Execution,
    user: AnyUser,
    from_stage: str,
    mode: str | None = None,
    inputs: Mapping[str, object] | None = None,
    reason: str = "",
) -> Execution:
    """Create the retry of ``execution`` and start it; see the module docstring for the rules."""
    permissions.check(user, "execute", execution)
    assert isinstance(user, User)  # check() lets only a signed-in user through
    if not from_stage:
        raise Invalid("Pick the stage to retry from.", field_errors={"from_stage": "required"})
    plan = plan_retry(execution, user, from_stage=from_stage, mode=mode)
    if not plan.allowed:
        existing = Execution.objects.filter(retry_of=execution).first()
        if existing is not None:
            raise AlreadyRetried(plan.reason, retry=existing)
        raise Conflict(plan.reason)
    selected = plan.selected
    if selected is None:
        raise Conflict(f"Execution #{execution.sequence} has no stage to retry from.")
    values, secrets, changed = _resolve_inputs(plan, dict(inputs or {}))
    carried_ids = {c.identifier for c in plan.carried}
    reason = (reason or "").strip()[:2000]
    try:
        with transaction.atomic():
            locked = Execution.objects.select_for_update(no_key=True).get(pk=execution.pk)
            # Under the lock, a retry that another request committed first is seen here, so
            # the loser never inserts a second one (its insert would wait on the winner's
            # rows, which a worker may be updating, instead of failing at once).
            winner = Execution.objects.filter(retry_of=locked).first()
            if winner is not None:
                raise _already_retried(execution, winner)
            if locked.status not in RETRYABLE:
                raise Conflict(f"Execution #{locked.sequence} can no longer be retried.")
            # Its pipeline and (immutable) version, as read already.
            locked.pipeline, locked.version = execution.pipeline, execution.version
            # Still terminal under the lock, so the stage runs the plan read are final.
            runs = {identifier: plan.runs[identifier] for identifier in carried_ids}
            retry = create_execution(
                pipeline=locked.pipeline,
                version=locked.version,
                user=user,
                values=values,
                secrets=secrets,
                carried=runs,
                copy_from=locked,
                selected=locked.selected_stages,
                retry_of=locked,
                chain_root_id=locked.root_id,
                attempt=locked.attempt + 1,
                resumed_from=selected.key,
                retry_mode=plan.mode,
                reason=reason,
                changed_inputs=changed,
                rerun_of=None,
            )
            record(
                retry,
                "retried",
                actor=user,
                message=f"retry of #{locked.sequence} from {selected.key}"
                + (f" ({plan.mode.replace('_', ' ')})" if plan.mode else "")
                + (f": {reason}" if reason else ""),
            )
    except IntegrityError:
        winner = Execution.objects.filter(retry_of=execution).first()
        if winner is None:
            raise
        raise _already_retried(execution, winner) from None
    return retry


def _already_retried(execution: Execution, winner: Execution) -> AlreadyRetried:
    return AlreadyRetried(
        f"Execution #{execution.sequence} was just retried as #{winner.sequence} by "
        f"{winner.triggered_by or 'someone else'}.",
        retry=winner,
    )


# --- history --------------------------------------------------------------------------------


@dataclass
class StepAttempts:
    """A step of one execution that a failure strategy (or an intervention's answer) ran more
    than once: automatic attempts, told apart from the chain's manual retries (SPEC §9)."""

    step: StepRun  # with its stage run
    automatic: int  # retries a rule started
    chosen: int  # retries a person chose in an intervention

    @property
    def attempts(self) -> int:
        """Attempts made or queued: the first run and every retry."""
        return max(self.step.attempts, 1 + self.automatic + self.chosen)


@dataclass
class ChainEntry:
    execution: Execution
    attempt: int
    is_current: bool
    resumed_label: str = ""  # the stage it resumed from, named for a page (presenters fill it)
    # The steps of this execution that failure strategies ran again, in pipeline order.
    automatic: list[StepAttempts] = field(default_factory=list)


def automatic_attempts(execution_ids: Sequence[int]) -> dict[int, list[StepAttempts]]:
    """Per execution, its steps retried within the execution (``strategy.retry`` events: by a
    rule, or by a person answering an intervention), in pipeline order. Two queries, whatever
    the chain's length; a carried-over step's attempts belong to the execution that ran it."""
    counts: dict[int, tuple[int, int]] = {}
    retries = (
        Event.objects.filter(execution_id__in=list(execution_ids), action="strategy.retry")
        .values("step_run_id")
        .annotate(
            automatic=Count("id", filter=Q(actor__isnull=True)),
            chosen=Count("id", filter=Q(actor__isnull=False)),
        )
    )
    for row in retries:
        counts[row["step_run_id"]] = (row["automatic"], row["chosen"])
    if not counts:
        return {}
    found: dict[int, list[StepAttempts]] = {}
    steps = (
        StepRun.objects.filter(pk__in=list(counts))
        .select_related("stage_run")
        .order_by("execution_id", "stage_run__position", "position")
    )
    for step in steps:
        automatic, chosen = counts[step.pk]
        found.setdefault(step.execution_id, []).append(StepAttempts(step, automatic, chosen))
    return found


def retry_history(execution: Execution) -> list[ChainEntry]:
    """The chain of ``execution`` (original, retry 1, retry 2, …), oldest first, each with the
    steps failure strategies ran again in it (``automatic_attempts``)."""
    chain = list(Execution.objects.chain_of(execution).select_related("triggered_by", "pipeline"))
    automatic = automatic_attempts([e.pk for e in chain])
    return [
        ChainEntry(e, e.attempt, e.pk == execution.pk, automatic=automatic.get(e.pk, []))
        for e in chain
    ]


# --- rerun ----------------------------------------------------------------------------------


@dataclass
class RerunPlan:
    execution: Execution
    allowed: bool
    reason: str
    inputs: list[InputField] = field(default_factory=list)
    stage_selection: bool = False
    stages: list[tuple[str, str]] = field(default_factory=list)  # (identifier, name)
    refusal: Refusal | None = None  # why not, typed (see RetryPlan.refusal)


def rerun_blocker(execution: Execution, user: AnyUser) -> str:
    if execution.status not in TERMINAL:
        return f"Execution #{execution.sequence} is still running: wait for it to end or abort it."
    if execution.pipeline.current_version_id is None:
        return "The pipeline has no definition."
    if not permissions.can(user, "execute", execution):
        return permissions.why_not(user, "execute", execution)
    return ""


def plan_rerun(execution: Execution, user: AnyUser) -> RerunPlan:
    """The rerun form: the current version's inputs, prefilled from ``execution`` where they exist."""
    permissions.check(user, "view", execution)
    reason = rerun_blocker(execution, user)
    plan = RerunPlan(
        execution=execution,
        allowed=not reason,
        reason=reason,
        refusal=_refusal(execution, user, reason),
    )
    version = execution.pipeline.current_version
    if version is None:
        return plan
    spec = version.spec
    for var in spec.inputs:
        if var.is_secret:
            plan.inputs.append(
                InputField(var, "", True, has_value=var.key in execution.secret_inputs)
            )
        else:
            previous = execution.inputs.get(var.key)
            plan.inputs.append(
                InputField(
                    var, str(previous if previous is not None else (var.default or "")), True
                )
            )
    plan.stage_selection = spec.allow_stage_selection
    plan.stages = [(s.identifier, s.name) for s in spec.stages]
    return plan


def create_rerun(
    *,
    execution: Execution,
    user: AnyUser,
    inputs: Mapping[str, object] | None = None,
    stages: Sequence[str] | None = None,
) -> Execution:
    """Run the pipeline's current version again, linked to ``execution`` (SPEC §5); ``stages``
    as for ``run_pipeline`` (``None``: every stage)."""
    permissions.check(user, "execute", execution)
    reason = rerun_blocker(execution, user)
    if reason:
        raise Conflict(reason)
    submitted = dict(inputs or {})
    version = execution.pipeline.current_version
    if version is None:  # rerun_blocker said so already; this tells the type checker
        raise Conflict("The pipeline has no definition.")
    spec = version.spec
    for var in spec.inputs:  # a blank secret keeps the previous value when it still exists
        if var.is_secret and not submitted.get(var.key) and var.key in execution.secret_inputs:
            submitted[var.key] = execution.secret_inputs[var.key]
    return run_pipeline(
        pipeline=execution.pipeline,
        user=user,
        inputs=submitted,
        stages=stages,
        rerun_of=execution,
    )
