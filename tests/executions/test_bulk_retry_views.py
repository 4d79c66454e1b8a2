"""Bulk retry on the project page: a checkbox on each retryable execution, "Retry selected…"
and "Retry all matching…" open one preview; its submit retries exactly the previewed executions,
each from its failed stage, and says what happened to each (executions.bulk)."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from executions.models import Execution, Status
from tests.helpers.factories import make_pipeline
from tests.helpers.pages import SERIAL_YAML, htmx, run

URL = "/p/acme/web/retries/"


@pytest.fixture
def failed(personas):
    pipeline = make_pipeline(personas.project, SERIAL_YAML)
    failing = {"deploy.fail": "yes", "deploy.token": "t"}
    runs = [run(pipeline, personas.executor, **failing) for _ in range(2)]
    runs.append(run(pipeline, personas.executor, **{"deploy.token": "t"}))
    assert [r.status for r in runs] == [Status.FAILED, Status.FAILED, Status.SUCCESS]
    return runs


def outcomes(html: str) -> dict[int, str]:
    return {
        int(pk): outcome
        for pk, outcome in re.findall(r'data-execution="(\d+)" data-outcome="([a-z_]+)"', html)
    }


def test_the_list_offers_a_checkbox_on_retryable_rows_only(client, personas, failed):
    client.force_login(personas.executor)
    html = client.get(reverse("project", args=["acme", "web"])).content.decode()
    boxes = re.findall(r'name="ids" value="(\d+)" form="bulk-retry"', html)
    assert sorted(int(pk) for pk in boxes) == sorted([failed[0].pk, failed[1].pk])
    assert "Retry all matching" in html


def test_preview_then_submit_retries_the_checked_executions(client, personas, failed):
    client.force_login(personas.executor)
    preview = client.get(URL, {"ids": [failed[0].pk, failed[2].pk]}, headers=htmx())
    assert preview.status_code == 200
    html = preview.content.decode()
    assert outcomes(html) == {failed[0].pk: "planned", failed[2].pk: "cannot"}
    assert "carried over: Build, Test" in html and "succeeded" in html
    assert Execution.objects.count() == 3
    done = client.post(URL, {"ids": [failed[0].pk], "reason": "flaky"}, headers=htmx())
    assert outcomes(done.content.decode()) == {failed[0].pk: "created"}
    retry = Execution.objects.get(retry_of=failed[0])
    assert retry.resumed_from == "deploy" and retry.reason == "flaky"
    again = client.post(URL, {"ids": [failed[0].pk]}, headers=htmx())
    assert outcomes(again.content.decode()) == {failed[0].pk: "cannot"}
    assert Execution.objects.filter(retry_of=failed[0]).count() == 1


def test_all_matching_takes_the_lists_filters(client, personas, failed):
    client.force_login(personas.executor)
    html = client.get(URL, {"all": "1", "status": "failed"}, headers=htmx()).content.decode()
    assert outcomes(html) == {failed[0].pk: "planned", failed[1].pk: "planned"}
    assert "Retry 2 executions" in html


@pytest.mark.parametrize(
    "params, message",
    [
        ({}, "Pick at least one execution"),
        ({"ids": "x"}, "ids"),
        ({"all": "1", "status": "sideways"}, "Unknown status"),
    ],
)
def test_bad_selections_are_said_in_the_dialog(client, personas, failed, params, message):
    client.force_login(personas.executor)
    answer = client.get(URL, params, headers=htmx())
    assert answer.status_code == 400 and message in answer.content.decode()


def test_who_may_not_retry_is_refused_and_other_projects_are_hidden(client, personas, failed):
    client.force_login(personas.viewer)
    refused = client.post(URL, {"ids": [failed[0].pk]})
    assert refused.status_code == 403 and "You need the Execute" in refused.content.decode()
    client.force_login(personas.stranger)
    assert client.post(URL, {"ids": [failed[0].pk]}).status_code == 404
    assert not Execution.objects.filter(retry_of=failed[0]).exists()
