""" "Go to execution" in the header: an id, a number or a pipeline and number takes the user to
the execution (or a choice when several match); what they may not see is never found."""

from __future__ import annotations

import pytest
from django.urls import reverse

from executions.models import Execution, Status
from tests.helpers.factories import grant, make_pipeline
from tests.helpers.pages import APPROVAL_YAML, as_user, page_url, run


@pytest.fixture
def executions(personas) -> tuple[Execution, Execution]:
    ours = run(make_pipeline(personas.project, APPROVAL_YAML), personas.executor)
    theirs = run(make_pipeline(personas.other_project, APPROVAL_YAML), personas.stranger)
    assert ours.status == theirs.status == Status.WAITING and ours.sequence == theirs.sequence
    return ours, theirs


def jump(client, user, text: str):
    return as_user(client, user).get(reverse("jump"), {"q": text})


@pytest.mark.parametrize(
    "text", ["{pk}", "id:{pk}", " {pk} ", "#1", "gated #1", "gated 1", "acme/web/gated#1"]
)
def test_a_name_the_user_may_see_goes_straight_to_the_execution(client, personas, executions, text):
    ours, _ = executions
    response = jump(client, personas.viewer, text.format(pk=ours.pk))
    assert response.status_code == 302 and response["Location"] == page_url(ours)


@pytest.mark.parametrize("persona", ["admin", "executor", "viewer", "approver"])
def test_an_execution_of_another_project_is_not_found_for_members(
    client, personas, executions, persona
):
    _, theirs = executions
    response = jump(client, getattr(personas, persona), str(theirs.pk))
    assert response.status_code == 404
    assert "There is nothing here, or you may not see it." in response.content.decode()


def test_the_stranger_finds_only_their_own(client, personas, executions):
    ours, theirs = executions
    assert jump(client, personas.stranger, "#1")["Location"] == page_url(theirs)
    assert jump(client, personas.stranger, str(ours.pk)).status_code == 404


def test_a_number_in_several_visible_pipelines_offers_a_choice(client, personas, executions):
    ours, theirs = executions
    grant(personas.viewer, personas.other_project, "viewer")
    response = jump(client, personas.viewer, "#1")
    html = response.content.decode()
    assert response.status_code == 200 and "Several executions you may see" in html
    assert page_url(ours) in html and page_url(theirs) in html
    assert jump(client, personas.viewer, "globex/ops/gated #1")["Location"] == page_url(theirs)


@pytest.mark.parametrize("text", ["", "deploy", "#", "1_000", "-3", "web deploy #2 x"])
def test_text_that_names_no_execution_is_a_400_saying_what_is_expected(client, personas, text):
    response = jump(client, personas.viewer, text)
    assert response.status_code == 400
    assert "is not an execution id (1234), a number (#12)" in response.content.decode()


def test_anonymous_users_are_sent_to_log_in(client):
    response = client.get(reverse("jump"), {"q": "1"})
    assert response.status_code == 302 and "/login/" in response["Location"]


def test_every_page_has_the_box(client, personas):
    html = as_user(client, personas.viewer).get(reverse("home")).content.decode()
    assert f'action="{reverse("jump")}"' in html and 'name="q"' in html
