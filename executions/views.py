"""Execution pages: the live stage graph, step logs, and the Retry / Rerun / Approve / Abort dialogs.

Every view loads its execution through ``executions.loaders`` first, so what the user may
not see is a 404. What a page or dialog shows is built in ``executions.presenters``. The rules
live in ``executions.retry`` and ``executions.services``; the views call them and turn a refusal
(``stageline.errors.Refusal``) into the dialog shown again with the message and the error's
status (400/403/404/409), through ``stageline.htmx.render_dialog`` (the one dialog shell).

The page polls itself (``hx-trigger="every 2s"`` on ``#live-poller``, rendered only while the
execution is not terminal) with the id of the last event it has seen, and gets back the head and
only the stage cards that changed since (``presenters.live_update_context``, out-of-band swaps); an open log polls (every
``presenters.LOG_POLL``) for the chunks after the last ``LogChunk.seq`` it has shown, and gets
204 when nothing is new. ``step_log_download`` gives the whole log as a file.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods
from django.views.decorators.vary import vary_on_headers

from executions import listing, presenters
from executions.forms import ApprovalForm, RetryForm, RunForm, posted_inputs
from executions.loaders import load_execution
from executions.models import Execution, LogChunk, StepRun
from executions.retry import (
    AlreadyRetried,
    create_rerun,
    create_retry,
    plan_rerun,
    plan_retry,
)
from executions.services import abort_execution, answer_approval
from executions.states import ACTIVE
from pipelines import permissions
from stageline.errors import Conflict, Invalid, NotFound, Refusal
from stageline.htmx import done, htmx_target, is_htmx, render_dialog
from stageline.numbers import NumberError, parse_int

LIVE_TARGET = "execution-live"  # the whole live part (header, actions, history, graph)
LIVE_POLLER = "live-poller"  # the live poll: what changed since the event it names


def execution_url(execution: Execution) -> str:
    return reverse("execution", args=[execution.pk])


# --- the page -----------------------------------------------------------------------------


@require_GET
@login_required
@vary_on_headers("HX-Request")
def execution_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """The page; for its live poll (``?since=EVENT``), only what changed after that event."""
    execution = load_execution(request.user, pk)
    target = htmx_target(request)
    since_text = request.GET.get("since")
    if target == LIVE_POLLER and since_text is not None:
        try:
            since = parse_int(since_text, "since")
        except NumberError:
            return HttpResponse(
                f"'since' must be an event number (a whole number), not '{since_text[:40]}'.",
                status=400,
                content_type="text/plain; charset=utf-8",  # echoes the parameter: never as HTML
            )
        context = presenters.live_update_context(execution, request.user, since)
        return render(request, "executions/detail.html#live-update", context)
    attempt = _attempt(request)
    if isinstance(attempt, HttpResponse):
        return attempt
    context = presenters.page_context(execution, request.user, request.GET.get("step"), attempt)
    if target == LIVE_TARGET:
        return render(request, "executions/detail.html#execution-live", context)
    return render(request, "executions/detail.html", context)


@require_GET
@login_required
@vary_on_headers("HX-Request")
def step_log(request: HttpRequest, pk: int, step_pk: int) -> HttpResponse:
    """A step's log: the whole panel, or (``?after=SEQ``) only the chunks after the cursor.
    ``?attempt=N``: that attempt's log (each attempt of a step has its own; default the latest).
    A poll of the latest attempt's log that finds a newer attempt begun gets the whole panel
    of the new one instead (``HX-Retarget``)."""
    execution = load_execution(request.user, pk)
    step = _load_step(execution, step_pk)
    attempt = _attempt(request)
    if isinstance(attempt, HttpResponse):
        return attempt
    if not is_htmx(request):
        shown = f"&attempt={attempt}" if attempt is not None else ""
        return redirect(f"{execution_url(execution)}?step={step.pk}{shown}#log-panel")
    after_text = request.GET.get("after")
    if after_text is None:
        return render(
            request,
            "executions/detail.html#log-panel",
            {"execution": execution, **presenters.log_context(execution, step, attempt=attempt)},
        )
    try:
        after = parse_int(after_text, "after")
    except NumberError:
        return HttpResponse(
            f"'after' must be a log position (a whole number), not '{after_text[:40]}'.",
            status=400,
            content_type="text/plain; charset=utf-8",  # echoes the parameter: never as HTML
        )
    if attempt is not None and attempt < step.log_source.attempt_number:
        # The attempt being followed has ended and the next one has begun: show that one.
        panel = render(
            request,
            "executions/detail.html#log-panel",
            {"execution": execution, **presenters.log_context(execution, step)},
        )
        panel["HX-Retarget"] = "#log-panel"
        panel["HX-Reswap"] = "outerHTML"
        return panel
    log = presenters.log_context(execution, step, after=after, attempt=attempt)
    if not log["log_chunks"] and log["log_live"]:
        return HttpResponse(status=204)  # nothing new yet: the poller stays as it is
    context = {"execution": execution, "oob": True, **log}
    return render(request, "executions/detail.html#log-append", context)


@require_GET
@login_required
def step_log_download(request: HttpRequest, pk: int, step_pk: int) -> HttpResponseBase:
    """The step's whole log as stored (secrets masked, ANSI codes kept), as a text file: of its
    latest attempt, or of ``?attempt=N``."""
    execution = load_execution(request.user, pk)
    step = _load_step(execution, step_pk)
    attempt = _attempt(request)
    if isinstance(attempt, HttpResponse):
        return attempt
    source = step.log_source
    latest = source.attempt_number
    number = presenters.attempts_context(execution, step, attempt).open.number
    texts = (
        LogChunk.objects.filter(step_run=source, attempt=number)
        .order_by("seq")
        .values_list("text", flat=True)
    )
    shown = f"-attempt{number}" if number != latest else ""
    name = f"{execution.pipeline.identifier}-{execution.sequence}-{step.stage_run.identifier}-{step.identifier}{shown}.log"
    response = StreamingHttpResponse(
        (text.encode("utf-8") for text in texts.iterator(chunk_size=200)),
        content_type="text/plain; charset=utf-8",
    )
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


def _attempt(request: HttpRequest) -> int | None | HttpResponse:
    """``?attempt=N`` (None when absent), or the 400 answer naming what is wrong with it."""
    text = request.GET.get("attempt")
    if text is None or text == "":
        return None
    try:
        return parse_int(text, "attempt", minimum=1, maximum=32767)
    except NumberError:
        return HttpResponse(
            f"'attempt' must be an attempt number (1, 2, …), not '{text[:40]}'.",
            status=400,
            content_type="text/plain; charset=utf-8",  # echoes the parameter: never as HTML
        )


def _load_step(execution: Execution, step_pk: int) -> StepRun:
    step = (
        StepRun.objects.select_related("stage_run", "carried_from__execution", "decided_by")
        .filter(execution=execution, pk=step_pk)
        .first()
    )
    if step is None:
        raise NotFound("No such step in this execution.")
    return step


# --- dialogs --------------------------------------------------------------------------------


def _dialog_status(refusal: Refusal | None) -> int:
    return refusal.status if refusal is not None else 200


# Retry -----------------------------------------------------------------------------------


@require_http_methods(["GET", "POST"])
@login_required
@vary_on_headers("HX-Request")
def execution_retry(request: HttpRequest, pk: int) -> HttpResponse:
    """The Retry Failed Pipeline dialog (GET, re-rendered as the pick changes) and its submit."""
    execution = load_execution(request.user, pk)
    if request.method == "POST":
        return _retry_submit(request, execution)
    user = request.user
    params = request.GET
    error: Refusal | None = None
    try:
        plan = plan_retry(
            execution,
            user,
            from_stage=params.get("from_stage") or None,
            mode=params.get("mode") or None,
        )
    except Refusal as exc:
        error = exc
        plan = plan_retry(execution, user)
    # The dialog re-renders as the pick changes: it sends what was typed so far, which is kept.
    values = posted_inputs(params)
    form = RetryForm(entries=plan.inputs, values=values, spec=execution.version.spec)
    context = presenters.retry_context(execution, plan, form, values, error)
    if error is not None:
        return render_dialog(request, "executions/retry.html", context, status=error.status)
    if not plan.allowed:
        return render_dialog(
            request, "executions/retry.html", context, status=_dialog_status(plan.refusal)
        )
    target = htmx_target(request)
    if target in ("retry-plan", "retry-impact"):
        return render(request, f"executions/retry.html#{target}", context)
    return render_dialog(request, "executions/retry.html", context)


def _retry_submit(request: HttpRequest, execution: Execution) -> HttpResponse:
    user = request.user
    form = RetryForm(request.POST)
    error: Refusal | None = None
    if not form.is_valid():
        error = Invalid(" ".join(str(e) for errors in form.errors.values() for e in errors))
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
            return done(request, execution_url(exc.retry))
        except Refusal as exc:
            error = exc
        else:
            mode = f" ({retry.retry_mode.replace('_', ' ')})" if retry.retry_mode else ""
            messages.success(
                request,
                f"Retry #{retry.sequence} of #{execution.sequence} started from {presenters.resumed_label(retry)}{mode}.",
            )
            return done(request, execution_url(retry))
    # Show the dialog again, as it was posted, with the message.
    try:
        plan = plan_retry(
            execution,
            user,
            from_stage=request.POST.get("from_stage") or None,
            mode=request.POST.get("mode") or None,
        )
    except Refusal:
        plan = plan_retry(execution, user)
    form = RetryForm(request.POST, entries=plan.inputs, spec=execution.version.spec)
    form.is_valid()
    form.show_field_errors(error.field_errors)
    context = presenters.retry_context(execution, plan, form, posted_inputs(request.POST), error)
    return render_dialog(request, "executions/retry.html", context, status=error.status)


# Rerun -----------------------------------------------------------------------------------


@require_http_methods(["GET", "POST"])
@login_required
@vary_on_headers("HX-Request")
def execution_rerun(request: HttpRequest, pk: int) -> HttpResponse:
    """The Rerun dialog: every input of the current version editable, stages to run if allowed."""
    execution = load_execution(request.user, pk)
    user = request.user
    plan = plan_rerun(execution, user)
    if request.method == "GET":
        form = RunForm(entries=plan.inputs, spec=presenters.current_spec(execution))
        status = _dialog_status(plan.refusal)
        return render_dialog(
            request,
            "executions/rerun.html",
            presenters.rerun_context(execution, plan, form),
            status=status,
        )
    form = RunForm(request.POST, entries=plan.inputs, spec=presenters.current_spec(execution))
    error: Refusal
    try:
        rerun = create_rerun(
            execution=execution,
            user=user,
            inputs=form.posted_inputs(),
            stages=form.picked_stages(offered=plan.stage_selection),
        )
    except Refusal as exc:
        error = exc
    else:
        messages.success(request, f"Rerun #{rerun.sequence} of #{execution.sequence} started.")
        return done(request, execution_url(rerun))
    form.is_valid()
    form.show_field_errors(error.field_errors)
    return render_dialog(
        request,
        "executions/rerun.html",
        presenters.rerun_context(execution, plan, form, error),
        status=error.status,
    )


# Approve / Reject --------------------------------------------------------------------------


@require_http_methods(["GET", "POST"])
@login_required
@vary_on_headers("HX-Request")
def execution_approval(request: HttpRequest, pk: int) -> HttpResponse:
    """Approve or reject the approval waiting in a stage, with an optional comment."""
    execution = load_execution(request.user, pk)
    user = request.user
    form = ApprovalForm(request.POST if request.method == "POST" else None)
    stage = (
        request.POST.get("stage", "") if request.method == "POST" else request.GET.get("stage", "")
    )
    error: Refusal | None = None
    try:
        permissions.check(user, "approve", execution)
        if request.method == "POST":
            if not form.is_valid():
                raise Invalid(" ".join(str(e) for errors in form.errors.values() for e in errors))
            data = form.cleaned_data
            approve = data["decision"] == "approve"
            answered = answer_approval(
                execution=execution,
                stage=data["stage"],
                user=user,
                approve=approve,
                comment=data["comment"],
            )
            verb = "Approved" if approve else "Rejected"
            messages.success(
                request, f"{verb} stage '{answered.stage_run.name}' of #{execution.sequence}."
            )
            return done(request, execution_url(execution))
    except Refusal as exc:
        error = exc
    step, message = presenters.waiting_approval(execution, stage)
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
    return render_dialog(
        request, "executions/approval.html", context, status=error.status if error else 200
    )


# Abort -------------------------------------------------------------------------------------


@require_http_methods(["GET", "POST"])
@login_required
@vary_on_headers("HX-Request")
def execution_abort(request: HttpRequest, pk: int) -> HttpResponse:
    """Confirm (GET) and abort (POST) a running execution."""
    execution = load_execution(request.user, pk)
    user = request.user
    error: Refusal | None = None
    try:
        permissions.check(user, "execute", execution)
        if request.method == "POST":
            abort_execution(execution=execution, user=user)
            messages.success(request, f"Execution #{execution.sequence} aborted.")
            return done(request, execution_url(execution))
        if execution.status not in ACTIVE:
            raise Conflict(presenters.abort_refusal(execution, user))
    except Refusal as exc:
        error = exc
    context = {"execution": execution, "error": error.message if error else ""}
    return render_dialog(
        request, "executions/abort.html", context, status=error.status if error else 200
    )


@require_GET
@login_required
def waiting(request: HttpRequest) -> HttpResponse:
    """ "Waiting for me": every approval the signed-in user may answer, across projects."""
    rows = list(listing.waiting_for(request.user)[:200])
    return render(request, "executions/waiting.html", {"rows": rows})


@require_GET
@login_required
def waiting_count(request: HttpRequest) -> HttpResponse:
    """The header's count of what waits for the user (loaded by htmx, so pages pay nothing)."""
    count = listing.waiting_for(request.user).count()
    return render(request, "executions/_waiting_count.html", {"count": count})


@require_GET
@login_required
def jump(request: HttpRequest) -> HttpResponse:
    """The header's "Go to execution": straight to the one execution the text names, a choice
    when it names several (a number in several pipelines), 404 when none the user may see."""
    text = request.GET.get("q", "").strip()
    found = listing.find_executions(request.user, text)
    if found is None:
        raise Invalid(f"'{text[:60]}' is not {listing.JUMP_HELP}.")
    rows = list(found[:50])
    if len(rows) == 1:
        return redirect(execution_url(rows[0]))
    if not rows:
        raise NotFound(f"No execution '{text[:60]}' that you may see.")
    return render(request, "executions/jump.html", {"rows": rows, "text": text})
