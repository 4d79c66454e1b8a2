"""The Rerun dialog and its submit (SPEC §5): the current version, every input editable."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from executions.models import Execution, Status
from executions.services import run_pipeline
from pipelines.services import save_pipeline
from tests.helpers.factories import make_pipeline
from tests.helpers.pages import (
    SERIAL_YAML,
    as_user,
    failed_serial,
    htmx,
    page_url,
    run,
)
from tests.helpers.runs import drive

SELECTABLE_YAML = SERIAL_YAML.replace(
    "identifier: web\n", "identifier: web\n  allow_stage_selection: true\n"
)


def rerun_url(execution: Execution) -> str:
    return reverse("execution_rerun", args=[execution.pk])


def input_names(html: str) -> list[str]:
    return re.findall(r'name="input-([^"]+)"', html)


def stage_boxes(html: str) -> list[tuple[str, bool]]:
    return [
        (value, bool(checked))
        for value, checked in re.findall(r'name="stages" value="([^"]+)"( checked)?', html)
    ]


def test_the_dialog_prefills_every_input_from_the_old_run(client, personas):
    execution = failed_serial(personas)
    response = as_user(client, personas.executor).get(
        rerun_url(execution), headers=htmx("modal-body")
    )
    html = response.content.decode()
    assert (
        response.status_code == 200
        and "<html" not in html
        and 'id="modal-title">Rerun Web deploy<' in html
    )
    assert input_names(html) == [
        "version",
        "build.flavour",
        "test.suite",
        "deploy.fail",
        "deploy.token",
    ]
    assert 'value="gold"' in html and '<option value="yes" selected>' in html
    assert "s3cr3t-t0ken" not in html and "unchanged (a value is set)" in html
    assert 'name="stages"' not in html, "this pipeline does not allow picking stages"


def test_a_rerun_runs_the_current_version_with_the_edited_inputs(client, personas):
    execution = failed_serial(personas)
    save_pipeline(
        project=personas.project,
        yaml_text=SERIAL_YAML.replace("testing", "checking"),
        user=personas.admin,
    )
    as_user(client, personas.executor)
    html = client.get(rerun_url(execution), headers=htmx()).content.decode()
    assert "this rerun uses v2" in html
    response = client.post(
        rerun_url(execution),
        {
            "input-version": "2.0",
            "input-build.flavour": "gold",
            "input-deploy.fail": "no",
            "input-deploy.token": "",
        },
        headers=htmx("modal-body"),
    )
    rerun = Execution.objects.get(rerun_of=execution)
    assert response.status_code == 200 and response["HX-Redirect"] == page_url(rerun)
    assert rerun.version.number == 2 and rerun.retry_of_id is None
    assert rerun.inputs["version"] == "2.0" and rerun.secret_inputs == {
        "deploy.token": "s3cr3t-t0ken"
    }
    assert drive(rerun).status == Status.SUCCESS
    assert (
        f"Rerun #{rerun.sequence} of #{execution.sequence} started."
        in client.get(page_url(rerun)).content.decode()
    )


def test_a_successful_execution_can_be_rerun_without_htmx(client, personas):
    execution = run(make_pipeline(personas.project, SERIAL_YAML), personas.executor)
    response = as_user(client, personas.admin).post(rerun_url(execution), {"input-version": "1.0"})
    rerun = Execution.objects.get(rerun_of=execution)
    assert response.status_code == 302 and response["Location"] == page_url(rerun)


def test_stage_checkboxes_pick_the_stages_that_run(client, personas):
    execution = run(make_pipeline(personas.project, SELECTABLE_YAML), personas.executor)
    as_user(client, personas.executor)
    html = client.get(rerun_url(execution), headers=htmx()).content.decode()
    assert stage_boxes(html) == [("build", True), ("test", True), ("deploy", True)]
    client.post(rerun_url(execution), {"stages": ["build"]}, headers=htmx())
    rerun = drive(Execution.objects.get(rerun_of=execution))
    assert rerun.selected_stages == ["build"]
    assert {r.identifier: r.status for r in rerun.stage_runs.all()} == {
        "build": Status.SUCCESS,
        "test": Status.SKIPPED,
        "deploy": Status.SKIPPED,
    }
    html = client.get(rerun_url(rerun), headers=htmx()).content.decode()
    assert stage_boxes(html) == [("build", True), ("test", True), ("deploy", True)], (
        "the picker starts with every stage ticked, whatever the old run picked"
    )


def test_ticking_every_stage_is_a_full_run(client, personas):
    execution = run(make_pipeline(personas.project, SELECTABLE_YAML), personas.executor)
    as_user(client, personas.executor).post(
        rerun_url(execution), {"stages": ["build", "test", "deploy"]}, headers=htmx()
    )
    assert Execution.objects.get(rerun_of=execution).selected_stages == []


@pytest.mark.parametrize(
    ("yaml_text", "post", "message"),
    [
        (
            SELECTABLE_YAML,
            {"stages": ["test"]},
            "Stage &#x27;test&#x27; needs the output of build, which is not selected.",
        ),
        (SELECTABLE_YAML, {"stages": ["build", "ghost"]}, "Unknown stage(s): ghost."),
        (SERIAL_YAML, {"stages": ["build"]}, "does not allow running selected stages"),
        (
            SERIAL_YAML,
            {"input-version": "3.0"},
            "version must be one of 1.0, 2.0 (got &#x27;3.0&#x27;)",
        ),
        (
            SERIAL_YAML,
            {"input-bogus": "1"},
            "&#x27;bogus&#x27; is not a runtime input of pipeline web",
        ),
    ],
    ids=[
        "needs-unpicked-output",
        "unknown-stage",
        "selection-not-allowed",
        "bad-value",
        "unknown-input",
    ],
)
@pytest.mark.parametrize("hx", [False, True], ids=["form", "htmx"])
def test_a_bad_rerun_is_refused_with_a_message_and_creates_nothing(
    client, personas, yaml_text, post, message, hx
):
    execution = run(make_pipeline(personas.project, yaml_text), personas.executor)
    before = Execution.objects.count()
    response = as_user(client, personas.executor).post(
        rerun_url(execution), post, headers=htmx() if hx else {}
    )
    html = response.content.decode()
    assert response.status_code == 400 and message in html
    assert 'id="rerun-form"' in html and Execution.objects.count() == before
    if hx:
        assert response["HX-Retarget"] == "#modal-body" and "<html" not in html


def test_a_running_execution_cannot_be_rerun(client, personas):
    running = run_pipeline(
        pipeline=make_pipeline(personas.project, SERIAL_YAML), user=personas.executor, inputs={}
    )
    as_user(client, personas.executor)
    page = client.get(page_url(running)).content.decode()
    assert "is still running: wait for it to end or abort it." in page
    response = client.post(rerun_url(running), {}, headers=htmx())
    assert response.status_code == 409 and "is still running" in response.content.decode()
    assert not Execution.objects.filter(rerun_of=running).exists()


@pytest.mark.parametrize("hx", [False, True], ids=["form", "htmx"])
def test_each_persona_may_rerun_only_with_execute(client, personas, hx):
    execution = failed_serial(personas)
    headers = htmx("modal-body") if hx else {}
    expected = {"admin": 200, "executor": 200, "viewer": 403, "approver": 403, "stranger": 404}
    for name, status in expected.items():
        user = getattr(personas, name)
        as_user(client, user)
        assert client.get(rerun_url(execution), headers=headers).status_code == status, name
        response = client.post(rerun_url(execution), {"input-deploy.fail": "no"}, headers=headers)
        created = Execution.objects.filter(rerun_of=execution, triggered_by=user).exists()
        if status == 200:
            assert response.status_code == (200 if hx else 302) and created, name
        else:
            assert response.status_code == status and not created, name
        if status == 403:
            assert "You need the Execute permission on pipeline web." in response.content.decode()
