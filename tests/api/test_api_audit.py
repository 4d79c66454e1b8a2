"""The API records the same audit events as the pages and the commands (issue 17 point 1): run,
retry, rerun, abort, approve and reject through /api/v1/ each leave the events (action and actor)
that the service leaves when the page calls it, because both call that one service.

Each case acts twice on twin executions of one pipeline: once by calling the service as the
page's view does, once through the API with a read-write token; the events each act added are
compared, and the one the audit trail is about (``retried``, ``aborted``, ...) must name the
person who acted."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from executions.models import Event, Execution
from executions.retry import create_rerun, create_retry
from executions.services import abort_execution, answer_approval, run_pipeline
from executions.states import Status
from tests.api.test_api import API, bearer, post
from tests.helpers.factories import make_pipeline
from tests.helpers.pages import APPROVAL_YAML, run


def waiting(pipeline, user) -> Execution:
    """An execution of the gated pipeline, waiting for its approval."""
    execution = run(pipeline, user)
    assert execution.status == Status.WAITING, execution.error
    return execution


def aborted(pipeline, user) -> Execution:
    return abort_execution(execution=waiting(pipeline, user), user=user)


@dataclass(frozen=True)
class Case:
    name: str
    who: str  # the persona who acts
    prepare: Callable  # (pipeline, personas) -> the execution acted on (None: the pipeline)
    service: Callable  # (target, user) -> calls the service as the page does
    url: Callable  # (target) -> the API's URL
    body: dict
    audited: str  # the action the audit trail records for this act


CASES = [
    Case(
        "run",
        "executor",
        lambda p, ps: p,
        lambda p, user: run_pipeline(pipeline=p, user=user, inputs={}),
        lambda p: f"{API}/projects/acme/web/pipelines/{p.identifier}/run",
        {},
        "created",
    ),
    Case(
        "retry",
        "executor",
        lambda p, ps: aborted(p, ps.executor),
        lambda e, user: create_retry(execution=e, user=user, from_stage="approve"),
        lambda e: f"{API}/executions/{e.pk}/retry",
        {"from_stage": "approve"},
        "retried",
    ),
    Case(
        "rerun",
        "executor",
        lambda p, ps: aborted(p, ps.executor),
        lambda e, user: create_rerun(execution=e, user=user, inputs={}),
        lambda e: f"{API}/executions/{e.pk}/rerun",
        {},
        "created",
    ),
    Case(
        "abort",
        "executor",
        lambda p, ps: waiting(p, ps.admin),
        lambda e, user: abort_execution(execution=e, user=user),
        lambda e: f"{API}/executions/{e.pk}/abort",
        {},
        "aborted",
    ),
    Case(
        "approve",
        "approver",
        lambda p, ps: waiting(p, ps.admin),
        lambda e, user: answer_approval(
            execution=e, stage="approve", user=user, approve=True, comment="ship it"
        ),
        lambda e: f"{API}/executions/{e.pk}/approve",
        {"stage": "approve", "comment": "ship it"},
        "approved",
    ),
    Case(
        "reject",
        "approver",
        lambda p, ps: waiting(p, ps.admin),
        lambda e, user: answer_approval(
            execution=e, stage="approve", user=user, approve=False, comment="not today"
        ),
        lambda e: f"{API}/executions/{e.pk}/reject",
        {"stage": "approve", "comment": "not today"},
        "rejected",
    ),
]


def events_after(mark: int) -> list[tuple[str, str | None]]:
    """The named events recorded after event ``mark``: (action, actor's username), in order."""
    return [
        (action, actor)
        for action, actor in Event.objects.filter(pk__gt=mark)
        .exclude(action="")
        .order_by("pk")
        .values_list("action", "actor__username")
    ]


def last_event() -> int:
    return Event.objects.order_by("-pk").values_list("pk", flat=True).first() or 0


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_the_api_records_the_events_the_page_records(client, personas, case):
    pipeline = make_pipeline(personas.project, APPROVAL_YAML)
    user = getattr(personas, case.who)
    by_page, by_api = case.prepare(pipeline, personas), case.prepare(pipeline, personas)

    mark = last_event()
    case.service(by_page, user)
    page_events = events_after(mark)

    mark = last_event()
    answer = post(client, case.url(by_api), case.body, bearer(user))
    assert answer.status_code in (200, 201), answer.content
    api_events = events_after(mark)

    assert (case.audited, user.username) in api_events, api_events
    assert api_events == page_events
