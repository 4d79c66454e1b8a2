"""The JSON API, version 1: /api/v1/ (OpenAPI 3 schema at /api/v1/schema, docs at /api/v1/docs).

Thin like the pages' views: each endpoint loads its object through the one loader
(``pipelines.loaders``, ``executions.loaders``: 404 for what the caller may not see), calls the
same service as the page and the command (``executions.services``, ``executions.retry``), and
answers its result as JSON. The services check the permissions and record the audit events;
their refusals (``stageline.errors``) become 404 / 403 / 400 / 409 with ``{"detail", "errors"}``
in ``refusal_answer``, the one exception handler of this API. Bad parameters are 400 with the
field named, never 422 or 500. See docs/api.md.
"""

from __future__ import annotations

from typing import Annotated, Any

from django.db.models import Prefetch
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from ninja import NinjaAPI, Path, Query
from ninja.errors import AuthenticationError, HttpError, ValidationError
from ninja.responses import Status as Answer

from api import schemas
from api.auth import SessionAuth, TokenAuth
from api.tokens import RateLimited, TokenRefused
from executions import bulk, listing, presenters
from executions.forms import parse_filters
from executions.loaders import load_execution
from executions.models import Execution, PendingWait, StageRun, StepRun
from executions.retry import (
    RetryPlan,
    create_rerun,
    create_retry,
    plan_retry,
)
from executions.services import (
    abort_execution,
    answer_approval,
    answer_intervention,
    run_pipeline,
)
from executions.states import Status
from pipelines import permissions
from pipelines.loaders import load_pipeline, load_project
from pipelines.models import Pipeline, Project
from stageline.errors import Conflict, Forbidden, Invalid, NotFound, Refusal

MAX_ID = 2**63 - 1
MAX_ATTEMPT = 32767  # StepAttempt.number is a small integer
LOG_BYTES_PER_ANSWER = 1024 * 1024
PAGE_MAX = 100
UNION_MEMBERS = {"str", "int", "float", "bool", "none"}

api = NinjaAPI(
    title="Stageline API",
    version="1",
    description=(
        "Run pipelines, follow executions, retry from a failed stage, rerun, abort, answer "
        "approvals and interventions. Authenticate with a personal access token "
        "(`Authorization: Bearer stl_…`, made on the My tokens page) or the browser session "
        "(writes need the X-CSRFToken header). Refusals: 401 not signed in, 403 may see but not do, 404 may not see (or "
        "does not exist), 400 bad input (with `errors` by field), 409 the state forbids it, "
        "429 rate limit (Retry-After)."
    ),
    urls_namespace="api-v1",
    auth=[TokenAuth(), SessionAuth()],
    openapi_url="/schema",
    docs_url="/docs",
)

ERRORS: dict[int, Any] = {code: schemas.Error for code in (400, 401, 403, 404, 409, 429)}
Id = Annotated[int, Path(ge=1, le=MAX_ID)]


# --- refusals: one handler ------------------------------------------------------------------


def _error(request: HttpRequest, status: int, detail: str, **more: Any) -> HttpResponse:
    return api.create_response(request, {"detail": detail, "errors": {}, **more}, status=status)


@api.exception_handler(Refusal)
def refusal_answer(request: HttpRequest, exc: Refusal) -> HttpResponse:
    """A service's refusal: its status, its message, its field errors, and what it adds (the
    retry an AlreadyRetried points to, as ``retry_id``)."""
    extra = {k: v for k, v in exc.extra.items() if isinstance(v, str | int | float | bool)}
    body = {"detail": exc.message, "errors": exc.field_errors, **extra}
    return api.create_response(request, body, status=exc.status)


