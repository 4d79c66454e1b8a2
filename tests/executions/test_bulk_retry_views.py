"""Bulk retry on the executions lists (project and pipeline pages): a checkbox on each retryable execution, "Retry selected…"
and "Retry all matching…" open one preview; its submit retries exactly the previewed executions,
each from its failed stage, and says what happened to each (executions.bulk)."""

from __future__ import annotations

import re
import threading

import pytest
from django.db import connection
from django.urls import reverse

from executions import bulk
from executions.models import Execution, Status
from executions.retry import create_retry
from executions.services import run_pipeline
from tests.helpers.factories import grant, make_pipeline, make_user
from tests.helpers.pages import PARALLEL_YAML, SERIAL_YAML, failed_parallel, htmx, run
from tests.helpers.runs import wait_for_status

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
    assert "carried over: Build (from #1), Test (from #1)" in html and "succeeded" in html
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


@pytest.mark.parametrize("persona", ["viewer", "approver"])
def test_who_may_not_retry_sees_no_checkbox_and_no_bulk_button(client, personas, failed, persona):
    client.force_login(getattr(personas, persona))
    html = client.get(reverse("project", args=["acme", "web"])).content.decode()
    assert 'type="checkbox"' not in html and 'id="bulk-retry"' not in html


def test_a_row_gets_a_checkbox_only_where_the_user_holds_execute(client, personas, failed):
    """View on the project, Execute on one pipeline: the other pipeline's failed rows have no
    checkbox, and a tampered post naming one is refused for that execution with the reason."""
    other = run(
        make_pipeline(personas.project, PARALLEL_YAML), personas.executor, **{"eu.fail": "yes"}
    )
    deployer = make_user("deployer")
    grant(deployer, personas.project, "viewer")
    grant(deployer, personas.project, "executor", pipeline=failed[0].pipeline)
    client.force_login(deployer)
    html = client.get(reverse("project", args=["acme", "web"])).content.decode()
    boxes = re.findall(r'name="ids" value="(\d+)" form="bulk-retry"', html)
    assert sorted(int(pk) for pk in boxes) == sorted([failed[0].pk, failed[1].pk])
    done = client.post(URL, {"ids": [failed[0].pk, other.pk]}, headers=htmx()).content.decode()
    assert outcomes(done) == {failed[0].pk: "created", other.pk: "cannot"}
    assert "You need the Execute permission on pipeline regions." in done
    assert not Execution.objects.filter(retry_of=other).exists()


def test_the_submit_refreshes_the_list_and_links_each_retry(client, personas, failed):
    client.force_login(personas.executor)
    page = client.get(reverse("project", args=["acme", "web"])).content.decode()
    assert 'hx-trigger="bulk-retried from:body" hx-target="#executions"' in page
    done = client.post(URL, {"ids": [failed[0].pk, failed[1].pk]}, headers=htmx())
    assert "bulk-retried" in done.headers["HX-Trigger"]
    for original in failed[:2]:
        retry = Execution.objects.get(retry_of=original)
        assert f'retried as <a href="/executions/{retry.pk}/">#{retry.sequence}</a>' in (
            done.content.decode()
        )


def test_an_already_retried_execution_links_its_latest_attempt(client, personas, failed):
    retry = create_retry(execution=failed[0], user=personas.executor, from_stage="deploy")
    client.force_login(personas.executor)
    html = client.get(URL, {"ids": [failed[0].pk]}, headers=htmx()).content.decode()
    assert outcomes(html) == {failed[0].pk: "cannot"}
    assert f"Go to the latest attempt, #{retry.sequence}" in html


def test_ids_of_other_lists_are_not_found_without_saying_why(client, personas, failed):
    hidden = run(
        make_pipeline(personas.other_project, SERIAL_YAML),
        personas.stranger,
        **{"deploy.fail": "yes", "deploy.token": "t"},
    )
    client.force_login(personas.executor)
    html = client.post(URL, {"ids": [failed[0].pk, hidden.pk, 999999]}, headers=htmx())
    text = html.content.decode()
    assert outcomes(text) == {failed[0].pk: "created"}
    assert f"Not found, or not yours to see: {hidden.pk}, 999999." in text
    assert not Execution.objects.filter(retry_of=hidden).exists()


