"""Approve / Reject a waiting stage from the execution page, with a comment."""

from __future__ import annotations

import pytest
from django.urls import reverse

from executions.models import Execution, Status, StepRun
from tests.helpers.factories import make_pipeline
from tests.helpers.pages import (
    APPROVAL_YAML,
    action_html,
    as_user,
    failed_serial,
    htmx,
    page_url,
    run,
    stage_card,
)
from tests.helpers.runs import drive


@pytest.fixture
def waiting(personas) -> Execution:
    execution = run(make_pipeline(personas.project, APPROVAL_YAML), personas.executor)
    assert execution.status == Status.WAITING
    return execution


def approval_url(execution: Execution) -> str:
    return reverse("execution_approval", args=[execution.pk])


def gate(execution: Execution) -> StepRun:
    return StepRun.objects.get(execution=execution, identifier="gate")


def test_the_page_shows_the_waiting_approval_and_who_may_answer_it(client, personas, waiting):
    html = as_user(client, personas.approver).get(page_url(waiting)).content.decode()
    card = stage_card(html, "approve")
    assert 'data-status="WAITING"' in card
    assert '<p class="approval-message">Ship v7 &lt;b&gt;now&lt;/b&gt;?</p>' in card
    button = action_html(html, "approve-approve")
    assert "Approve / Reject Approve production" in button and "disabled" not in button
    assert f'hx-get="{approval_url(waiting)}?stage=approve"' in button
    assert 'hx-trigger="every 2s"' in html, "a waiting execution keeps updating"

    html = as_user(client, personas.executor).get(page_url(waiting)).content.decode()
    button = action_html(html, "approve-approve")
    assert "disabled" in button and "You need the Approve permission on pipeline gated." in button


def test_the_dialog_shows_the_message_and_asks_for_a_comment(client, personas, waiting):
    response = as_user(client, personas.approver).get(
        approval_url(waiting) + "?stage=approve", headers=htmx()
    )
    html = response.content.decode()
    assert (
        response.status_code == 200
        and 'id="modal-title">Approve or reject Approve production<' in html
    )
    assert "Ship v7 &lt;b&gt;now&lt;/b&gt;?" in html and 'name="comment"' in html
    assert 'name="decision" value="approve"' in html and 'name="decision" value="reject"' in html
    assert '<input type="hidden" name="stage" value="approve">' in html


def test_approving_with_a_comment_lets_the_pipeline_continue(client, personas, waiting):
    as_user(client, personas.approver)
    response = client.post(
        approval_url(waiting),
        {"stage": "approve", "decision": "approve", "comment": "ship it"},
        headers=htmx(),
    )
    assert response.status_code == 200 and response["HX-Redirect"] == page_url(waiting)
    step = gate(waiting)
    assert (
        step.status == Status.SUCCESS
        and step.comment == "ship it"
        and step.decided_by == personas.approver
    )
    assert drive(waiting).status == Status.SUCCESS
    html = client.get(page_url(waiting)).content.decode()
    assert "Approved stage &#x27;Approve production&#x27; of #1." in html


def test_rejecting_ends_the_execution_rejected(client, personas, waiting):
    response = as_user(client, personas.admin).post(
        approval_url(waiting), {"stage": "approve", "decision": "reject", "comment": "not today"}
    )
    assert response.status_code == 302 and response["Location"] == page_url(waiting)
    waiting.refresh_from_db()
    assert gate(waiting).status == Status.REJECTED and waiting.status == Status.REJECTED
    assert "rejected by admin: not today" in client.get(page_url(waiting)).content.decode()


@pytest.mark.parametrize(
    ("post", "status", "message"),
    [
        (
            {"stage": "approve", "decision": "maybe"},
            400,
            "Choose Approve or Reject, not &#x27;maybe&#x27;.",
        ),
        ({"stage": "approve"}, 400, "Choose Approve or Reject."),
        ({"stage": "ghost", "decision": "approve"}, 404, "has no stage &#x27;ghost&#x27;"),
        (
            {"stage": "build", "decision": "approve"},
            409,
            "Stage &#x27;build&#x27; of execution #1 is not waiting for approval.",
        ),
        (
            {"stage": "approve", "decision": "approve", "comment": "x" * 2001},
            400,
            "at most 2000 characters",
        ),
    ],
    ids=["bad-decision", "no-decision", "unknown-stage", "not-waiting", "long-comment"],
)
def test_a_bad_answer_is_refused_with_a_message_and_changes_nothing(
    client, personas, waiting, post, status, message
):
    response = as_user(client, personas.approver).post(approval_url(waiting), post, headers=htmx())
    assert response.status_code == status
    assert message in response.content.decode()
    assert gate(waiting).status == Status.WAITING


def test_an_approval_answered_already_is_a_conflict(client, personas, waiting):
    as_user(client, personas.approver)
    client.post(approval_url(waiting), {"stage": "approve", "decision": "approve"}, headers=htmx())
    as_user(client, personas.admin)
    response = client.post(
        approval_url(waiting), {"stage": "approve", "decision": "reject"}, headers=htmx()
    )
    assert response.status_code == 409 and response["HX-Retarget"] == "#modal-body"
    assert "is not waiting for approval" in response.content.decode()
    assert gate(waiting).status == Status.SUCCESS
    response = client.get(approval_url(waiting), headers=htmx())
    assert (
        response.status_code == 409
        and "No stage of execution #1 is waiting for approval." in response.content.decode()
    )


def test_no_approve_button_when_nothing_waits(client, personas):
    html = (
        as_user(client, personas.approver).get(page_url(failed_serial(personas))).content.decode()
    )
    assert "Approve / Reject" not in html


@pytest.mark.parametrize("hx", [False, True], ids=["form", "htmx"])
def test_only_approvers_and_admins_may_answer(client, personas, hx, waiting):
    headers = htmx("modal-body") if hx else {}
    for name, status in {"executor": 403, "viewer": 403, "stranger": 404}.items():
        as_user(client, getattr(personas, name))
        assert (
            client.get(approval_url(waiting) + "?stage=approve", headers=headers).status_code
            == status
        ), name
        response = client.post(
            approval_url(waiting), {"stage": "approve", "decision": "approve"}, headers=headers
        )
        assert response.status_code == status, name
        if status == 403:
            assert "You need the Approve permission on pipeline gated." in response.content.decode()
        assert gate(waiting).status == Status.WAITING
    for name in ("approver", "admin"):
        execution = run(waiting.pipeline, personas.executor)
        as_user(client, getattr(personas, name))
        assert (
            client.get(approval_url(execution) + "?stage=approve", headers=headers).status_code
            == 200
        ), name
        response = client.post(
            approval_url(execution), {"stage": "approve", "decision": "approve"}, headers=headers
        )
        assert response.status_code == (200 if hx else 302), name
        assert gate(execution).status == Status.SUCCESS