@api.exception_handler(ValidationError)
def invalid_parameters(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    """Parameters or a body that do not fit the schema: 400 naming each field."""
    errors: dict[str, str] = {}
    for error in exc.errors:
        where = [str(part) for part in error.get("loc", ()) if part not in ("body", "payload")]
        if where and where[0] in ("query", "path"):
            where = where[1:]
        message = str(error.get("msg", "invalid"))
        if where and where[-1] in UNION_MEMBERS:  # a value that fits none of InputValue's types
            where, message = where[:-1], "Input should be a string, a number, true/false or null"
        name = ".".join(where) or "body"
        errors.setdefault(name, message)
    detail = "Bad request: " + "; ".join(f"{name}: {msg}" for name, msg in errors.items())
    return api.create_response(request, {"detail": detail, "errors": errors}, status=400)


@api.exception_handler(TokenRefused)
def token_refused(request: HttpRequest, exc: TokenRefused) -> HttpResponse:
    response = _error(request, 401, exc.message)
    response["WWW-Authenticate"] = 'Bearer realm="stageline"'
    return response


@api.exception_handler(AuthenticationError)
def not_signed_in(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    response = _error(
        request,
        401,
        "Not signed in: send 'Authorization: Bearer <access token>' (made on the My tokens "
        "page) or sign in.",
    )
    response["WWW-Authenticate"] = 'Bearer realm="stageline"'
    return response


@api.exception_handler(RateLimited)
def rate_limited(request: HttpRequest, exc: RateLimited) -> HttpResponse:
    response = _error(request, 429, exc.message)
    response["Retry-After"] = str(exc.retry_after)
    return response


@api.exception_handler(HttpError)
def http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    detail = str(exc)
    if exc.status_code == 400 and "parse request body" in detail:
        detail = "The request body is not valid JSON (send Content-Type: application/json)."
    return _error(request, exc.status_code, detail)


# --- shapes ---------------------------------------------------------------------------------


def _user(request: HttpRequest) -> Any:
    return request.auth  # type: ignore[attr-defined]


def _path(pipeline: Pipeline) -> str:
    project = pipeline.project
    return f"{project.organization.slug}/{project.slug}/{pipeline.identifier}"


def _retried_as(execution: Execution) -> int | None:
    """The id of the retry of ``execution`` (read with ``select_related("retry")``)."""
    try:
        return execution.retry.pk
    except Execution.DoesNotExist:
        return None


def _summary(execution: Execution) -> dict[str, Any]:
    return {
        "id": execution.pk,
        "pipeline": _path(execution.pipeline),
        "sequence": execution.sequence,
        "status": execution.status,
        "status_label": presenters.label(execution.status),
        "triggered_by": execution.triggered_by.username if execution.triggered_by else None,
        "created_at": execution.created_at,
        "started_at": execution.started_at,
        "finished_at": execution.finished_at,
        "duration_seconds": execution.duration_seconds,
        "attempt": execution.attempt,
        "retry_of": execution.retry_of_id,
        "retried_as": _retried_as(execution),
        "rerun_of": execution.rerun_of_id,
        "url": reverse("execution", args=[execution.pk]),
    }


def _fresh(execution: Execution) -> Execution:
    found = Execution.objects.select_related(
        "pipeline__project__organization", "triggered_by", "retry"
    ).get(pk=execution.pk)
    return found


def _carried_from(run: StageRun | StepRun) -> int | None:
    return run.carried_from.execution_id if run.carried_from is not None else None


def _intervention_waits(execution: Execution) -> dict[int, PendingWait]:
    """The intervention timeouts of ``execution`` not applied yet, by step run (at most one per
    step): when and how each applies if nobody answers."""
    return {
        wait.step_run_id: wait
        for wait in PendingWait.objects.filter(
            execution=execution,
            kind=PendingWait.Kind.INTERVENTION,
            state=PendingWait.State.PENDING,
        )
    }


def _attempt(execution: Execution, step: StepRun, row: presenters.AttemptRow) -> dict[str, Any]:
    log_url = reverse("api-v1:step_log", args=[execution.pk, step.pk])
    return {
        "number": row.number,
        "status": row.status,
        "status_label": presenters.label(row.status),
        "exit_code": row.exit_code,
        "error_class": row.error_class,
        "error": row.error,
        "worker": row.worker,
        "started_at": row.started_at,
        "finished_at": row.finished_at,
        "duration_seconds": row.duration_seconds,
        "log_bytes": row.log_bytes,
        "latest": row.latest,
        "log_url": f"{log_url}?attempt={row.number}",
    }


def _step(execution: Execution, step: StepRun, waits: dict[int, PendingWait]) -> dict[str, Any]:
    """A step run (read with ``select_related("stage_run", "carried_from", "decided_by")``) with
    its attempts (``presenters.attempts_context``, as the page shows them: earlier ones are
    read only for a step that had more than one)."""
    attempts = presenters.attempts_context(execution, step)
    intervention = None
    if step.status == Status.INTERVENTION_WAITING:
        timeout = waits.get(step.pk)
        intervention = {
            "due_at": timeout.due_at if timeout else step.deadline,
            "on_timeout": timeout.on_timeout if timeout else None,
            "answer_url": reverse("api-v1:intervene", args=[execution.pk, step.pk]),
        }
    return {
        "id": step.pk,
        "identifier": step.identifier,
        "name": step.name,
        "type": step.type,
        "status": step.status,
        "status_label": presenters.label(step.status),
        "started_at": step.started_at,
        "finished_at": step.finished_at,
        "exit_code": step.exit_code,
        "error": step.error,
        "attempts": step.attempts,
        "attempts_planned": attempts.planned,
        "attempt_history": [_attempt(execution, step, row) for row in attempts.rows],
        "next_attempt_at": attempts.next_at,
        "intervention": intervention,
        "decided_by": step.decided_by.username if step.decided_by else None,
        "decided_at": step.decided_at,
        "comment": step.comment,
        "carried_from_execution": _carried_from(step),
        "log_bytes": step.log_bytes,
        "log_url": reverse("api-v1:step_log", args=[execution.pk, step.pk]),
    }


def _detail(execution: Execution) -> dict[str, Any]:
    execution = _fresh(execution)
    stage_runs = (
        StageRun.objects.filter(execution=execution)
        .select_related("carried_from")
        .prefetch_related(
            Prefetch(
                "step_runs",
                queryset=StepRun.objects.select_related("carried_from", "decided_by").order_by(
                    "position"
                ),
            )
        )
        .order_by("position")
    )
    waits = _intervention_waits(execution)
    stages = [
        {
            "identifier": run.identifier,
            "name": run.name,
            "group_index": run.group_index,
            "status": run.status,
            "status_label": presenters.label(run.status),
            "started_at": run.started_at,
            "finished_at": run.finished_at,
            "error": run.error,
            "carried_from_execution": _carried_from(run),
            "steps": [_step(execution, step, waits) for step in run.step_runs.all()],
        }
        for run in stage_runs
    ]
    chain = [
        {"id": e.pk, "sequence": e.sequence, "attempt": e.attempt, "status": e.status}
        for e in Execution.objects.chain_of(execution)
    ]
    return {
        **_summary(execution),
        "version": execution.version.number,
        "error": execution.error,
        "inputs": {key: str(value) for key, value in execution.inputs.items()},
        "secret_inputs": sorted(execution.secret_inputs),
        "resumed_from": execution.resumed_from,
        "retry_mode": execution.retry_mode,
        "reason": execution.reason,
        "changed_inputs": list(execution.changed_inputs),
        "stages": stages,
        "chain": chain,
    }


def _plan(plan: RetryPlan) -> dict[str, Any]:
    return {
        "execution": plan.execution.pk,
        "options": [vars(option) for option in plan.options],
        "selected": plan.selected.key if plan.selected else None,
        "mode": plan.mode,
        "carried": [
            {
                "identifier": c.identifier,
                "name": c.name,
                "status": c.status,
                "from_sequence": c.from_sequence,
                "from_execution": c.from_execution_id,
                "duration_seconds": c.duration_seconds,
                "note": c.note,
            }
            for c in plan.carried
        ],
        "run_again": [vars(stage) for stage in plan.run_again],
        "inputs": [
            {
                "key": f.key,
                "type": f.variable.type,
                "stage": f.variable.stage,
                "value": f.value,
                "secret": f.is_secret,
                "has_value": f.has_value,
                "editable": f.editable,
                "reason": f.reason,
            }
            for f in plan.inputs
        ],
        "time_saved_seconds": plan.time_saved_seconds,
        "pipeline_changed": plan.pipeline_changed,
        "diff": plan.diff,
    }


# --- reading --------------------------------------------------------------------------------


@api.get("/projects", response={200: list[schemas.Project], **ERRORS}, tags=["read"])
def projects(request: HttpRequest) -> list[dict[str, Any]]:
    """The projects the caller may see."""
    found = permissions.visible_projects(_user(request)).select_related("organization")
    return [
        {
            "organization": p.organization.slug,
            "slug": p.slug,
            "name": p.name,
            "url": reverse("project", args=[p.organization.slug, p.slug]),
        }
        for p in found.order_by("organization__slug", "slug")
    ]


@api.get(
    "/projects/{org}/{project}/pipelines",
    response={200: list[schemas.Pipeline], **ERRORS},
    tags=["read"],
)
def pipelines(request: HttpRequest, org: str, project: str) -> list[dict[str, Any]]:
    """The pipelines of a project that the caller may see, with their last execution."""
    user = _user(request)
    project_obj = load_project(user, org, project)
    rows = listing.pipelines_with_last_execution(user, project_obj)
    rows_by_version = {
        p.pk: p.current_version.number if p.current_version else None
        for p in Pipeline.objects.filter(pk__in=[r.pk for r in rows]).select_related(
            "current_version"
        )
    }
    permissions.prefetch(user, rows)
    return [
        {
            "identifier": p.identifier,
            "name": p.name,
            "version": rows_by_version.get(p.pk),
            "last_execution": {
                "id": p.last_id,
                "sequence": p.last_number,
                "status": p.last_status,
                "created_at": p.last_at,
            }
            if p.last_id
            else None,
            "can_run": permissions.can(user, "execute", p),
            "url": reverse("pipeline", args=[org, project, p.identifier]),
        }
        for p in rows
    ]


def _executions(
    request: HttpRequest, project: Project, pipeline: Pipeline | None, limit: int
) -> dict[str, Any]:
    """The page of executions the filters select: the page's own filter rules and messages
    (``ExecutionFilterForm``), keyset cursors (``listing.page_of``)."""
    user = _user(request)
    visible = (
        None
        if pipeline is not None
        else permissions.visible_pipelines(user).filter(project=project)
    )
    form = parse_filters(request.GET, pipelines=visible)
    filters = form.filters(pipeline=pipeline)
    queryset = listing.apply_filters(
        listing.visible_executions(user, project=project, pipeline=pipeline), filters
    )
    page = listing.page_of(
        queryset,
        before=form.cleaned_data["before"],
        after=form.cleaned_data["after"],
        size=limit,
        only_pipelines=listing.pipelines_for_newest_page(user, filters, project=project),
    )
    return {
        "items": [
            # ``needs_intervention``: annotated by ``listing.page_of``, as for the page's marker
            {**_summary(row), "needs_intervention": row.needs_intervention}  # type: ignore[attr-defined]
            for row in page.rows
        ],
        "older": page.older,
        "newer": page.newer,
    }


FilterParam = Annotated[str | None, Query(description="as on the page")]
Limit = Annotated[int, Query(ge=1, le=PAGE_MAX, description="executions per page")]
Needs = Annotated[
    str | None,
    Query(
        description="only executions that need a person: "
        + ", ".join(f"{code} ({label.lower()})" for code, label in listing.NEEDS)
    ),
]


@api.get(
    "/projects/{org}/{project}/executions",
    response={200: schemas.ExecutionPage, **ERRORS},
    tags=["read"],
)
def project_executions(
    request: HttpRequest,
    org: str,
    project: str,
    pipeline: FilterParam = None,
    status: FilterParam = None,
    who: FilterParam = None,
    since: Annotated[str | None, Query(description="YYYY-MM-DD")] = None,
    until: Annotated[str | None, Query(description="YYYY-MM-DD, included")] = None,
    needs: Needs = None,
    before: Annotated[str | None, Query(description="cursor: `older` of a page")] = None,
    after: Annotated[str | None, Query(description="cursor: `newer` of a page")] = None,
    limit: Limit = listing.PAGE_SIZE,
) -> dict[str, Any]:
    """Executions of a project, newest first, filtered as on the project page; a page at a
    time (keyset cursors, no offset)."""
    project_obj = load_project(_user(request), org, project)
    return _executions(request, project_obj, None, limit)


@api.get(
    "/projects/{org}/{project}/pipelines/{identifier}/executions",
    response={200: schemas.ExecutionPage, **ERRORS},
    tags=["read"],
)
def pipeline_executions(
    request: HttpRequest,
    org: str,
    project: str,
    identifier: str,
    status: FilterParam = None,
    who: FilterParam = None,
    since: Annotated[str | None, Query(description="YYYY-MM-DD")] = None,
    until: Annotated[str | None, Query(description="YYYY-MM-DD, included")] = None,
    needs: Needs = None,
    before: Annotated[str | None, Query(description="cursor: `older` of a page")] = None,
    after: Annotated[str | None, Query(description="cursor: `newer` of a page")] = None,
    limit: Limit = listing.PAGE_SIZE,
) -> dict[str, Any]:
    """Executions of one pipeline, as on the pipeline page's Executions tab."""
    pipeline = load_pipeline(_user(request), org, project, identifier)
    return _executions(request, pipeline.project, pipeline, limit)


@api.get("/executions/{pk}", response={200: schemas.ExecutionDetail, **ERRORS}, tags=["read"])
def execution_detail(request: HttpRequest, pk: Id) -> dict[str, Any]:
    """An execution with its stages, their steps and its retry chain."""
    return _detail(load_execution(_user(request), pk))


def _step_of(execution: Execution, step_pk: int) -> StepRun:
    """Step run ``step_pk`` of ``execution`` (already loaded for the caller): 404 otherwise."""
    step = (
        StepRun.objects.select_related("stage_run", "carried_from__execution", "decided_by")
        .filter(execution=execution, pk=step_pk)
        .first()
    )
    if step is None:
        raise NotFound(f"Execution {execution.pk} has no step {step_pk}.")
    return step


def _utf8_start(data: bytes, index: int) -> int:
    """``index`` moved forward to the start of a character."""
    while index < len(data) and (data[index] & 0xC0) == 0x80:
        index += 1
    return index


def _utf8_end(data: bytes, index: int) -> int:
    """``index`` moved back so that no character is cut at it."""
    while 0 < index < len(data) and (data[index] & 0xC0) == 0x80:
        index -= 1
    return index


@api.get(
    "/executions/{pk}/steps/{step_pk}/log",
    response={200: schemas.StepLog, **ERRORS},
    tags=["read"],
    url_name="step_log",
)
def step_log(
    request: HttpRequest,
    pk: Id,
    step_pk: Id,
    after: Annotated[int, Query(ge=0, le=MAX_ID, description="byte offset to read from")] = 0,
    attempt: Annotated[
        int | None, Query(ge=1, le=MAX_ATTEMPT, description="an attempt's log (default: latest)")
    ] = None,
) -> dict[str, Any]:
    """A step's log from byte ``after`` on (at most 1 MiB an answer): poll with ``next_offset``
    until ``complete`` and not ``more``. Each attempt of a step has a log of its own: the
    latest, or ``attempt`` (404 naming the attempts there are when it has no such attempt). A
    carried-over step shows its original's log."""
    execution = load_execution(_user(request), pk)
    step = _step_of(execution, step_pk)
    # Reads the step before its chunks; NotFound for an attempt the step has not had.
    log = presenters.log_context(execution, step, attempt=attempt)
    data = "".join(chunk.text for chunk in log["log_chunks"]).encode("utf-8")
    if after > len(data):
        raise Invalid(
            f"'after' ({after}) is past the end of the log ({len(data)} bytes so far).",
            field_errors={"after": "past the end of the log"},
        )
    start = _utf8_start(data, after)
    end = _utf8_end(data, min(len(data), start + LOG_BYTES_PER_ANSWER))
    facts = log["log_facts"]
    return {
        "step": step.pk,
        "attempt": log["log_attempts"].open.number,
        "latest": log["log_attempts"].open.latest,
        "offset": start,
        "next_offset": end,
        "text": data[start:end].decode("utf-8", errors="replace"),
        "complete": not log["log_live"],
        "more": end < len(data),
        "truncated": log["log_source"].log_truncated,
        "exit_code": facts.exit_code,
        "outputs": {key: value for key, value in facts.outputs},
    }


# --- acting ---------------------------------------------------------------------------------


@api.post(
    "/projects/{org}/{project}/pipelines/{identifier}/run",
    response={201: schemas.ExecutionSummary, **ERRORS},
    tags=["act"],
)
def run(
    request: HttpRequest, org: str, project: str, identifier: str, payload: schemas.RunIn
) -> Answer[dict[str, Any]]:
    """Run the pipeline's current version with these runtime inputs (Execute permission)."""
    user = _user(request)
    pipeline = load_pipeline(user, org, project, identifier)
    execution = run_pipeline(
        pipeline=pipeline, user=user, inputs=payload.inputs, stages=payload.stages
    )
    return Answer(201, _summary(_fresh(execution)))


@api.get("/executions/{pk}/retry", response={200: schemas.RetryPlan, **ERRORS}, tags=["act"])
def retry_plan(
    request: HttpRequest,
    pk: Id,
    from_stage: Annotated[str | None, Query(description="default: the failed stage")] = None,
    mode: Annotated[str | None, Query(description="failed_only (default) or all")] = None,
) -> dict[str, Any]:
    """The dry run of a retry: what would be carried over, what runs again, which inputs may
    change, the time saved. Changes nothing. Refused as the submit would be (403 without
    Execute, 409 when the execution cannot be retried, with the reason)."""
    user = _user(request)
    execution = load_execution(user, pk)
    plan = plan_retry(execution, user, from_stage=from_stage or None, mode=mode or None)
    if not plan.allowed:
        if not permissions.can(user, "execute", execution):
            raise Forbidden(plan.reason)
        if plan.latest is not None:  # retried already: where the chain goes on
            raise Conflict(plan.reason, latest_id=plan.latest.pk)
        raise Conflict(plan.reason)
    return _plan(plan)


@api.post(
    "/executions/{pk}/retry", response={201: schemas.ExecutionSummary, **ERRORS}, tags=["act"]
)
def retry(request: HttpRequest, pk: Id, payload: schemas.RetryIn) -> Answer[dict[str, Any]]:
    """Retry a failed execution from ``from_stage``: earlier stages are carried over. 409 with
    ``retry_id`` when it was retried already."""
    user = _user(request)
    execution = load_execution(user, pk)
    created = create_retry(
        execution=execution,
        user=user,
        from_stage=payload.from_stage.strip(),
        mode=payload.mode or None,
        inputs=payload.inputs,
        reason=payload.reason,
    )
    return Answer(201, _summary(_fresh(created)))


@api.post(
    "/executions/{pk}/rerun", response={201: schemas.ExecutionSummary, **ERRORS}, tags=["act"]
)
def rerun(request: HttpRequest, pk: Id, payload: schemas.RerunIn) -> Answer[dict[str, Any]]:
    """Run the pipeline's current version again, inputs prefilled from this execution."""
    user = _user(request)
    execution = load_execution(user, pk)
    created = create_rerun(
        execution=execution, user=user, inputs=payload.inputs, stages=payload.stages
    )
    return Answer(201, _summary(_fresh(created)))


@api.post(
    "/executions/{pk}/abort", response={200: schemas.ExecutionSummary, **ERRORS}, tags=["act"]
)
def abort(request: HttpRequest, pk: Id) -> dict[str, Any]:
    """Abort a running execution."""
    user = _user(request)
    execution = load_execution(user, pk)
    abort_execution(execution=execution, user=user)
    return _summary(_fresh(execution))


def _answer(request: HttpRequest, pk: int, payload: schemas.ApprovalIn, approve: bool) -> Any:
    user = _user(request)
    execution = load_execution(user, pk)
    permissions.check(user, "approve", execution)
    stage = payload.stage.strip()
    if not stage:
        waiting = list(
            StepRun.objects.filter(
                execution=execution, type="Approval", status=Status.WAITING
            ).values_list("stage_run__identifier", flat=True)
        )
        if not waiting:
            raise Conflict(f"No stage of execution #{execution.sequence} is waiting for approval.")
        if len(waiting) > 1:
            raise Invalid(
                f"Several stages wait for approval ({', '.join(waiting)}): name one in 'stage'.",
                field_errors={"stage": "required: several stages wait"},
            )
        stage = waiting[0]
    answer_approval(
        execution=execution, stage=stage, user=user, approve=approve, comment=payload.comment
    )
    return _summary(_fresh(execution))


@api.post(
    "/executions/{pk}/approve", response={200: schemas.ExecutionSummary, **ERRORS}, tags=["act"]
)
def approve(request: HttpRequest, pk: Id, payload: schemas.ApprovalIn) -> Any:
    """Approve the approval waiting in ``stage`` (Approve permission)."""
    return _answer(request, pk, payload, approve=True)


@api.post(
    "/executions/{pk}/reject", response={200: schemas.ExecutionSummary, **ERRORS}, tags=["act"]
)
def reject(request: HttpRequest, pk: Id, payload: schemas.ApprovalIn) -> Any:
    """Reject the approval waiting in ``stage``: the execution ends REJECTED."""
    return _answer(request, pk, payload, approve=False)


@api.post(
    "/executions/{pk}/steps/{step_pk}/intervention",
    response={200: schemas.InterventionAnswer, **ERRORS},
    tags=["act"],
    url_name="intervene",
)
def intervene(
    request: HttpRequest, pk: Id, step_pk: Id, payload: schemas.InterventionIn
) -> dict[str, Any]:
    """Answer a failed step waiting for intervention (a failure strategy's
    ``manual_intervention``; Execute permission): ``retry`` starts a new attempt now,
    ``ignore``, ``mark_as_success``, ``mark_as_failure`` and ``abort`` end it as the rule would.
    409 when the step is not (or no longer) waiting: of two answers the first wins, the second
    says what the step is now (``step_status``, ``decided_by``)."""
    user = _user(request)
    execution = load_execution(user, pk)
    step = _step_of(execution, step_pk)
    try:
        answer_intervention(
            execution=execution,
            step=f"{step.stage_run.identifier}.{step.identifier}",
            user=user,
            action=payload.action,
            comment=payload.comment,
        )
    except Conflict as refused:  # it waits no more: say what it is now, and who answered
        steps = refused.extra.get("steps")
        now = steps[0] if isinstance(steps, list) and steps else _step_of(execution, step_pk)
        raise Conflict(
            refused.message,
            step_status=now.status,
            decided_by=now.decided_by.username if now.decided_by else "",
        ) from refused
    answered = _step_of(execution, step_pk)
    return {
        "execution": _summary(_fresh(execution)),
        "step": _step(execution, answered, _intervention_waits(execution)),
    }


# --- bulk retry -------------------------------------------------------------------------------


def _bulk(selection: bulk.BulkSelection, items: list[bulk.BulkItem]) -> dict[str, Any]:
    return {
        "items": [
            {
                "execution": item.execution.pk,
                "pipeline": _path(item.execution.pipeline),
                "sequence": item.execution.sequence,
                "status": item.execution.status,
                "outcome": item.outcome,
                "reason": item.reason,
                "from_stage": item.plan.selected.key if item.plan and item.plan.selected else None,
                "mode": item.plan.mode if item.plan else "",
                "carried": [c.identifier for c in item.plan.carried] if item.plan else [],
                "run_again": [r.identifier for r in item.plan.run_again] if item.plan else [],
                "retry": item.retry.pk if item.retry else None,
            }
            for item in items
        ],
        "capped": selection.capped,
        "missing": selection.missing,
    }


def _project_pipelines(user: Any, project: Project) -> Any:
    return permissions.visible_pipelines(user).filter(project=project)


@api.get(
    "/projects/{org}/{project}/retries",
    response={200: schemas.BulkRetry, **ERRORS},
    tags=["act"],
)
def bulk_retry_plan(
    request: HttpRequest,
    org: str,
    project: str,
    ids: Annotated[list[int] | None, Query(description="executions to retry")] = None,
    pipeline: FilterParam = None,
    status: FilterParam = None,
    who: FilterParam = None,
    since: Annotated[str | None, Query(description="YYYY-MM-DD")] = None,
    until: Annotated[str | None, Query(description="YYYY-MM-DD, included")] = None,
    mode: Annotated[
        str | None, Query(description="a failed parallel group: failed_only (default) or all")
    ] = None,
) -> dict[str, Any]:
    """The preview of a bulk retry (changes nothing): for the executions ``ids``, or without
    ids all retryable executions matching the filters (newest 50), what each retry would carry
    over and run again from its failed stage, or why it cannot be retried."""
    user = _user(request)
    project_obj = load_project(user, org, project)
    if ids:
        selection = bulk.bulk_selection(user, project_obj, ids=ids)
    else:
        form = parse_filters(request.GET, pipelines=_project_pipelines(user, project_obj))
        selection = bulk.bulk_selection(user, project_obj, filters=form.filters())
    return _bulk(selection, bulk.plan_bulk_retry(user, selection.executions, mode=mode))


@api.post(
    "/projects/{org}/{project}/retries",
    response={200: schemas.BulkRetry, **ERRORS},
    tags=["act"],
)
def bulk_retry(
    request: HttpRequest, org: str, project: str, payload: schemas.BulkRetryIn
) -> dict[str, Any]:
    """Retry many executions, each from its failed stage (failed stages only in a parallel
    group), each in its own transaction and at most once; the answer reports each one."""
    user = _user(request)
    project_obj = load_project(user, org, project)
    filters = None
    if payload.filter is not None:
        form = parse_filters(payload.filter.dict(), pipelines=_project_pipelines(user, project_obj))
        filters = form.filters()
    selection = bulk.bulk_selection(user, project_obj, ids=payload.ids, filters=filters)
    items = bulk.create_bulk_retry(
        user, selection.executions, mode=payload.mode, reason=payload.reason
    )
    return _bulk(selection, items)
