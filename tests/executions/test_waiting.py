""" "Waiting for me": the approvals the signed-in user may answer, across projects, with their
count in the header (loaded by htmx, so other pages pay no query for it)."""

from __future__ import annotations

import pytest
from django.urls import reverse

from executions.models import Execution, Status
from executions.services import run_pipeline
from tests.helpers.factories import grant, make_pipeline, make_project
from tests.helpers.pages import APPROVAL_YAML, as_user, run
from tests.helpers.runs import wait_for_status


@pytest.fixture
def waiting(personas) -> Execution:
    execution = run(make_pipeline(personas.project, APPROVAL_YAML), personas.executor)
    assert execution.status == Status.WAITING
    return execution


@pytest.mark.parametrize(
    ("persona", "sees"),
    [
        ("admin", True),
        ("approver", True),
        ("executor", False),
        ("viewer", False),
        ("stranger", False),
    ],
)
def test_the_list_shows_what_the_user_may_answer(client, personas, waiting, persona, sees):
    response = as_user(client, getattr(personas, persona)).get(reverse("waiting"))
    html = response.content.decode()
    assert response.status_code == 200
    answer = f"{reverse('execution_approval', args=[waiting.pk])}?stage=approve"
    assert (answer in html) is sees
    assert (f"{waiting.pipeline.name} #{waiting.sequence}" in html) is sees
    assert ("Nothing waits for you." in html) is not sees

    count = as_user(client, getattr(personas, persona)).get(reverse("waiting_count"))
    assert count.status_code == 200
    assert ('aria-label="1 waiting for you">1<' in count.content.decode()) is sees


def test_the_list_spans_projects_and_leaves_answered_approvals_out(client, personas, waiting):
    other = make_project("initech", "billing")

    grant(personas.approver, other, "approver")
    grant(personas.admin, other, "admin")
    elsewhere = run(make_pipeline(other, APPROVAL_YAML), personas.admin)
    html = as_user(client, personas.approver).get(reverse("waiting")).content.decode()
    assert "acme/web" in html and "initech/billing" in html
    count = as_user(client, personas.approver).get(reverse("waiting_count")).content.decode()
    assert ">2<" in count

    client.post(
        reverse("execution_approval", args=[elsewhere.pk]),
        {"stage": "approve", "decision": "approve", "comment": ""},
    )
    html = as_user(client, personas.approver).get(reverse("waiting")).content.decode()
    assert "acme/web" in html and "initech/billing" not in html


def test_anonymous_users_are_sent_to_log_in(client):
    for name in ("waiting", "waiting_count"):
        response = client.get(reverse(name))
        assert response.status_code == 302 and "/login/" in response["Location"]


def test_every_page_links_the_list_and_loads_its_count_by_htmx(client, personas, waiting):
    html = as_user(client, personas.approver).get(reverse("home")).content.decode()
    assert f'hx-get="{reverse("waiting_count")}"' in html and "Waiting for me" in html


INTERVENTION_YAML = """
pipeline:
  name: Needs a hand
  identifier: needs_hand
  stages:
    - stage:
        identifier: flaky
        steps:
          - step:
              identifier: run
              name: Flaky step
              type: ShellScript
              failure_strategies:
                - on_failure: {errors: [all], action: {type: manual_intervention, timeout: 1h}}
              spec:
                script: echo disk full; exit 1
"""


@pytest.mark.parametrize(
    ("persona", "sees"),
    [
        ("admin", True),
        ("executor", True),
        ("approver", False),
        ("viewer", False),
        ("stranger", False),
    ],
)
def test_a_step_waiting_for_an_intervention_waits_for_those_who_may_execute(
    client, personas, worker, persona, sees
):
    execution = wait_for_status(
        run_pipeline(
            pipeline=make_pipeline(personas.project, INTERVENTION_YAML),
            user=personas.executor,
            inputs={},
        ),
        Status.INTERVENTION_WAITING,
    )
    step = execution.step_runs.get(identifier="run")
    html = as_user(client, getattr(personas, persona)).get(reverse("waiting")).content.decode()
    assert ("Intervention: flaky › Flaky step" in html) is sees
    assert (f"{reverse('execution', args=[execution.pk])}?step={step.pk}" in html) is sees
    count = as_user(client, getattr(personas, persona)).get(reverse("waiting_count"))
    assert ('aria-label="1 waiting for you">1<' in count.content.decode()) is sees
