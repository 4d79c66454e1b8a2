"""Page models for the execution pages: the stage graph and its cards, the action bar (each
button enabled or disabled with its reason), the open log, the retry history, and the contexts
of the Retry, Rerun and Approve dialogs.

Views (``executions.views``) parse the request, call a service and render what is built here;
nothing in this module reads a request or writes a row.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db.models import Count, Prefetch, Q
from django.urls import reverse
from django.utils import timezone

from executions.context import build_context
from executions.forms import RetryForm, RunForm
from executions.models import (
    Event,
    Execution,
    LogChunk,
    PendingWait,
    StageRun,
    StepAttempt,
    StepRun,
)
from executions.retry import ALL, FAILED_ONLY, rerun_blocker, retry_blocker, retry_history
from executions.selection import picker_rows
from executions.services import INTERVENTION_ANSWERS
from executions.states import ACTIVE, TERMINAL, Status, is_terminal
from pipelines import permissions
from pipelines.diffs import diff_rows
from pipelines.spec.model import ERROR_CLASSES, PipelineSpec
from pipelines.spec.strategies import matching_rule
from stageline.errors import NotFound, Refusal
from stageline.masking import mask
from stageline.timefmt import format_countdown, format_duration

RETRY_MODE_LABELS = {FAILED_ONLY: "failed stages only", ALL: "all stages of the group"}
# Which step's log the page opens when none is asked for: a running one, else a failed one.
LOG_PREFERENCE = [Status.RUNNING, Status.FAILED, Status.EXPIRED, Status.ABORTED]
# How often an open log of a running step asks for new output (an htmx ``every`` delay): with
# the runner's flush every 0.25 s, a line is shown within a second of being written.
LOG_POLL = "500ms"
# A live poll redraws the stages with an event in this last span as well as those after its
# cursor: an event id taken early by a transaction that commits late is not missed.
LIVE_OVERLAP = timedelta(seconds=10)


@dataclass
class StepRow:
    run: StepRun
    duration: str
    selected: bool = False  # its log is the one open


@dataclass
class StageCard:
    run: StageRun
    steps: list[StepRow]
    duration: str
    approval: StepRun | None = None  # the approval step waiting in this stage
    approval_message: str = ""


@dataclass
class Action:
    """A button of the action bar: enabled (opens its dialog) or disabled with the reason."""

    name: str
    label: str
    url: str
    reason: str
    kind: str = ""  # "primary" or "danger": the button's style


@dataclass
class Graph:
    columns: list[list[StageCard]] = field(default_factory=list)
    done: int = 0
    total: int = 0
    waiting: list[StageCard] = field(default_factory=list)


def _stage_runs(execution: Execution):
    return execution.stage_runs.select_related("carried_from__execution").prefetch_related(
        Prefetch("step_runs", queryset=StepRun.objects.select_related("decided_by"))
    )


def _stage_cards(runs: list[StageRun]) -> tuple[list[StageCard], list[StageCard]]:
    """The cards of ``runs``, and those of them with an approval waiting (message filled in)."""
    cards: list[StageCard] = []
    waiting: list[StageCard] = []
    for run in runs:
        steps = [
            StepRow(step, format_duration(step.duration_seconds)) for step in run.step_runs.all()
        ]
        card = StageCard(run, steps, format_duration(run.duration_seconds))
        card.approval = next(
            (
                row.run
                for row in steps
                if row.run.type == "Approval" and row.run.status == Status.WAITING
            ),
            None,
        )
        if card.approval is not None:
            waiting.append(card)
        cards.append(card)
    if waiting:
        # The approval message was rendered (expressions filled in, secrets masked) when the
        # step started waiting; it is kept on that transition's event.
        approvals = {card.approval.pk: card for card in waiting if card.approval}
        events = Event.objects.filter(
            step_run__in=list(approvals), to_status=Status.WAITING
        ).order_by("id")
        found = {event.step_run_id: event.message for event in events}
        for pk, card in approvals.items():
            card.approval_message = found.get(pk, "")
    return cards, waiting


def build_graph(execution: Execution) -> Graph:
    """The stage graph: one column per serial stage or parallel group, in pipeline order."""
    runs = list(_stage_runs(execution))
    cards, waiting = _stage_cards(runs)
    graph = Graph(
        total=len(runs), done=sum(1 for run in runs if is_terminal(run.status)), waiting=waiting
    )
    by_group: dict[int, list[StageCard]] = {}
    for card in cards:
        by_group.setdefault(card.run.group_index, []).append(card)
    graph.columns = [by_group[index] for index in sorted(by_group)]
    return graph


def live_cursor(execution: Execution) -> int:
    """The id of the execution's last event: every change of a stage or step appends one, so a
    page that has seen up to this id asks only for what changed after it."""
    return (
        Event.objects.filter(execution=execution)
        .order_by("-id")
        .values_list("id", flat=True)
        .first()
        or 0
    )


def changed_graph(execution: Execution, since: int) -> tuple[Graph, bool]:
    """The part of the graph a live page that has seen events up to ``since`` must redraw: the
    stages with an event after it (or in the last ``LIVE_OVERLAP``, for an event whose
    transaction committed after a later one's), and every active stage (its duration grows).
    The counts are the whole execution's; the columns hold the changed cards only. Also says
    whether anything happened since (else the head, actions and all, need no redraw)."""
    recent = Event.objects.filter(execution=execution).filter(
        Q(id__gt=since) | Q(at__gte=timezone.now() - LIVE_OVERLAP)
    )
    changed = recent.exists()
    stage_ids = set(
        recent.filter(stage_run__isnull=False).values_list("stage_run_id", flat=True)
    ) | set(
        StepRun.objects.filter(
            pk__in=recent.filter(step_run__isnull=False).values("step_run_id")
        ).values_list("stage_run_id", flat=True)
    )
    runs = list(_stage_runs(execution).filter(Q(pk__in=stage_ids) | Q(status__in=list(ACTIVE))))
    cards, waiting = _stage_cards(runs)  # a waiting approval's stage is active: all are here
    counts = execution.stage_runs.aggregate(
        total=Count("id"), done=Count("id", filter=Q(status__in=list(TERMINAL)))
    )
    graph = Graph(columns=[cards], done=counts["done"], total=counts["total"], waiting=waiting)
    return graph, changed


def abort_refusal(execution: Execution, user) -> str:
    """Why ``user`` may not abort ``execution`` ("" when they may)."""
    if execution.status not in ACTIVE:
        return f"Execution #{execution.sequence} has ended ({execution.get_status_display()}): there is nothing to abort."
    return permissions.why_not(user, "execute", execution)


def build_actions(execution: Execution, user, graph: Graph) -> list[Action]:
    """The action bar: Retry, Rerun, Approve / Reject for each waiting approval, Abort."""
    pk = execution.pk
    retry_reason, _ = retry_blocker(execution, user)
    actions = [
        Action(
            "retry",
            "Retry Failed Pipeline",
            reverse("execution_retry", args=[pk]),
            retry_reason,
            "primary",
        ),
        Action(
            "rerun", "Rerun", reverse("execution_rerun", args=[pk]), rerun_blocker(execution, user)
        ),
    ]
    approve_reason = permissions.why_not(user, "approve", execution)
    for card in graph.waiting:
        url = reverse("execution_approval", args=[pk]) + f"?stage={card.run.identifier}"
        label = f"Approve / Reject {card.run.name}"
        actions.append(
            Action(f"approve-{card.run.identifier}", label, url, approve_reason, "primary")
        )
    actions.append(
        Action(
            "abort",
            "Abort",
            reverse("execution_abort", args=[pk]),
            abort_refusal(execution, user),
            "danger",
        )
    )
    return actions


def _step_rows(graph: Graph) -> list[StepRow]:
    return [row for column in graph.columns for card in column for row in card.steps]


def _followed(steps: Iterable[StepRun]) -> StepRun | None:
    candidates = [step for step in steps if step.type != "Approval"]
    for status in LOG_PREFERENCE:
        found = next((step for step in candidates if step.status == status), None)
        if found is not None:
            return found
    return None


def followed_step(graph: Graph) -> StepRun | None:
    """The step whose log the page shows when the operator picked none: a running one, else
    a failed, expired or aborted one. The page moves its open log there as the run goes on
    (execution.js), unless the operator picked a step."""
    return _followed(row.run for row in _step_rows(graph))


def followed_step_of(execution: Execution) -> StepRun | None:
    """``followed_step`` without the graph (a live poll that loads the changed stages only)."""
    return _followed(
        StepRun.objects.filter(execution=execution, status__in=LOG_PREFERENCE).order_by(
            "stage_run__group_index", "stage_run__position", "position"
        )
    )


def open_log_step(graph: Graph, requested: str | None) -> StepRun | None:
    """The step whose log the page shows (``?step=``, else ``followed_step``); it is marked
    selected in the graph."""
    rows = _step_rows(graph)
    if requested:
        chosen = next((row for row in rows if str(row.run.pk) == requested), None)
    else:
        followed = followed_step(graph)
        chosen = next((row for row in rows if row.run is followed), None)
    if chosen is None:
        return None
    chosen.selected = True
    return chosen.run


@dataclass
class StepFacts:
    """What the page says about a step besides its log (Harness and GitHub show the same)."""

    exit_code: int | None
    started_at: object
    finished_at: object
    duration_seconds: float | None
    worker: str
    outputs: list[tuple[str, str]]
    attempts: int
    decided_by: str = ""  # an approval: who answered, when, with what comment
    decided_at: object = None
    comment: str = ""
    is_approval: bool = False


def step_facts(step: StepRun) -> StepFacts:
    """The facts of ``step`` (of the run it came from, for a carried-over step). Outputs were
    masked when stored; they are masked again here with the run's secrets (``stageline.masking``)."""
    return _facts(step.log_source)


def _facts(source: StepRun) -> StepFacts:
    outputs = sorted((source.outputs or {}).items())
    if outputs:
        secrets = build_context(source.execution).secret_values()
        outputs = [(key, mask(str(value), secrets)) for key, value in outputs]
    return StepFacts(
        exit_code=source.exit_code,
        started_at=source.started_at,
        finished_at=source.finished_at,
        duration_seconds=source.duration_seconds,
        worker=source.worker,
        outputs=outputs,
        attempts=source.attempts,
        decided_by=source.decided_by.username if source.decided_by is not None else "",
        decided_at=source.decided_at,
        comment=source.comment,
        is_approval=source.type == "Approval",
    )


# --- attempts (SPEC §9) --------------------------------------------------------------------


@dataclass
class AttemptRow:
    """One attempt of a step: its own result, times and log size (``attempts_of``)."""

    number: int
    status: str
    status_label: str
    exit_code: int | None
    error_class: str  # "" when it did not fail
    error: str
    worker: str
    started_at: datetime | None
    finished_at: datetime | None
    duration_seconds: float | None
    log_bytes: int
    log_truncated: bool
    latest: bool  # the step run itself (the others are archived ``StepAttempt`` rows)


def _row(attempt: StepAttempt | StepRun, number: int, latest: bool) -> AttemptRow:
    return AttemptRow(
        number=number,
        status=attempt.status,
        status_label=attempt.get_status_display(),
        exit_code=attempt.exit_code,
        error_class=attempt.failure_class if isinstance(attempt, StepRun) else attempt.error_class,
        error=attempt.error,
        worker=attempt.worker,
        started_at=attempt.started_at,
        finished_at=attempt.finished_at,
        duration_seconds=attempt.duration_seconds,
        log_bytes=attempt.log_bytes,
        log_truncated=attempt.log_truncated,
        latest=latest,
    )


def attempts_of(step: StepRun) -> list[AttemptRow]:
    """Every attempt of ``step`` (of the run it came from, for a carried-over step), earliest
    first; the last is the step run itself. A step that never retried costs no query."""
    source = step.log_source
    number = source.attempt_number
    earlier = list(source.earlier_attempts.order_by("number")) if number > 1 else []
    return [_row(attempt, attempt.number, False) for attempt in earlier] + [
        _row(source, number, True)
    ]


def _probes(spec: PipelineSpec, stage, step_spec) -> list[tuple[str, int | None]]:
    """Failures the step may have, one per class (per exit code a rule names, and one it
    names not, for ``script``), to ask the resolver what each would decide."""
    if step_spec.type == "Approval":
        return [("approval_rejected", None), ("approval_expired", None)]
    rules = [*step_spec.failure_strategies, *stage.failure_strategies, *spec.failure_strategies]
    named = {code for rule in rules for code in rule.exit_codes}
    other = next(code for code in range(1, 257) if code not in named)
    probes: list[tuple[str, int | None]] = [("script", code) for code in [*sorted(named), other]]
    return probes + [(name, None) for name in ERROR_CLASSES if name in ("timeout", "worker_lost")]


def planned_attempts(spec: PipelineSpec, step: StepRun, rows: list[AttemptRow]) -> int:
    """How many attempts the step gets: 1 + the ``count`` of the retry rule that decides its
    latest failure (``pipelines.spec.strategies.matching_rule``, the one resolver); before any
    failure, the most that a rule could give it; never fewer than it has had."""
    had = len(rows)
    stage = spec.stage(step.stage_run.identifier) if spec.has_failure_strategies else None
    step_spec = (
        next((s for s in stage.steps if s.identifier == step.identifier), None) if stage else None
    )
    if stage is None or step_spec is None:
        return had
    failed = next((row for row in reversed(rows) if row.error_class), None)
    failures = (
        [(failed.error_class, failed.exit_code)]
        if failed is not None
        else _probes(spec, stage, step_spec)
    )
    counts = [0]
    for error_class, exit_code in failures:
        found = matching_rule(step_spec, stage, spec, error_class, exit_code)
        if found is not None and found[1].action.type == "retry":
            counts.append(found[1].action.count)
    planned = 1 + max(counts) if failed is None or max(counts) else had
    return max(planned, had)


@dataclass
class Attempts:
    """The attempts of the step whose log is open: which one is open, how many the step gets
    ("attempt 2 of 4"), and when a waiting retry's next attempt starts."""

    rows: list[AttemptRow]
    open: AttemptRow
    planned: int
    # The pipeline declares failure strategies: the step may get another attempt, so its log
    # polls name the attempt they follow (a new one begun is then shown in its place).
    strategies: bool = False
    next_at: datetime | None = None
    next_seconds: int = 0

    @property
    def shown(self) -> bool:
        """Whether the page shows the attempts: the step has, or may have, more than one."""
        return self.planned > 1 or len(self.rows) > 1

    @property
    def latest(self) -> AttemptRow:
        return self.rows[-1]

    @property
    def next_in(self) -> str:
        return format_countdown(self.next_seconds)


def attempts_context(execution: Execution, step: StepRun, number: int | None = None) -> Attempts:
    """The attempts of ``step`` with attempt ``number`` open (None: the latest); ``NotFound``
    naming the attempts there are when it has no such attempt."""
    source = step.log_source
    rows = attempts_of(step)
    if number is None:
        chosen: AttemptRow | None = rows[-1]
    else:
        chosen = next((row for row in rows if row.number == number), None)
    if chosen is None:
        raise NotFound(
            f"Step '{step.identifier}' has no attempt {number}: it has "
            + ("attempt 1 only." if len(rows) == 1 else f"attempts 1 to {rows[-1].number}.")
        )
    spec = execution.version.spec
    attempts = Attempts(
        rows, chosen, planned_attempts(spec, step, rows), spec.has_failure_strategies
    )
    if source.status == Status.QUEUED and source.attempts:
        # A retry's next attempt: it starts when its durable wait is due (none: at once).
        wait = (
            PendingWait.objects.filter(
                step_run=source, kind=PendingWait.Kind.RETRY, state=PendingWait.State.PENDING
            )
            .order_by("due_at")
            .first()
        )
        if wait is not None:
            attempts.next_at = wait.due_at
            attempts.next_seconds = max(0, int((wait.due_at - timezone.now()).total_seconds()))
    return attempts


def _archived(source: StepRun, number: int) -> StepRun:
    """``source`` as it was in its earlier attempt ``number`` (not saved: for the page)."""
    archived = source.earlier_attempts.get(number=number)
    view = copy.copy(source)
    for name in (
        "status",
        "exit_code",
        "error_class",
        "error",
        "worker",
        "started_at",
        "finished_at",
        "log_bytes",
        "log_truncated",
    ):
        setattr(view, name, getattr(archived, name))
    view.outputs = {}
    view.lease_expires_at = None  # its log is complete
    view.attempts = number
    return view


def log_context(
    execution: Execution,
    step: StepRun | None,
    after: int | None = None,
    attempt: int | None = None,
) -> dict:
    """The open log: its chunks (all, or those after the cursor ``after``) and whether it is
    live (more may come: the poller stays) or complete (every byte has arrived). Each attempt
    of the step has its own log: the latest, or ``attempt`` (``NotFound`` if there is none)."""
    if step is None:
        return {"log_step": None}
    source = step.log_source  # a carried-over step shows the log of the run it came from
    # Read the step before the chunks: its lease is released only after its last chunk is
    # stored, so a closed log read here means that nothing is missing below.
    attempts = attempts_context(execution, step, attempt)
    number = attempts.open.number
    if not attempts.open.latest:
        source = _archived(source, number)
    never_ran = source.status == Status.NOT_STARTED and execution.is_terminal
    live = not source.log_closed and not never_ran
    query = LogChunk.objects.filter(step_run=step.log_source, attempt=number).order_by("seq")
    if after is not None:
        query = query.filter(seq__gt=after)
    chunks = list(query)
    cursor = chunks[-1].seq if chunks else (after if after is not None else -1)
    return {
        "log_step": step,
        "log_source": source,
        "log_chunks": chunks,
        "log_cursor": cursor,
        "log_live": live,
        "log_poll": LOG_POLL,
        "log_attempts": attempts,
        # The facts change when the step ends: sent with the whole panel and with the last poll.
        "log_facts": _facts(source) if after is None or not live else None,
    }


def head_context(execution: Execution, user, graph: Graph) -> dict:
    """The page's head: title, progress, actions, error, retry banner and history."""
    chain = retry_history(execution)
    for entry in chain:
        if entry.execution.version_id == execution.version_id:  # always: a retry keeps the version
            entry.execution.version = execution.version
        entry.resumed_label = resumed_label(entry.execution)
    position = next((i for i, entry in enumerate(chain) if entry.is_current), 0)
    retried_as = chain[position + 1].execution if position + 1 < len(chain) else None
    return {
        "execution": execution,
        "pipeline": execution.pipeline,
        "graph": graph,
        "actions": build_actions(execution, user, graph),
        "interventions": interventions(execution, user),
        **history_context(chain),
        "activity": activity(execution),
        "retried_as": retried_as,
        "latest": chain[-1].execution if retried_as else None,
        "elapsed": format_duration(execution.duration_seconds),
        "execution_label": f"#{execution.sequence}",
        "resumed_label": resumed_label(execution),
        "retry_mode_label": RETRY_MODE_LABELS.get(execution.retry_mode, execution.retry_mode),
    }


@dataclass
class AutomaticRow:
    """One line of the history's automatic attempts: a step a failure strategy ran again."""

    execution: Execution
    stage: str
    step: str
    step_pk: int
    status: str
    status_label: str
    attempts: int
    automatic: int
    chosen: int


def history_context(chain: list) -> dict:
    """The retry history (SPEC §4.11, §9): the chain's manual retries (when there are any) and,
    apart from them, the automatic attempts of failure strategies in each execution of it."""
    rows = [
        AutomaticRow(
            execution=entry.execution,
            stage=each.step.stage_run.name,
            step=each.step.name,
            step_pk=each.step.pk,
            status=each.step.status,
            status_label=each.step.get_status_display(),
            attempts=each.attempts,
            automatic=each.automatic,
            chosen=each.chosen,
        )
        for entry in chain
        for each in entry.automatic
    ]
    return {"chain": chain if len(chain) > 1 else [], "automatic_retries": rows}


# What the page's activity list calls each recorded action (the admin filters by the raw name).
ACTION_LABELS = {
    "created": "Started",
    "retried": "Retry created",
    "aborted": "Aborted",
    "approved": "Approved",
    "rejected": "Rejected",
    "strategy.retry": "Retry scheduled",
    "strategy.retry_started": "Retry started",
    "strategy.ignored": "Failure ignored",
    "strategy.marked_as_success": "Marked as success",
    "strategy.marked_as_failure": "Marked as failure",
    "strategy.aborted": "Aborted by failure strategy",
    "intervention.requested": "Intervention requested",
    "intervention.timed_out": "Intervention timed out",
}
# A person's answer to an intervention is the event of the move it makes, with them as actor.
INTERVENTION_ANSWER_OF = {
    "strategy.retry": "retry",
    "strategy.ignored": "ignore",
    "strategy.marked_as_success": "mark as success",
    "strategy.marked_as_failure": "mark as failure",
    "strategy.aborted": "abort",
}
# The page lists the latest events only; all of them are in the admin.
ACTIVITY_LIMIT = 50


@dataclass
class ActivityRow:
    event: Event
    label: str
    who: str  # the person, or "failure strategy" / "Stageline" (the rule is in the message)
    subject: str  # "stage › step", "stage", or "" for the execution
    comment: str  # the person's comment, unless the message already is just that


def activity(execution: Execution) -> dict:
    """The execution's activity (SPEC §9 audit): every recorded action — who started, retried,
    aborted or approved it, and each failure strategy's decision and intervention, with who or
    which rule, when, why and the comment — the latest ``ACTIVITY_LIMIT``, oldest first. Plain
    status moves (no action) are left out. Two queries."""
    events = Event.objects.filter(execution=execution).exclude(action="")
    latest = list(
        events.select_related("actor", "step_run__stage_run", "stage_run").order_by("-id")[
            :ACTIVITY_LIMIT
        ]
    )
    total = len(latest) if len(latest) < ACTIVITY_LIMIT else events.count()
    rows = []
    for event in reversed(latest):
        automatic = event.action.startswith(("strategy.", "intervention."))
        if event.actor is not None:
            who = event.actor.username
        else:
            who = "failure strategy" if automatic else "Stageline"
        if event.step_run is not None:
            subject = f"{event.step_run.stage_run.name} › {event.step_run.name}"
        else:
            subject = event.stage_run.name if event.stage_run is not None else ""
        label = ACTION_LABELS.get(event.action, event.action)
        if event.actor is not None and event.step_run_id and event.action in INTERVENTION_ANSWER_OF:
            label = f"Intervention answered: {INTERVENTION_ANSWER_OF[event.action]}"
        comment = event.comment if event.comment != event.message else ""
        rows.append(ActivityRow(event, label, who, subject, comment))
    return {"rows": rows, "total": total, "hidden": total - len(rows)}


def live_update_context(execution: Execution, user, since: int) -> dict:
    """A live poll's answer: the head (the progress line alone when nothing happened since),
    the changed stage cards and the next cursor."""
    cursor = live_cursor(execution)  # first: what changes while this is built is sent next time
    graph, changed = changed_graph(execution, since)
    head = (
        head_context(execution, user, graph)
        if changed
        else {
            "execution": execution,
            "graph": graph,
            "elapsed": format_duration(execution.duration_seconds),
        }
    )
    return {
        **head,
        "head_changed": changed,
        "live_cards": graph.columns[0],
        "live_cursor": cursor,
        "follow_step": followed_step_of(execution),
        "oob": True,
    }


def page_context(
    execution: Execution, user, requested_step: str | None, attempt: int | None = None
) -> dict:
    """Everything the execution page shows; ``requested_step`` is the log asked for (``?step=``),
    ``attempt`` the attempt of it (``?attempt=``; None: the latest)."""
    cursor = live_cursor(execution)
    graph = build_graph(execution)
    log_step = open_log_step(graph, requested_step)
    return {
        **head_context(execution, user, graph),
        "secret_keys": sorted(execution.secret_inputs),
        "follow_step": followed_step(graph),
        "live_cursor": cursor,
        **log_context(execution, log_step, attempt=attempt),
    }


def resumed_label(execution: Execution) -> str:
    """The name of the stage or parallel group a retry resumed from ("" for a first run)."""
    key = execution.resumed_from
    if not key:
        return ""
    spec = execution.version.spec
    found = spec.group(key) or spec.stage(key)
    return found.name if found is not None else key


# --- dialogs ------------------------------------------------------------------------------


def current_spec(execution: Execution) -> PipelineSpec | None:
    """The spec of the pipeline's current version (what a rerun runs), if it has one."""
    current = execution.pipeline.current_version
    return current.spec if current is not None else None


def retry_context(
    execution: Execution,
    plan,
    form: RetryForm,
    values: dict[str, str],
    error: Refusal | None = None,
) -> dict:
    """The Retry dialog: the plan, its stage options, the impact preview and the form."""
    return {
        "execution": execution,
        "plan": plan,
        "form": form,
        "error": error.message if error else "",
        "time_saved": format_duration(plan.time_saved_seconds),
        "changed_inputs": changed_inputs(plan, values),
        "retry_url": reverse("execution_retry", args=[execution.pk]),
        "rerun_url": reverse("execution_rerun", args=[execution.pk]),
        "options": [
            (
                option,
                ", ".join(
                    f"{key}: {label(status)}" for key, status in option.member_statuses.items()
                ),
            )
            for option in plan.options
        ],
        "run_again": [(stage, label(stage.previous_status)) for stage in plan.run_again],
        # The planner masks Secret values in the diff already.
        "diff_lines": diff_rows(plan.diff),
    }


def label(status: str) -> str:
    """``NOT_STARTED`` → ``not started``."""
    return Status(status).label.lower() if status in Status.values else status


def changed_inputs(plan, values: dict[str, str]) -> list[tuple[str, str, str]]:
    """(key, previous, new) for each editable input the operator changed in the dialog."""
    changed = []
    for entry in plan.editable_inputs:
        new = values.get(entry.key)
        if new is None:
            continue
        if entry.is_secret:
            if new:
                changed.append((entry.key, "***", "*** (new value)"))
        elif new != entry.value:
            changed.append((entry.key, entry.value or "(blank)", new or "(blank: the default)"))
    return changed


def rerun_context(execution: Execution, plan, form: RunForm, error: Refusal | None = None) -> dict:
    """The Rerun dialog: the form and the stage picker (every stage ticked, or as posted)."""
    spec = current_spec(execution)
    picked = form.picked_stages(offered=True) if form.is_bound else None
    current = execution.pipeline.current_version
    return {
        "execution": execution,
        "plan": plan,
        "form": form,
        "error": error.message if error else "",
        "stages": picker_rows(spec, picked) if spec is not None else [],
        "current_version": current,
        "version_changed": current is not None and current.pk != execution.version_id,
    }


def waiting_approval(execution: Execution, stage: str) -> tuple[StepRun | None, str]:
    """The approval step waiting in ``stage`` (or the first waiting one) and its message."""
    waiting = StepRun.objects.select_related("stage_run").filter(
        execution=execution, type="Approval", status=Status.WAITING
    )
    if stage:
        waiting = waiting.filter(stage_run__identifier=stage)
    step = waiting.order_by("stage_run__position", "position").first()
    if step is None:
        return None, ""
    event = Event.objects.filter(step_run=step, to_status=Status.WAITING).order_by("-id").first()
    return step, event.message if event else ""


# --- interventions (a failure strategy's manual_intervention, SPEC §9) --------------------

# The answers, as the banner's buttons and the dialog name them, and what each does.
ANSWER_LABELS = {
    "retry": "Retry",
    "ignore": "Ignore",
    "mark_as_success": "Mark as success",
    "mark_as_failure": "Mark as failure",
    "abort": "Abort",
}
ANSWER_EFFECTS = {
    "retry": "runs the step again now, as a new attempt; the run goes on if it passes",
    "ignore": "ends the step as Failed, ignored: its stage and the run go on and count it as a success",
    "mark_as_success": "ends the step as Success (with no outputs): its stage and the run go on",
    "mark_as_failure": "ends the step as Failed: its stage fails, and the run with it",
    "abort": "aborts the whole execution: its other running steps are killed",
}
# What an on_timeout did (past tense), for a step nobody answered in time.
TIMEOUT_OUTCOMES = {
    "ignore": "failure ignored",
    "mark_as_success": "marked as success",
    "mark_as_failure": "marked as failure",
    "abort": "execution aborted",
}
# The event a person's answer leaves on the step (``strategies.retry_step`` / ``end_step``).
ANSWER_OF_EVENT = {
    "strategy.retry": "retry",
    "strategy.ignored": "ignore",
    "strategy.marked_as_success": "mark_as_success",
    "strategy.marked_as_failure": "mark_as_failure",
    "strategy.aborted": "abort",
}
WAITING, TIMED_OUT, ANSWERED, CANCELLED = "waiting", "timed_out", "answered", "cancelled"


@dataclass
class Intervention:
    """One manual intervention of a step: waiting (with the time left, what its timeout will
    do and the answer buttons), or ended (answered by whom, with what; or timed out)."""

    step: StepRun
    key: str  # STAGE.STEP, as the dialog, the service and ``manage.py intervene`` name it
    state: str  # WAITING, TIMED_OUT, ANSWERED or CANCELLED (the execution was aborted)
    due_at: object
    timeout: str  # how long it waited for an answer ("1 h 00 min")
    on_timeout: str  # "mark as failure"
    time_left: str = ""
    overdue: bool = False
    answer: str = ""  # ANSWERED: the answer's label ("Ignore")
    answer_event: Event | None = None
    comment: str = ""  # ANSWERED: the comment given with the answer (the step's latest one)
    outcome: str = ""  # TIMED_OUT: what the timeout did ("marked as failure")
    buttons: list[Action] = field(default_factory=list)
    reason: str = ""  # why the user may not answer ("" when they may)


def intervention_url(execution: Execution, key: str, answer: str = "") -> str:
    url = reverse("execution_intervention", args=[execution.pk]) + f"?step={key}"
    return url + (f"&action={answer}" if answer else "")


def interventions(execution: Execution, user) -> list[Intervention]:
    """The execution's manual interventions, oldest first: each ``PendingWait`` of kind
    INTERVENTION is one (pending: waiting; started: its timeout applied ``on_timeout``;
    cancelled: answered, or cancelled by an abort). No query for a pipeline without failure
    strategies; two otherwise (three when one was answered)."""
    if not execution.version.spec.has_failure_strategies:
        return []
    waits = list(
        PendingWait.objects.filter(execution=execution, kind=PendingWait.Kind.INTERVENTION)
        .select_related("step_run__stage_run", "step_run__decided_by")
        .order_by("created_at", "pk")
    )
    if not waits:
        return []
    answers: list[Event] = []
    if any(wait.state == PendingWait.State.CANCELLED for wait in waits):
        answers = list(
            Event.objects.filter(
                execution=execution,
                step_run__in=[wait.step_run_id for wait in waits],
                actor__isnull=False,
                action__in=list(ANSWER_OF_EVENT),
            )
            .select_related("actor")
            .order_by("id")
        )
    reason = permissions.why_not(user, "execute", execution)
    now = timezone.now()
    found = []
    for wait in waits:
        step = wait.step_run
        key = f"{step.stage_run.identifier}.{step.identifier}"
        on_timeout = wait.on_timeout or "mark_as_failure"
        item = Intervention(
            step=step,
            key=key,
            state=WAITING,
            due_at=wait.due_at,
            timeout=format_duration((wait.due_at - wait.created_at).total_seconds()),
            on_timeout=ANSWER_LABELS.get(on_timeout, on_timeout).lower(),
        )
        if wait.state == PendingWait.State.PENDING:
            left = (wait.due_at - now).total_seconds()
            item.time_left = format_duration(max(left, 0))
            item.overdue = left <= 0
            item.reason = reason
            item.buttons = [
                Action(
                    answer,
                    ANSWER_LABELS[answer],
                    intervention_url(execution, key, answer),
                    reason,
                    "danger" if answer == "abort" else ("primary" if answer == "retry" else ""),
                )
                for answer in INTERVENTION_ANSWERS
            ]
        elif wait.state == PendingWait.State.STARTED:
            item.state = TIMED_OUT
            item.outcome = TIMEOUT_OUTCOMES.get(on_timeout, on_timeout)
        else:
            event = next(
                (e for e in answers if e.step_run_id == step.pk and e.at >= wait.created_at),
                None,
            )
            item.state = ANSWERED if event is not None else CANCELLED
            if event is not None:
                item.answer_event = event
                item.answer = ANSWER_LABELS[ANSWER_OF_EVENT[event.action]]
        found.append(item)
    # The step keeps the comment of its latest answer (``answer_intervention``).
    latest = {item.step.pk: item for item in found if item.state == ANSWERED}
    for item in latest.values():
        item.comment = item.step.comment
    return found
