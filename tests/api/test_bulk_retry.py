"""Bulk retry (issue 17 point 3) through the API and ``retry_execution --bulk``: one preview
that says per execution what is carried over and what runs again, or why it cannot be retried;
a submit that retries each from its failed stage (failed stages only in a parallel group), each
at most once, reporting each one."""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command

from api.tokens import create_token
from executions import bulk
from executions.models import Execution, Status
from executions.retry import create_retry
from tests.helpers.factories import make_pipeline
from tests.helpers.pages import SERIAL_YAML, failed_parallel, run

API = "/api/v1/projects/acme/web/retries"


def bearer(user) -> dict[str, str]:
    return {"Authorization": f"Bearer {create_token(user=user, name='t', scope='read-write')[1]}"}


@pytest.fixture
def history(personas):
    """Two failed executions of the serial pipeline, one that succeeded, one failed in a
    parallel group."""
    pipeline = make_pipeline(personas.project, SERIAL_YAML)
    failing = {"deploy.fail": "yes", "deploy.token": "t"}
    first = run(pipeline, personas.executor, **failing)
    ok = run(pipeline, personas.executor, **{"deploy.token": "t"})
    second = run(pipeline, personas.executor, **failing)
    parallel = failed_parallel(personas)
    assert (first.status, ok.status, second.status) == (
        Status.FAILED,
        Status.SUCCESS,
        Status.FAILED,
    )
    return {"first": first, "ok": ok, "second": second, "parallel": parallel}


def by_id(answer) -> dict[int, dict]:
    return {item["execution"]: item for item in answer.json()["items"]}


def test_the_preview_says_what_each_retry_would_do_and_changes_nothing(client, personas, history):
    answer = client.get(f"{API}?status=failed", headers=bearer(personas.executor))
    assert answer.status_code == 200, answer.content
    items = by_id(answer)
    assert set(items) == {history["first"].pk, history["second"].pk, history["parallel"].pk}
    serial = items[history["first"].pk]
    assert serial["outcome"] == "planned" and serial["from_stage"] == "deploy"
    assert serial["carried"] == ["build", "test"] and serial["run_again"] == ["deploy"]
    group = items[history["parallel"].pk]
    assert (
        group["mode"] == "failed_only" and "us" in group["carried"] and "eu" in group["run_again"]
    )
    assert Execution.objects.count() == 4


def test_a_failed_parallel_group_may_run_again_whole(client, personas, history):
    auth, group = bearer(personas.executor), history["parallel"]
    answer = client.get(API, {"ids": [group.pk], "mode": "all"}, headers=auth)
    [item] = answer.json()["items"]
    assert item["mode"] == "all" and item["run_again"] == ["eu", "us", "release"]
    answer = client.post(
        API, {"ids": [group.pk], "mode": "all"}, content_type="application/json", headers=auth
    )
    assert answer.json()["items"][0]["outcome"] == "created"
    assert Execution.objects.get(retry_of=group).retry_mode == "all"
    answer = client.get(API, {"ids": [group.pk], "mode": "sideways"}, headers=auth)
    assert answer.status_code == 400 and answer.json()["errors"] == {"mode": "unknown"}


def test_submit_retries_each_once_and_reports_each(client, personas, history):
    auth = bearer(personas.executor)
    ids = [history["first"].pk, history["ok"].pk, history["second"].pk]
    answer = client.post(
        API, {"ids": ids, "reason": "network"}, content_type="application/json", headers=auth
    )
    assert answer.status_code == 200, answer.content
    items = by_id(answer)
    assert items[history["ok"].pk]["outcome"] == "cannot"
    assert "succeeded" in items[history["ok"].pk]["reason"]
    for key in ("first", "second"):
        item = items[history[key].pk]
        assert item["outcome"] == "created"
        retry = Execution.objects.get(pk=item["retry"])
        assert retry.retry_of_id == history[key].pk and retry.resumed_from == "deploy"
        assert retry.reason == "network" and retry.triggered_by == personas.executor
    again = by_id(client.post(API, {"ids": ids}, content_type="application/json", headers=auth))
    assert again[history["first"].pk]["outcome"] == "cannot"
    assert "already retried" in again[history["first"].pk]["reason"]
    assert Execution.objects.filter(retry_of=history["first"]).count() == 1


