"""The JSON API in use: run, follow, retry from the failed stage (plan, then submit), rerun,
approve; filters and keyset pages as on the page; ranged logs; and bad input answered with 400
naming the field (never 422 or 500), changing nothing. Who may do what: test_api_matrix.py."""

from __future__ import annotations

import pytest

from api.tokens import create_token
from executions.models import Event, Execution, LogChunk, Status, StepRun
from executions.services import run_pipeline
from tests.helpers.factories import make_pipeline
from tests.helpers.pages import APPROVAL_YAML, SERIAL_YAML, failed_serial, run
from tests.helpers.runs import drive

API = "/api/v1"


def bearer(user, scope="read-write") -> dict[str, str]:
    return {"Authorization": f"Bearer {create_token(user=user, name='test', scope=scope)[1]}"}


def post(client, url, body=None, headers=None):
    return client.post(url, body or {}, content_type="application/json", headers=headers or {})


def test_retry_from_the_failed_stage_plan_then_submit(client, personas):
    failed = failed_serial(personas)
    auth = bearer(personas.executor)
    plan = client.get(f"{API}/executions/{failed.pk}/retry", headers=auth)
    assert plan.status_code == 200, plan.content
    body = plan.json()
    assert body["selected"] == "deploy"
    assert [c["identifier"] for c in body["carried"]] == ["build", "test"]
    assert [s["identifier"] for s in body["run_again"]] == ["deploy"]
    frozen = {i["key"]: i["reason"] for i in body["inputs"] if not i["editable"]}
    assert "use Rerun" in frozen["version"]
    assert Execution.objects.count() == 1, "a plan changes nothing"

    answer = post(
        client,
        f"{API}/executions/{failed.pk}/retry",
        {"from_stage": "deploy", "inputs": {"deploy.fail": "no"}, "reason": "flaky"},
        auth,
    )
    assert answer.status_code == 201, answer.content
    retry = Execution.objects.get(pk=answer.json()["id"])
    assert retry.retry_of_id == failed.pk and retry.resumed_from == "deploy"
    assert retry.triggered_by == personas.executor
    assert Event.objects.filter(execution=retry, action="retried", actor=personas.executor).exists()
    drive(retry)
    detail = client.get(f"{API}/executions/{retry.pk}", headers=auth).json()
    assert detail["status"] == Status.SUCCESS
    assert [s["carried_from_execution"] for s in detail["stages"]] == [failed.pk, failed.pk, None]
    assert [link["id"] for link in detail["chain"]] == [failed.pk, retry.pk]

    again = post(client, f"{API}/executions/{failed.pk}/retry", {"from_stage": "deploy"}, auth)
    assert again.status_code == 409
    assert again.json()["retry_id"] == retry.pk, "a second retry is sent to the first one"
    plan_again = client.get(f"{API}/executions/{failed.pk}/retry", headers=auth)
    assert plan_again.status_code == 409 and "already retried" in plan_again.json()["detail"]


def test_a_retry_that_changes_a_frozen_input_is_refused_with_the_field(client, personas):
    failed = failed_serial(personas)
    answer = post(
        client,
        f"{API}/executions/{failed.pk}/retry",
        {"from_stage": "deploy", "inputs": {"version": "2.0"}},
        bearer(personas.executor),
    )
    assert answer.status_code == 400
    assert "use Rerun" in answer.json()["errors"]["version"]
    assert Execution.objects.count() == 1


@pytest.mark.parametrize(
    "body, field",
    [
        ({}, "from_stage"),
        ({"from_stage": "nope"}, "from_stage"),
        ({"from_stage": "deploy", "mode": "sideways"}, "mode"),
        ({"from_stage": ["deploy"]}, "from_stage"),
        ({"from_stage": "deploy", "inputs": {"deploy.fail": ["yes"]}}, "inputs.deploy.fail"),
    ],
)
def test_bad_retry_requests_are_400_naming_the_field(client, personas, body, field):
    failed = failed_serial(personas)
    answer = post(client, f"{API}/executions/{failed.pk}/retry", body, bearer(personas.executor))
    assert answer.status_code == 400, answer.content
    assert field in answer.json()["errors"], answer.json()
    assert Execution.objects.count() == 1


def test_run_validates_inputs_like_the_page(client, personas):
    pipeline = make_pipeline(personas.project, SERIAL_YAML)
    auth = bearer(personas.executor)
    url = f"{API}/projects/acme/web/pipelines/{pipeline.identifier}/run"
    bad = post(client, url, {"inputs": {"version": "9.9"}}, auth)
    assert bad.status_code == 400 and "version" in bad.json()["errors"]
    assert not Execution.objects.exists()
    good = post(client, url, {"inputs": {"version": "2.0", "deploy.token": "t"}}, auth)
    assert good.status_code == 201, good.content
    started = Execution.objects.get(pk=good.json()["id"])
    assert started.inputs["version"] == "2.0" and started.triggered_by == personas.executor


