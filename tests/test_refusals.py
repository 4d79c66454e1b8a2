"""Typed refusals (``stageline.errors``): services raise them, one translator answers them.

Each refusal type once at the service level (the service raises it with the acting user) and
once through a view or a command (the same refusal as 404 / 403 / 400 / 409, or exit 2)."""

from __future__ import annotations

import io

import pytest
from django.contrib.auth.models import AnonymousUser
from django.core.management import CommandError, call_command
from django.http import HttpResponse
from django.test import RequestFactory
from django.urls import reverse
from django_htmx.middleware import HtmxDetails

from executions.models import Execution, Status
from executions.services import abort_execution, run_pipeline
from pipelines.services import save_pipeline
from stageline.errors import (
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    Refusal,
    RefusalMiddleware,
    command_error,
)
from tests.helpers.factories import make_pipeline

GATED = """
pipeline:
  name: Deploy
  identifier: deploy
  variables:
    - {name: replicas, type: Number, value: <+input>}
  stages:
    - stage:
        identifier: approve
        name: Approve
        steps:
          - step: {identifier: gate, type: Approval, timeout: 1h, spec: {message: "Go?"}}
"""


@pytest.fixture
def waiting(personas) -> Execution:
    pipeline = make_pipeline(personas.project, GATED)
    execution = run_pipeline(pipeline=pipeline, user=personas.executor, inputs={"replicas": "1"})
    assert execution.status == Status.WAITING
    return execution


def answer(refusal: Refusal, *, htmx: bool):
    request = RequestFactory().get("/", headers={"HX-Request": "true"} if htmx else {})
    request.user = AnonymousUser()
    request.htmx = HtmxDetails(request)  # type: ignore[attr-defined]  # what HtmxMiddleware sets
    return RefusalMiddleware(lambda r: HttpResponse()).process_exception(request, refusal)


@pytest.mark.parametrize(
    "refusal, status",
    [
        (NotFound("no execution 7, or bob may not see it"), 404),
        (Forbidden("You need the Execute permission on pipeline <b>deploy</b>."), 403),
        (Invalid("'x' is not a number", field_errors={"count": "not a number"}), 400),
        (Conflict("Execution #3 already ended Aborted."), 409),
    ],
)
def test_the_middleware_answers_each_refusal_with_its_status(db, refusal, status):
    page = answer(refusal, htmx=False)
    assert page.status_code == status
    html = page.content.decode()
    if status == 404:  # the page never says whether the object exists
        assert "There is nothing here, or you may not see it." in html
    else:
        assert refusal.message.replace("'", "&#x27;").replace("<", "&lt;").split(">")[0] in html
    fragment = answer(refusal, htmx=True)
    assert fragment.status_code == status
    text = fragment.content.decode()
    assert "<html" not in text and "data-reason" in text
    assert "<b>" not in text, "the message is escaped"


def test_the_middleware_leaves_other_exceptions_alone(db):
    request = RequestFactory().get("/")
    assert RefusalMiddleware(lambda r: None).process_exception(request, ValueError("x")) is None


def test_a_refusal_becomes_exit_status_2_in_commands():
    error = command_error(Conflict("already ended"))
    assert isinstance(error, CommandError)
    assert (error.returncode, str(error)) == (2, "already ended")


# --- each type raised by a service, translated by a view or a command ------------------------


def test_not_found_for_what_the_user_may_not_see(client, personas, waiting):
    with pytest.raises(NotFound) as refused:
        abort_execution(execution=waiting, user=personas.stranger)
    assert "deploy" not in refused.value.message
    client.force_login(personas.stranger)
    response = client.post(reverse("execution_abort", args=[waiting.pk]))
    assert response.status_code == 404
    assert Execution.objects.get(pk=waiting.pk).status == Status.WAITING


def test_forbidden_names_the_missing_permission(client, personas, waiting):
    with pytest.raises(Forbidden, match="You need the Execute permission on pipeline deploy."):
        abort_execution(execution=waiting, user=personas.viewer)
    client.force_login(personas.viewer)
    response = client.post(reverse("execution_abort", args=[waiting.pk]))
    assert response.status_code == 403
    assert "You need the Execute permission on pipeline deploy." in response.content.decode()
    assert Execution.objects.get(pk=waiting.pk).status == Status.WAITING


def test_invalid_points_at_the_field(client, personas, waiting):
    pipeline = waiting.pipeline
    with pytest.raises(Invalid) as refused:
        run_pipeline(pipeline=pipeline, user=personas.executor, inputs={"replicas": "many"})
    assert set(refused.value.field_errors) == {"replicas"}
    client.force_login(personas.executor)
    url = reverse("pipeline_run", args=["acme", "web", "deploy"])
    response = client.post(url, {"input-replicas": "many"})
    assert response.status_code == 400
    assert "many" in response.content.decode()
    assert Execution.objects.count() == 1


def test_conflict_when_the_state_moved_on(client, personas, waiting):
    abort_execution(execution=waiting, user=personas.executor)
    with pytest.raises(Conflict, match="already ended"):
        abort_execution(execution=waiting, user=personas.executor)
    client.force_login(personas.executor)
    response = client.post(reverse("execution_abort", args=[waiting.pk]))
    assert response.status_code == 409
    with pytest.raises(CommandError) as refused:
        call_command("abort_execution", str(waiting.pk), "--as", "executor", stdout=io.StringIO())
    assert refused.value.returncode == 2
    assert "has ended" in str(refused.value) or "already ended" in str(refused.value)


def test_save_pipeline_guards_itself_and_refuses_a_stale_base_version(personas, waiting):
    pipeline = waiting.pipeline
    edited = GATED.replace("name: Deploy", "name: Deploy it")
    with pytest.raises(Forbidden, match="You need the Edit permission on pipeline deploy."):
        save_pipeline(
            project=personas.project, yaml_text=edited, user=personas.executor, pipeline=pipeline
        )
    with pytest.raises(NotFound):
        save_pipeline(project=personas.project, yaml_text=edited, user=personas.stranger)
    with pytest.raises(Conflict, match="Someone saved version 1 while you were editing version 0"):
        save_pipeline(
            project=personas.project,
            yaml_text=edited,
            user=personas.admin,
            pipeline=pipeline,
            base_version=0,
        )
    assert pipeline.versions.count() == 1
    result = save_pipeline(
        project=personas.project,
        yaml_text=edited,
        user=personas.admin,
        pipeline=pipeline,
        base_version=1,
    )
    assert result.version.number == 2
