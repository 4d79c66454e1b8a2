"""Execution pages: the live stage graph, step logs, and the Retry / Rerun / Approve / Abort dialogs.

Every view loads its execution through ``pipelines.permissions`` first, so what the user may
not see is a 404. The rules live in ``executions.retry`` and ``executions.services``; the views
call them and turn a refusal (``ServiceError``) into the dialog shown again with the message and
the error's status (400/403/404/409). For HTMX such an answer is retargeted to ``#modal-body``:
base.html's htmx config swaps a 400 or 409 in place, and app.js shows the ``[data-reason]`` of a
403 or 404 in ``#flash``.

The page polls itself (``hx-trigger="every 2s"``, rendered only while the execution is not
terminal) and gets back the ``execution-live`` partial; an open log polls for the chunks after
the last ``LogChunk.seq`` it has shown.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods
from django.views.decorators.vary import vary_on_headers
from django_htmx.http import HttpResponseClientRedirect, reswap, retarget

from executions.forms import ApprovalForm, RerunForm, RetryForm, posted_inputs
from executions.listing import format_duration
from executions.models import Event, Execution, LogChunk, StageRun, StepRun
from executions.retry import (
    ALL,
    FAILED_ONLY,
    AlreadyRetried,
    create_rerun,
    create_retry,
    plan_rerun,
    plan_retry,
    rerun_blocker,
    retry_blocker,
    retry_history,
)
from executions.services import (
    Conflict,
    Invalid,
    ServiceError,
    abort_execution,
    answer_approval,
    ensure,
)
from executions.states import ACTIVE, Status, is_terminal
from pipelines import permissions
from pipelines.diffs import diff_rows

LIVE_TARGET = "execution-live"
RETRY_MODE_LABELS = {FAILED_ONLY: "failed stages only", ALL: "all stages of the group"}
# Which step's log the page opens when none is asked for: a running one, else a failed one.
LOG_PREFERENCE = [Status.RUNNING, Status.FAILED, Status.EXPIRED, Status.ABORTED]


def get_execution_for_user(user, pk: int) -> Execution:
    """The execution, if ``user`` may see it; 404 otherwise (whether or not it exists).

    Read by its key, then checked with ``permissions.can`` (one query, remembered for the
    request's other checks), rather than filtered through ``visible_executions``, whose list
    of visible pipelines costs a query of its own on every page."""
    found = (
        # Not retry_of / rerun_of: mostly empty, and each join adds planning time (~0.3 ms).
        Execution.objects.select_related(
            "pipeline__project__organization", "version", "triggered_by"
        )
        .filter(pk=pk)
        .first()
    )
    if found is None or not permissions.can(user, "view", found):
        raise Http404("No such execution.")
    return found


def resumed_label(execution: Execution) -> str:
    """The name of the stage or parallel group a retry resumed from ("" for a first run)."""
    key = execution.resumed_from
    if not key:
        return ""
    spec = execution.version.spec
    found = spec.group(key) or spec.stage(key)
    return found.name if found is not None else key


def execution_url(execution: Execution) -> str:
    return reverse("execution", args=[execution.pk])


# --- the page -----------------------------------------------------------------------------


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


def build_graph(execution: Execution) -> Graph:
    """The stage graph: one column per serial stage or parallel group, in pipeline order."""
    runs = list(
        execution.stage_runs.select_related("carried_from__execution").prefetch_related("step_runs")
    )
    graph = Graph(total=len(runs), done=sum(1 for run in runs if is_terminal(run.status)))
    by_group: dict[int, list[StageCard]] = {}
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
            graph.waiting.append(card)
        by_group.setdefault(run.group_index, []).append(card)
    graph.columns = [by_group[index] for index in sorted(by_group)]
    if graph.waiting:
        # The approval message was rendered (expressions filled in, secrets masked) when the
        # step started waiting; it is kept on that transition's event.
        events = Event.objects.filter(
            step_run__in=[card.approval.pk for card in graph.waiting], to_status=Status.WAITING
        ).order_by("id")
        found = {event.step_run_id: event.message for event in events}
        for card in graph.waiting:
            card.approval_message = found.get(card.approval.pk, "")
    return graph


def _abort_refusal(execution: Execution, user) -> str:
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
            reverse("execution-retry", args=[pk]),
            retry_reason,
            "primary",
        ),
        Action(
            "rerun", "Rerun", reverse("execution-rerun", args=[pk]), rerun_blocker(execution, user)
        ),
    ]
    approve_reason = permissions.why_not(user, "approve", execution)
    for card in graph.waiting:
        url = reverse("execution-approval", args=[pk]) + f"?stage={card.run.identifier}"
        label = f"Approve / Reject {card.run.name}"
        actions.append(
            Action(f"approve-{card.run.identifier}", label, url, approve_reason, "primary")
        )
    actions.append(
        Action(
            "abort",
            "Abort",
            reverse("execution-abort", args=[pk]),
            _abort_refusal(execution, user),
            "danger",
        )
    )
    return actions


def open_log_step(graph: Graph, requested: str | None) -> StepRun | None:
    """The step whose log the page shows (``?step=``, else a running or failed one); it is
    marked selected in the graph."""
    rows = [row for column in graph.columns for card in column for row in card.steps]
    chosen = (
        next((row for row in rows if str(row.run.pk) == requested), None) if requested else None
    )
    for status in [] if requested else LOG_PREFERENCE:
        chosen = next(
            (row for row in rows if row.run.status == status and row.run.type != "Approval"), None
        )
        if chosen is not None:
            break
    if chosen is None:
        return None
    chosen.selected = True
    return chosen.run


def log_context(execution: Execution, step: StepRun | None, after: int | None = None) -> dict:
    """The open log: its chunks (all, or those after the cursor ``after``) and whether it is live."""
    if step is None:
        return {"log_step": None}
    source = step.log_source  # a carried-over step shows the log of the run it came from
    # Read the status before the chunks: a step is marked finished only after its last chunk
    # is stored, so a finished status means nothing is missing below.
    live = not is_terminal(source.status) and not execution.is_terminal
    chunks = LogChunk.objects.filter(step_run=source).order_by("seq")
    if after is not None:
        chunks = chunks.filter(seq__gt=after)
    chunks = list(chunks)
    cursor = chunks[-1].seq if chunks else (after if after is not None else -1)
    return {
        "log_step": step,
        "log_source": source,
        "log_chunks": chunks,
        "log_cursor": cursor,
        "log_live": live,
    }


def page_context(request: HttpRequest, execution: Execution) -> dict:
    graph = build_graph(execution)
    log_step = open_log_step(graph, request.GET.get("step"))
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
        "actions": build_actions(execution, request.user, graph),
        "chain": chain if len(chain) > 1 else [],
        "retried_as": retried_as,
        "latest": chain[-1].execution if retried_as else None,
        "elapsed": format_duration(execution.duration_seconds),
        "execution_label": f"#{execution.sequence}",
        "resumed_label": resumed_label(execution),
        "retry_mode_label": RETRY_MODE_LABELS.get(execution.retry_mode, execution.retry_mode),
        "secret_keys": sorted(execution.secret_inputs),
        **log_context(execution, log_step),
    }


@require_GET
@login_required
@vary_on_headers("HX-Request")
def execution_detail(request: HttpRequest, pk: int) -> HttpResponse:
    execution = get_execution_for_user(request.user, pk)
    context = page_context(request, execution)
    if request.htmx and request.htmx.target == LIVE_TARGET:
        return render(request, "executions/detail.html#execution-live", context)
    return render(request, "executions/detail.html", context)


@require_GET
@login_required
@vary_on_headers("HX-Request")
def step_log(request: HttpRequest, pk: int, step_pk: int) -> HttpResponse:
    """A step's log: the whole panel, or (``?after=SEQ``) only the chunks after the cursor."""
    execution = get_execution_for_user(request.user, pk)
    step = (
        StepRun.objects.select_related("stage_run", "carried_from__execution")
        .filter(execution=execution, pk=step_pk)
        .first()
    )
    if step is None:
        raise Http404("No such step in this execution.")
    if not request.htmx:
        return redirect(f"{execution_url(execution)}?step={step.pk}#log-panel")
    after_text = request.GET.get("after")
    if after_text is None:
        return render(
            request,
            "executions/detail.html#log-panel",
            {"execution": execution, **log_context(execution, step)},
        )
    try:
        after = int(after_text)
    except ValueError:
        return HttpResponse(
            f"'after' must be a log position (a whole number), not '{after_text[:40]}'.",
            status=400,
            content_type="text/plain; charset=utf-8",  # echoes the parameter: never as HTML
        )
    context = {"execution": execution, "oob": True, **log_context(execution, step, after=after)}
    return render(request, "executions/detail.html#log-append", context)


# --- dialogs --------------------------------------------------------------------------------


def _dialog(request: HttpRequest, template: str, context: dict, status: int = 200) -> HttpResponse:
    """A dialog: its partial for HTMX (into ``#modal-body``), a page of its own otherwise."""
    if not request.htmx:
        return render(request, template, context, status=status)
    response = render(request, f"{template}#dialog", context, status=status)
    if status >= 400:
        retarget(response, "#modal-body")
        reswap(response, "innerHTML")
    return response


def _done(request: HttpRequest, url: str) -> HttpResponse:
    """After an action: the target page (a client redirect for HTMX, a 302 otherwise)."""
    return HttpResponseClientRedirect(url) if request.htmx else redirect(url)


def _refusal_status(execution: Execution, user) -> int:
    return 403 if not permissions.can(user, "execute", execution) else 409


# Retry -----------------------------------------------------------------------------------


def _retry_context(
    execution: Execution,
    plan,
    form: RetryForm,
    values: dict[str, str],
    error: ServiceError | None = None,
) -> dict:
    return {
        "execution": execution,
        "plan": plan,
        "form": form,
        "error": error.message if error else "",
        "time_saved": format_duration(plan.time_saved_seconds) if plan.carried else "0s",
        "changed_inputs": _changed_inputs(plan, values),
        "retry_url": reverse("execution-retry", args=[execution.pk]),
        "rerun_url": reverse("execution-rerun", args=[execution.pk]),
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


def _changed_inputs(plan, values: dict[str, str]) -> list[tuple[str, str, str]]:
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


@require_http_methods(["GET", "POST"])
@login_required
@vary_on_headers("HX-Request")
def execution_retry(request: HttpRequest, pk: int) -> HttpResponse:
    """The Retry Failed Pipeline dialog (GET, re-rendered as the pick changes) and its submit."""
    execution = get_execution_for_user(request.user, pk)
    if request.method == "POST":
        return _retry_submit(request, execution)
    user = request.user
    params = request.GET
    error: ServiceError | None = None
    try:
        plan = plan_retry(
            execution,
            user,
            from_stage=params.get("from_stage") or None,
            mode=params.get("mode") or None,
        )
    except ServiceError as exc:
        error = exc
        plan = plan_retry(execution, user)
    # The dialog re-renders as the pick changes: it sends what was typed so far, which is kept.
    values = posted_inputs(params)
    form = RetryForm(entries=plan.inputs, values=values)
    context = _retry_context(execution, plan, form, values, error)
    if error is not None:
        return _dialog(request, "executions/retry.html", context, status=error.status)
    if not plan.allowed:
        return _dialog(
            request, "executions/retry.html", context, status=_refusal_status(execution, user)
        )
    target = request.htmx.target if request.htmx else None
    if target in ("retry-plan", "retry-impact"):
        return render(request, f"executions/retry.html#{target}", context)
    return _dialog(request, "executions/retry.html", context)


def _retry_submit(request: HttpRequest, execution: Execution) -> HttpResponse:
    user = request.user
    form = RetryForm(request.POST)
    error: ServiceError | None = None
    if not form.is_valid():
        error = Invalid(" ".join(e for errors in form.errors.values() for e in errors))
    else:
        data = form.cleaned_data
        try:
            retry = create_retry(
                execution=execution,
                user=user,
                from_stage=data["from_stage"],
                mode=data["mode"] or None,
                inputs=form.posted_inputs(),
                reason=data["reason"],
            )
        except AlreadyRetried as exc:
            messages.warning(request, f"{exc.message} You were taken to #{exc.retry.sequence}.")
            return _done(request, execution_url(exc.retry))
        except ServiceError as exc:
            error = exc
        else:
            mode = f" ({retry.retry_mode.replace('_', ' ')})" if retry.retry_mode else ""
            messages.success(
                request,
                f"Retry #{retry.sequence} of #{execution.sequence} started from {resumed_label(retry)}{mode}.",
            )
            return _done(request, execution_url(retry))
    # Show the dialog again, as it was posted, with the message.
    try:
        plan = plan_retry(
            execution,
            user,
            from_stage=request.POST.get("from_stage") or None,
            mode=request.POST.get("mode") or None,
        )
    except ServiceError:
        plan = plan_retry(execution, user)
    form = RetryForm(request.POST, entries=plan.inputs)
    form.is_valid()
    form.show_field_errors(error.field_errors)
    context = _retry_context(execution, plan, form, posted_inputs(request.POST), error)
    return _dialog(request, "executions/retry.html", context, status=error.status)


# Rerun -----------------------------------------------------------------------------------


def _rerun_context(
    execution: Execution, plan, form: RerunForm, error: ServiceError | None = None
) -> dict:
    if form.is_bound:
        picked = set(form.posted_stages())
    else:
        picked = set(execution.selected_stages or [identifier for identifier, _ in plan.stages])
    current = execution.pipeline.current_version
    return {
        "execution": execution,
        "plan": plan,
        "form": form,
        "error": error.message if error else "",
        "stages": [(identifier, name, identifier in picked) for identifier, name in plan.stages],
        "current_version": current,
        "version_changed": current is not None and current.pk != execution.version_id,
    }


@require_http_methods(["GET", "POST"])
@login_required
@vary_on_headers("HX-Request")
def execution_rerun(request: HttpRequest, pk: int) -> HttpResponse:
    """The Rerun dialog: every input of the current version editable, stages to run if allowed."""
    execution = get_execution_for_user(request.user, pk)
    user = request.user
    plan = plan_rerun(execution, user)
    if request.method == "GET":
        form = RerunForm(entries=plan.inputs)
        status = 200 if plan.allowed else _refusal_status(execution, user)
        return _dialog(
            request, "executions/rerun.html", _rerun_context(execution, plan, form), status=status
        )
    form = RerunForm(request.POST, entries=plan.inputs)
    stages = form.posted_stages()
    error: ServiceError | None = None
    if plan.stage_selection and plan.allowed and not stages:
        error = Invalid("Pick at least one stage to run.", field_errors={"stages": "required"})
    else:
        if plan.stage_selection and set(stages) == {identifier for identifier, _ in plan.stages}:
            stages = []  # every stage picked: a full run, not a selection
        try:
            rerun = create_rerun(
                execution=execution, user=user, inputs=form.posted_inputs(), stages=stages or None
            )
        except ServiceError as exc:
            error = exc
        else:
            messages.success(request, f"Rerun #{rerun.sequence} of #{execution.sequence} started.")
            return _done(request, execution_url(rerun))
    form.is_valid()
    form.show_field_errors(error.field_errors)
    return _dialog(
        request,
        "executions/rerun.html",
        _rerun_context(execution, plan, form, error),
        status=error.status,
    )


# Approve / Reject --------------------------------------------------------------------------


def _waiting_approval(execution: Execution, stage: str) -> tuple[StepRun | None, str]:
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


@require_http_methods(["GET", "POST"])
@login_required
@vary_on_headers("HX-Request")
def execution_approval(request: HttpRequest, pk: int) -> HttpResponse:
    """Approve or reject the approval waiting in a stage, with an optional comment."""
    execution = get_execution_for_user(request.user, pk)
    user = request.user
    form = ApprovalForm(request.POST if request.method == "POST" else None)
    stage = (
        request.POST.get("stage", "") if request.method == "POST" else request.GET.get("stage", "")
    )
    error: ServiceError | None = None
    try:
        ensure(user, "approve", execution)
        if request.method == "POST":
            if not form.is_valid():
                raise Invalid(" ".join(e for errors in form.errors.values() for e in errors))
            data = form.cleaned_data
            approve = data["decision"] == "approve"
            step = answer_approval(
                execution=execution,
                stage=data["stage"],
                user=user,
                approve=approve,
                comment=data["comment"],
            )
            verb = "Approved" if approve else "Rejected"
            messages.success(
                request, f"{verb} stage '{step.stage_run.name}' of #{execution.sequence}."
            )
            return _done(request, execution_url(execution))
    except ServiceError as exc:
        error = exc
    step, message = _waiting_approval(execution, stage)
    if step is None and error is None:
        error = Conflict(
            f"Stage '{stage}' of execution #{execution.sequence} is not waiting for approval."
            if stage
            else f"No stage of execution #{execution.sequence} is waiting for approval."
        )
    if form.is_bound:
        form.is_valid()
    else:
        form = ApprovalForm(initial={"stage": step.stage_run.identifier if step else stage})
    context = {
        "execution": execution,
        "form": form,
        "step": step,
        "message": message,
        "error": error.message if error else "",
        "can_answer": permissions.can(user, "approve", execution),
    }
    return _dialog(
        request, "executions/approval.html", context, status=error.status if error else 200
    )


# Abort -------------------------------------------------------------------------------------


@require_http_methods(["GET", "POST"])
@login_required
@vary_on_headers("HX-Request")
def execution_abort(request: HttpRequest, pk: int) -> HttpResponse:
    """Confirm (GET) and abort (POST) a running execution."""
    execution = get_execution_for_user(request.user, pk)
    user = request.user
    error: ServiceError | None = None
    try:
        ensure(user, "execute", execution)
        if request.method == "POST":
            abort_execution(execution=execution, user=user)
            messages.success(request, f"Execution #{execution.sequence} aborted.")
            return _done(request, execution_url(execution))
        if execution.status not in ACTIVE:
            raise Conflict(_abort_refusal(execution, user))
    except ServiceError as exc:
        error = exc
    context = {"execution": execution, "error": error.message if error else ""}
    return _dialog(request, "executions/abort.html", context, status=error.status if error else 200)