@pytest.mark.parametrize(
    "url, field",
    [
        ("/executions/0", "pk"),
        ("/executions/99999999999999999999999", "pk"),
        ("/executions/abc", "pk"),
        ("/projects/acme/web/executions?limit=0", "limit"),
        ("/projects/acme/web/executions?limit=1000", "limit"),
        ("/projects/acme/web/executions?status=sideways", "status"),
        ("/projects/acme/web/executions?since=yesterday", "since"),
        ("/projects/acme/web/executions?since=2025-02-01&until=2025-01-01", "until"),
        ("/projects/acme/web/executions?before=-3", "before"),
        ("/projects/acme/web/executions?pipeline=nope", "pipeline"),
    ],
)
def test_bad_parameters_are_400_naming_the_field(client, personas, url, field):
    answer = client.get(API + url, headers=bearer(personas.viewer))
    assert answer.status_code == 400, answer.content
    assert field in answer.json()["errors"], answer.json()


def test_a_body_that_is_not_json_is_a_400(client, personas):
    failed = failed_serial(personas)
    answer = client.post(
        f"{API}/executions/{failed.pk}/retry",
        "{not json",
        content_type="application/json",
        headers=bearer(personas.executor),
    )
    assert answer.status_code == 400
    assert "not valid JSON" in answer.json()["detail"]


def test_executions_are_filtered_and_paged_with_cursors(client, personas):
    pipeline = make_pipeline(personas.project, APPROVAL_YAML)
    made = [run_pipeline(pipeline=pipeline, user=personas.executor, inputs={}) for _ in range(5)]
    auth = bearer(personas.viewer)
    first = client.get(f"{API}/projects/acme/web/executions?limit=2", headers=auth).json()
    assert [row["id"] for row in first["items"]] == [made[4].pk, made[3].pk]
    second = client.get(
        f"{API}/projects/acme/web/executions?limit=2&before={first['older']}", headers=auth
    ).json()
    assert [row["id"] for row in second["items"]] == [made[2].pk, made[1].pk]
    back = client.get(
        f"{API}/projects/acme/web/executions?limit=2&after={second['newer']}", headers=auth
    ).json()
    assert [row["id"] for row in back["items"]] == [made[4].pk, made[3].pk]
    mine = client.get(
        f"{API}/projects/acme/web/executions?who=executor&status=running", headers=auth
    ).json()
    assert len(mine["items"]) == 5
    nobody = client.get(f"{API}/projects/acme/web/executions?who=viewer", headers=auth).json()
    assert nobody["items"] == []


def test_approve_and_reject_answer_the_waiting_stage(client, personas):
    pipeline = make_pipeline(personas.project, APPROVAL_YAML)
    waiting = run(pipeline, personas.executor)
    auth = bearer(personas.approver)
    answer = post(client, f"{API}/executions/{waiting.pk}/reject", {"comment": "not today"}, auth)
    assert answer.status_code == 200, answer.content
    step = StepRun.objects.get(execution=waiting, type="Approval")
    assert step.status == Status.REJECTED and step.decided_by == personas.approver
    late = post(client, f"{API}/executions/{waiting.pk}/approve", {}, auth)
    assert late.status_code == 409 and "waiting" in late.json()["detail"]


def test_the_step_log_is_read_by_byte_offset(client, personas):
    failed = failed_serial(personas)
    step = StepRun.objects.get(execution=failed, stage_run__identifier="build")
    LogChunk.objects.filter(step_run=step).delete()
    LogChunk.objects.create(step_run=step, seq=0, text="héllo ")
    LogChunk.objects.create(step_run=step, seq=1, text="wörld\n")
    auth = bearer(personas.viewer)
    url = f"{API}/executions/{failed.pk}/steps/{step.pk}/log"
    whole = client.get(url, headers=auth).json()
    assert whole["text"] == "héllo wörld\n" and whole["complete"] and not whole["more"]
    assert whole["next_offset"] == len("héllo wörld\n".encode())
    tail = client.get(f"{url}?after=7", headers=auth).json()
    assert tail["text"] == "wörld\n" and tail["offset"] == 7
    inside = client.get(f"{url}?after=2", headers=auth).json()  # inside "é": from the next char
    assert inside["offset"] == 3 and inside["text"].startswith("llo")
    past = client.get(f"{url}?after=999", headers=auth)
    assert past.status_code == 400 and "after" in past.json()["errors"]
    other = client.get(f"{API}/executions/{failed.pk}/steps/999999/log", headers=auth)
    assert other.status_code == 404


def test_the_schema_is_openapi_3_and_lists_every_endpoint(client):
    schema = client.get(f"{API}/schema").json()
    assert schema["openapi"].startswith("3.")
    assert {
        "/api/v1/projects",
        "/api/v1/executions/{pk}/retry",
        "/api/v1/projects/{org}/{project}/pipelines/{identifier}/run",
        "/api/v1/executions/{pk}/steps/{step_pk}/log",
    } <= set(schema["paths"])
    docs = client.get(f"{API}/docs")
    assert docs.status_code == 200 and b"swagger-ui" in docs.content
    assert b"cdn" not in docs.content.lower(), "the docs page's scripts are served from here"
