"""The Retry Failed Pipeline dialog and its submit, against real failed executions (SPEC §4)."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from executions.models import Execution, Status
from executions.retry import create_retry
from executions.services import run_pipeline
from pipelines.models import PipelineVersion
from pipelines.services import save_pipeline
from tests.helpers.factories import make_pipeline, stored_pipeline
from tests.helpers.pages import (
    SERIAL_YAML,
    as_user,
    count_queries,
    failed_parallel,
    failed_serial,
    htmx,
    page_url,
    retried_many,
    run,
)
from tests.helpers.runs import drive


def retry_url(execution: Execution) -> str:
    return reverse("execution_retry", args=[execution.pk])


def section(html: str, marker: str, end: str) -> str:
    start = html.index(marker)
    return html[start : html.index(end, start)]


def picker(html: str) -> list[tuple[str, str, bool]]:
    """(option key, status label, checked) for each option of the stage picker, in order."""
    block = section(html, '<ol class="options">', "</ol>")
    found = []
    for item in block.split("<li>")[1:]:
        key = re.search(r'name="from_stage" value="([^"]+)"', item)
        status = re.search(r'<span class="badge status-[a-z_]+">([^<]+)</span>', item)
        assert key and status, f"a stage option without its key or status: {item}"
        found.append((key.group(1), status.group(1), " checked>" in item))
    return found


def impact(html: str) -> tuple[list[str], list[str]]:
    """(carried-over stage ids, run-again stage ids) of the impact preview."""
    carried = section(html, 'class="impact-list carried-list"', "</ul>")
    again = section(html, 'class="impact-list run-list"', "</ul>")
    return re.findall(r'data-stage="([^"]+)"', carried), re.findall(r'data-stage="([^"]+)"', again)


def editable_inputs(html: str) -> list[str]:
    return re.findall(
        r'name="input-([^"]+)"', section(html, 'class="retry-inputs"', 'id="retry-impact"')
    )


def frozen_inputs(html: str) -> list[str]:
    block = html[html.index('class="frozen-inputs"') :] if 'class="frozen-inputs"' in html else ""
    return re.findall(r"<dt>([^<]+)</dt>", block[: block.index("</dl>")] if block else "")


@pytest.fixture
def failed(personas) -> Execution:
    return failed_serial(personas)


# --- the dialog --------------------------------------------------------------------------------


def test_the_dialog_offers_each_stage_up_to_the_failed_one_with_its_previous_status(
    client, personas, failed
):
    response = as_user(client, personas.executor).get(retry_url(failed), headers=htmx("modal-body"))
    html = response.content.decode()
    assert response.status_code == 200 and "<html" not in html and 'id="modal-title"' in html
    assert picker(html) == [
        ("build", "Success", False),
        ("test", "Success", False),
        ("deploy", "Failed", True),
    ]
    assert f'hx-post="{retry_url(failed)}" hx-target="#modal-body"' in html
    assert impact(html) == (["build", "test"], ["deploy"])
    assert editable_inputs(html) == ["deploy.fail", "deploy.token"]
    assert frozen_inputs(html) == ["version", "build.flavour", "test.suite"]
    assert "A pipeline-level input cannot change on retry: use Rerun to change it." in html
    assert "Stage &#x27;build&#x27; is carried over: use Rerun to change its inputs." in html


def test_picking_an_earlier_stage_re_renders_the_inputs_and_the_preview(client, personas, failed):
    as_user(client, personas.executor)
    response = client.get(
        retry_url(failed) + "?from_stage=test&input-deploy.fail=no", headers=htmx("retry-plan")
    )
    html = response.content.decode()
    assert response.status_code == 200 and html.startswith('<div id="retry-plan"')
    assert f'hx-get="{retry_url(failed)}" hx-trigger="change" hx-target="#retry-impact"' in html
    assert impact(html) == (["build"], ["test", "deploy"])
    assert editable_inputs(html) == ["test.suite", "deploy.fail", "deploy.token"]
    assert frozen_inputs(html) == ["version", "build.flavour"]
    suite = section(html, 'name="input-test.suite"', "</select>")
    assert '<option value="smoke" selected>' in suite
    fail = section(html, 'name="input-deploy.fail"', "</select>")
    assert '<option value="no" selected>' in fail, "what the operator typed is kept"
    assert "Compile" not in section(html, 'class="impact-list run-list"', "</ul>")
    assert "Unit tests" in html and re.search(
        r"Time saved against a full rerun: <strong>\d+\.\d s</strong>", html
    )


def test_changing_an_input_updates_the_preview_with_what_changed(client, personas, failed):
    as_user(client, personas.executor)
    response = client.get(
        retry_url(failed) + "?from_stage=deploy&input-deploy.fail=no", headers=htmx("retry-impact")
    )
    html = response.content.decode()
    assert html.startswith('<section id="retry-impact"') and 'name="input-' not in html
    assert "<code>deploy.fail</code>: yes → <strong>no</strong>" in html


def test_secrets_are_never_sent_back_to_the_form(client, personas, failed):
    html = (
        as_user(client, personas.executor).get(retry_url(failed), headers=htmx()).content.decode()
    )
    assert "s3cr3t-t0ken" not in html
    token = section(html, 'name="input-deploy.token"', ">")
    assert 'type="password"' in html and 'value="' not in token
    assert "unchanged (a value is set)" in token


def test_a_parallel_group_with_a_failed_member_offers_failed_only_or_all(client, personas):
    execution = failed_parallel(personas)
    as_user(client, personas.executor)
    html = client.get(retry_url(execution), headers=htmx()).content.decode()
    assert picker(html) == [("build", "Success", False), ("parallel_2", "Failed", True)]
    assert "eu: failed, us: success" in html
    assert 'name="mode" value="failed_only" checked' in html
    assert impact(html) == (["build", "us"], ["eu", "release"])

    html = client.get(
        retry_url(execution) + "?from_stage=parallel_2&mode=all", headers=htmx("retry-plan")
    ).content.decode()
    assert 'name="mode" value="all" checked' in html
    assert impact(html) == (["build"], ["eu", "us", "release"])

    html = client.get(
        retry_url(execution) + "?from_stage=build", headers=htmx("retry-plan")
    ).content.decode()
    assert 'name="mode"' not in html and impact(html) == ([], ["build", "eu", "us", "release"])
    assert "Nothing: every stage runs again." in html


def test_the_dialog_warns_when_the_pipeline_changed_since_and_offers_rerun(
    client, personas, failed
):
    save_pipeline(
        project=personas.project,
        yaml_text=SERIAL_YAML.replace('echo "testing', 'echo "checking'),
        user=personas.admin,
    )
    html = (
        as_user(client, personas.executor).get(retry_url(failed), headers=htmx()).content.decode()
    )
    warning = section(html, 'class="msg msg-warning pipeline-changed"', "</details>")
    assert "The pipeline changed since this execution." in warning
    assert f'hx-get="{reverse("execution_rerun", args=[failed.pk])}"' in warning
    assert '<span class="diff-del">-                  echo &quot;testing' in warning
    assert '<span class="diff-add">+                  echo &quot;checking' in warning


def test_the_difference_never_shows_a_secret_value(client, personas):
    with_secret = SERIAL_YAML.replace(
        "  variables:\n    - {name: version",
        '  variables:\n    - {name: api_key, type: Secret, value: "old-key-4711"}\n    - {name: version',
        1,
    )
    pipeline = stored_pipeline(personas.project, with_secret)  # saved before literals were refused
    failed = run(pipeline, personas.executor, **{"deploy.fail": "yes"})
    pipeline.current_version = PipelineVersion.objects.create(
        pipeline=pipeline,
        number=2,
        yaml="# changed\n" + with_secret.replace('"old-key-4711"', '"new-\\x6bey-0815"'),
    )
    pipeline.save(update_fields=["current_version"])
    html = (
        as_user(client, personas.executor).get(retry_url(failed), headers=htmx()).content.decode()
    )
    assert '<span class="diff-add">+# changed' in html
    assert "4711" not in html and "0815" not in html


# --- submit ------------------------------------------------------------------------------------


def test_submitting_creates_the_retry_and_sends_htmx_to_its_page(client, personas, failed):
    as_user(client, personas.executor)
    response = client.post(
        retry_url(failed),
        {
            "from_stage": "test",
            "input-test.suite": "full",
            "input-deploy.fail": "no",
            "reason": "flaky network",
        },
        headers=htmx("modal-body"),
    )
    retry = Execution.objects.get(retry_of=failed)
    assert response.status_code == 200 and response["HX-Redirect"] == page_url(retry)
    assert retry.resumed_from == "test" and retry.reason == "flaky network"
    assert retry.inputs["test.suite"] == "full" and retry.inputs["deploy.fail"] == "no"
    assert retry.secret_inputs == failed.secret_inputs, "a blank secret keeps its value"
    assert sorted(retry.changed_inputs) == ["deploy.fail", "test.suite"]
    assert drive(retry).status == Status.SUCCESS
    html = client.get(page_url(retry)).content.decode()
    assert f"Retry #{retry.sequence} of #{failed.sequence} started from Test." in html


def test_submitting_without_htmx_redirects_to_the_new_execution(client, personas, failed):
    response = as_user(client, personas.admin).post(retry_url(failed), {"from_stage": "deploy"})
    retry = Execution.objects.get(retry_of=failed)
    assert response.status_code == 302 and response["Location"] == page_url(retry)


def test_a_parallel_retry_of_failed_stages_only_carries_the_succeeded_sibling(client, personas):
    execution = failed_parallel(personas)
    as_user(client, personas.executor)
    client.post(
        retry_url(execution),
        {"from_stage": "parallel_2", "mode": "failed_only", "input-eu.fail": "no"},
        headers=htmx("modal-body"),
    )
    retry = drive(Execution.objects.get(retry_of=execution))
    assert retry.status == Status.SUCCESS and retry.retry_mode == "failed_only"
    runs = {r.identifier: r for r in retry.stage_runs.all()}
    assert runs["us"].carried_from_id is not None and runs["eu"].carried_from_id is None


def test_an_invalid_input_shows_the_form_again_with_the_message(client, personas, failed):
    as_user(client, personas.executor)
    before = Execution.objects.count()
    response = client.post(
        retry_url(failed),
        {"from_stage": "deploy", "input-deploy.fail": "maybe"},
        headers=htmx("modal-body"),
    )
    html = response.content.decode()
    assert response.status_code == 400 and response["HX-Retarget"] == "#modal-body"
    assert "deploy.fail must be one of no, yes (got &#x27;maybe&#x27;)" in html
    assert 'class="field-error"' in section(html, 'name="input-deploy.fail"', "</div>")
    assert picker(html)[-1] == ("deploy", "Failed", True) and 'id="retry-form"' in html
    assert Execution.objects.count() == before

    response = client.post(
        retry_url(failed), {"from_stage": "deploy", "input-deploy.fail": "maybe"}
    )
    assert response.status_code == 400 and "<html" in response.content.decode()
    assert "must be one of no, yes" in response.content.decode()


def test_a_reason_longer_than_2000_characters_is_refused(client, personas, failed):
    response = as_user(client, personas.executor).post(
        retry_url(failed), {"from_stage": "deploy", "reason": "x" * 2001}, headers=htmx()
    )
    assert response.status_code == 400 and "at most 2000 characters" in response.content.decode()
    assert not Execution.objects.filter(retry_of=failed).exists()


@pytest.mark.parametrize(
    ("post", "message"),
    [
        ({"from_stage": "nowhere"}, "Stage &#x27;nowhere&#x27; is not in this pipeline."),
        ({}, "Pick the stage to retry from."),
        (
            {"from_stage": "deploy", "input-version": "2.0"},
            "Input &#x27;version&#x27; cannot change",
        ),
        ({"from_stage": "deploy", "input-build.flavour": "x"}, "use Rerun to change its inputs"),
        ({"from_stage": "deploy", "input-nope": "1"}, "&#x27;nope&#x27; is not a runtime input"),
        ({"from_stage": "deploy", "mode": "sideways"}, "Unknown retry mode &#x27;sideways&#x27;"),
    ],
    ids=[
        "unknown-stage",
        "no-stage",
        "pipeline-input",
        "carried-stage-input",
        "unknown-input",
        "bad-mode",
    ],
)
@pytest.mark.parametrize("hx", [False, True], ids=["form", "htmx"])
def test_a_tampered_post_is_refused_with_a_message_and_creates_nothing(
    client, personas, failed, post, message, hx
):
    before = Execution.objects.count()
    response = as_user(client, personas.executor).post(
        retry_url(failed), post, headers=htmx() if hx else {}
    )
    assert response.status_code == 400
    assert message in response.content.decode()
    assert Execution.objects.count() == before


def test_a_tampered_pick_in_the_dialog_shows_the_message_in_the_dialog(client, personas, failed):
    response = as_user(client, personas.executor).get(
        retry_url(failed) + "?from_stage=%3Cscript%3E", headers=htmx("retry-plan")
    )
    html = response.content.decode()
    assert response.status_code == 400 and response["HX-Retarget"] == "#modal-body"
    assert (
        "Stage &#x27;&lt;script&gt;&#x27; is not in this pipeline." in html
        and 'id="retry-form"' in html
    )


def test_another_projects_execution_is_not_found_and_nothing_is_created(client, personas):
    other_pipeline = make_pipeline(personas.other_project, SERIAL_YAML)
    other = run(other_pipeline, personas.stranger, **{"deploy.fail": "yes"})
    before = Execution.objects.count()
    as_user(client, personas.executor)
    assert client.get(retry_url(other), headers=htmx()).status_code == 404
    assert (
        client.post(retry_url(other), {"from_stage": "deploy"}, headers=htmx()).status_code == 404
    )
    assert Execution.objects.count() == before


def test_the_second_of_two_racing_operators_is_sent_to_the_winners_retry(client, personas, failed):
    as_user(client, personas.executor)
    client.post(retry_url(failed), {"from_stage": "deploy"}, headers=htmx())
    winner = Execution.objects.get(retry_of=failed)
    as_user(client, personas.admin)
    response = client.post(retry_url(failed), {"from_stage": "test"}, headers=htmx())
    assert response.status_code == 200 and response["HX-Redirect"] == page_url(winner)
    assert Execution.objects.filter(retry_of=failed).count() == 1
    html = client.get(page_url(winner)).content.decode()
    assert (
        f"was already retried as #{winner.sequence}" in html
        and f"You were taken to #{winner.sequence}." in html
    )

    response = client.post(retry_url(failed), {"from_stage": "test"})
    assert response.status_code == 302 and response["Location"] == page_url(winner)


def test_the_dialog_of_an_execution_retried_already_links_to_the_latest_attempt(
    client, personas, failed
):
    retry = create_retry(execution=failed, user=personas.executor, from_stage="deploy")
    response = as_user(client, personas.executor).get(retry_url(failed), headers=htmx())
    html = response.content.decode()
    assert response.status_code == 409 and 'id="retry-form"' not in html
    assert f"already retried as #{retry.sequence}" in html
    assert f'href="{page_url(retry)}">Go to the latest attempt, #{retry.sequence}</a>' in html


def test_a_successful_or_running_execution_cannot_be_retried(client, personas):
    pipeline = make_pipeline(personas.project, SERIAL_YAML)
    succeeded = run(pipeline, personas.executor)
    as_user(client, personas.executor)
    response = client.post(retry_url(succeeded), {"from_stage": "deploy"}, headers=htmx())
    assert response.status_code == 409 and "Use Rerun to run it again." in response.content.decode()
    running = run_pipeline(pipeline=pipeline, user=personas.executor, inputs={})
    response = client.get(retry_url(running), headers=htmx())
    assert response.status_code == 409 and "is still running" in response.content.decode()
    assert not Execution.objects.filter(retry_of__in=[succeeded, running]).exists()


# --- access ------------------------------------------------------------------------------------


@pytest.mark.parametrize("hx", [False, True], ids=["form", "htmx"])
def test_each_persona_may_open_and_submit_the_retry_dialog_only_with_execute(client, personas, hx):
    headers = htmx("modal-body") if hx else {}
    shared = failed_serial(personas)
    for name, user in personas.all().items():
        execution = failed_serial(personas) if name in ("admin", "executor") else shared
        as_user(client, user)
        dialog = client.get(retry_url(execution), headers=headers)
        submit = client.post(retry_url(execution), {"from_stage": "deploy"}, headers=headers)
        if name == "stranger":
            assert (dialog.status_code, submit.status_code) == (404, 404), name
        elif name in ("viewer", "approver"):
            assert (dialog.status_code, submit.status_code) == (403, 403), name
            assert "You need the Execute permission on pipeline web." in submit.content.decode()
            assert not Execution.objects.filter(retry_of=execution).exists()
        else:
            assert dialog.status_code == 200, name
            assert submit.status_code == (200 if hx else 302), name
            assert Execution.objects.filter(retry_of=execution, triggered_by=user).exists(), name


# --- query counts ------------------------------------------------------------------------------


def test_the_dialog_costs_the_same_queries_for_5_and_50_stages(client, personas):
    small, large = retried_many(personas, 5), retried_many(personas, 50)
    as_user(client, personas.executor)
    full = [count_queries(client, retry_url(e), headers=htmx("modal-body")) for e in (small, large)]
    assert full[0] == full[1], full
    picks = [
        count_queries(client, retry_url(e) + "?from_stage=s1", headers=htmx("retry-plan"))
        for e in (small, large)
    ]
    assert picks[0] == picks[1], picks
    html = client.get(
        retry_url(large) + "?from_stage=s1", headers=htmx("retry-plan")
    ).content.decode()
    assert len(impact(html)[1]) == 49 and len(editable_inputs(html)) == 49