@pytest.mark.database  # the unique retry link, on PostgreSQL too
def test_a_submit_that_loses_the_race_reports_the_winners_retry(personas, history, monkeypatch):
    winner = []
    real_plan = bulk.plan_bulk_retry

    def plan_then_someone_retries(user, executions, **options):
        items = real_plan(user, executions, **options)  # planned while nobody had retried yet
        if not winner:  # another operator's submit commits between this plan and this submit
            winner.append(
                create_retry(execution=history["first"], user=personas.admin, from_stage="deploy")
            )
        return items

    monkeypatch.setattr(bulk, "plan_bulk_retry", plan_then_someone_retries)
    [item] = bulk.create_bulk_retry(personas.executor, [history["first"]])
    assert item.outcome == bulk.ALREADY and item.retry == winner[0]
    assert Execution.objects.filter(retry_of=history["first"]).count() == 1


def test_a_filter_matching_more_than_the_limit_takes_the_newest(
    client, personas, history, monkeypatch
):
    monkeypatch.setattr(bulk, "BULK_LIMIT", 1)
    answer = client.get(f"{API}?status=failed", headers=bearer(personas.executor)).json()
    assert [i["execution"] for i in answer["items"]] == [history["parallel"].pk]
    assert answer["capped"] is True


def test_who_may_not_execute_is_refused_and_hidden_ids_are_reported(client, personas, history):
    refused = client.get(f"{API}?status=failed", headers=bearer(personas.viewer))
    assert refused.status_code == 403 and "You need the Execute" in refused.json()["detail"]
    answer = client.post(
        API,
        {"ids": [history["first"].pk, 999999]},
        content_type="application/json",
        headers=bearer(personas.executor),
    ).json()
    assert answer["missing"] == [999999]


@pytest.mark.parametrize(
    "body, field",
    [
        ({}, "ids"),
        ({"ids": [1], "filter": {"status": "failed"}}, "ids"),
        ({"ids": []}, "ids"),
        ({"ids": list(range(1, 60))}, "ids"),
        ({"filter": {"status": "sideways"}}, "status"),
        ({"filter": {"since": "soon"}}, "since"),
        ({"ids": ["x"]}, "ids.0"),
    ],
)
def test_bad_bulk_requests_are_400_naming_the_field(client, personas, body, field):
    answer = client.post(
        API, body, content_type="application/json", headers=bearer(personas.executor)
    )
    assert answer.status_code == 400, answer.content
    assert field in answer.json()["errors"]


def command(*args: str) -> tuple[str, int]:
    out = io.StringIO()
    try:
        call_command("retry_execution", *args, stdout=out, stderr=io.StringIO())
    except CommandError as exc:
        return out.getvalue() + str(exc), exc.returncode
    return out.getvalue(), 0


def test_the_command_previews_then_retries_by_filter(personas, history):
    pipeline_filter = ["--filter", "pipeline=web", "--filter", "status=failed"]
    text, code = command("--bulk", "acme/web", *pipeline_filter, "--dry-run", "--as", "executor")
    assert code == 0, text
    assert text.count("would retry from deploy") == 2 and Execution.objects.count() == 4
    first = history["first"]
    assert (
        f"web #{first.sequence} (execution {first.pk}): would retry from deploy; carried over: "
        f"build (from #{first.sequence}), test (from #{first.sequence}); runs again: deploy; "
        "time saved "
    ) in text
    text, code = command("--bulk", "acme/web", *pipeline_filter, "--as", "executor")
    assert code == 0 and text.count("retried as #") == 2, text
    text, code = command("--bulk", "acme/web", *pipeline_filter, "--as", "executor")
    assert code == 2 and "already retried" in text and "Latest attempt: #" in text


@pytest.mark.parametrize(
    "args, message",
    [
        (["--bulk", "acme/web", "--filter", "colour=red"], "unknown filter colour"),
        (["--bulk", "acme/web", "--filter", "status=sideways"], "Unknown status"),
        (["--bulk", "acme", "--filter", "status=failed"], "ORG/PROJECT"),
        (["--bulk", "acme/web", "--from", "deploy"], "--bulk retries each"),
        (["--filter", "status=failed"], "--filter goes with --bulk"),
        ([], "say which execution"),
        (["--bulk", "globex/ops"], "may not see it"),
    ],
)
def test_bad_bulk_commands_exit_2_naming_the_problem(personas, args, message):
    text, code = command(*args, "--as", "executor")
    assert code == 2 and message in text, text