def test_a_parallel_group_can_be_retried_failed_only_or_whole(client, personas, failed):
    group = failed_parallel(personas)
    client.force_login(personas.executor)
    html = client.get(URL, {"ids": [group.pk]}, headers=htmx()).content.decode()
    assert "(failed stages only)" in html and 'name="mode" value="failed_only" checked' in html
    assert (
        "carried over: Build (from #1), Deploy US (from #1) · runs again: Deploy EU, Release"
        in (html)
    )
    html = client.get(URL, {"ids": [group.pk], "mode": "all"}, headers=htmx()).content.decode()
    assert "(all stages of the group)" in html
    assert "runs again: Deploy EU, Deploy US, Release" in html
    client.post(URL, {"ids": [group.pk], "mode": "all"}, headers=htmx())
    assert Execution.objects.get(retry_of=group).retry_mode == "all"
    answer = client.get(URL, {"ids": [group.pk], "mode": "sideways"}, headers=htmx())
    assert answer.status_code == 400 and "Unknown retry mode" in answer.content.decode()


def test_the_pipeline_page_has_its_own_bulk_retry(client, personas, failed):
    group = failed_parallel(personas)
    url = reverse("pipeline_bulk_retry", args=["acme", "web", "web"])
    client.force_login(personas.executor)
    page = client.get(reverse("pipeline", args=["acme", "web", "web"])).content.decode()
    assert f'action="{url}"' in page
    html = client.post(url, {"ids": [failed[0].pk, group.pk]}, headers=htmx()).content.decode()
    assert outcomes(html) == {failed[0].pk: "created"}, "regions is not in this list"
    assert f"Not found, or not yours to see: {group.pk}." in html
    client.force_login(personas.viewer)
    assert client.post(url, {"ids": [failed[1].pk]}).status_code == 403


@pytest.mark.parametrize(
    ("persona", "status"),
    [("admin", 200), ("executor", 200), ("viewer", 403), ("approver", 403), ("stranger", 404)],
)
def test_who_may_submit(client, personas, failed, persona, status):
    client.force_login(getattr(personas, persona))
    assert client.post(URL, {"ids": [failed[0].pk]}, headers=htmx()).status_code == status
    assert Execution.objects.filter(retry_of=failed[0]).count() == (1 if status == 200 else 0)


@pytest.mark.engine  # a real worker; the integration suite runs it on PostgreSQL
def test_two_concurrent_bulk_submits_create_each_retry_once(worker, personas):
    pipeline = make_pipeline(personas.project, SERIAL_YAML)
    failing = {"deploy.fail": "yes", "deploy.token": "t"}
    originals = [
        wait_for_status(
            run_pipeline(pipeline=pipeline, user=personas.executor, inputs=failing), Status.FAILED
        )
        for _ in range(3)
    ]
    ids = [e.pk for e in originals]
    barrier = threading.Barrier(2)
    results: list[object] = []

    def submit() -> None:
        try:
            selection = bulk.bulk_selection(personas.executor, personas.project, ids=ids)
            barrier.wait()
            results.append(bulk.create_bulk_retry(personas.executor, selection.executions))
        except Exception as exc:  # noqa: BLE001 - anything else fails the test below
            results.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=submit) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(results) == 2 and all(isinstance(r, list) for r in results), results
    outcomes_ = [item.outcome for items in results for item in items]  # type: ignore[attr-defined]
    assert outcomes_.count(bulk.CREATED) == 3, outcomes_
    assert set(outcomes_) - {bulk.CREATED} <= {bulk.ALREADY, bulk.CANNOT}, outcomes_
    for original in originals:
        assert Execution.objects.filter(retry_of=original).count() == 1
    for retry in Execution.objects.filter(retry_of__in=originals):
        wait_for_status(retry, Status.FAILED)
