"""The execution page in a real browser: retry from an earlier stage and watch it run, retry a
parallel group's failed stage, approvals, a live log, refusals. Pipelines run on a real worker."""

from __future__ import annotations

import re
import time

import pytest
from django.urls import reverse
from playwright.sync_api import expect

from executions.models import Execution, Status
from executions.retry import create_retry
from executions.services import answer_approval, run_pipeline
from tests.browser.conftest import ROOT, screenshot
from tests.helpers.factories import make_pipeline
from tests.helpers.pages import APPROVAL_YAML
from tests.helpers.runs import wait_for, wait_for_stage, wait_for_status

pytestmark = pytest.mark.browser

RELEASE_YAML = """
pipeline:
  name: Release train
  identifier: release_train
  variables:
    - {name: version, type: String, value: <+input>, default: "2.3.0", allowed_values: ["2.3.0", "2.4.0"]}
  stages:
    - stage:
        identifier: build
        name: Build
        steps:
          - step:
              identifier: compile
              name: Compile
              type: ShellScript
              spec:
                script: |
                  echo "building <+pipeline.variables.version>"
                  echo "image=app:<+pipeline.variables.version>" >> "$STAGELINE_OUTPUT"
    - stage:
        identifier: test
        name: Test
        variables:
          - {name: suite, type: String, value: <+input>, default: smoke, allowed_values: [smoke, full]}
        steps:
          - step:
              identifier: unit
              name: Unit tests
              type: ShellScript
              spec:
                script: |
                  echo "running the <+stage.variables.suite> suite against <+pipeline.stages.build.output.image>"
                  sleep 2
                  echo "all passed"
    - stage:
        identifier: deploy
        name: Deploy
        variables:
          - {name: region, type: String, value: <+input>, default: eu-west-1, allowed_values: [eu-west-1, us-east-1]}
          - {name: fail, type: String, value: <+input>, default: "no", allowed_values: ["no", "yes"]}
        steps:
          - step:
              identifier: rollout
              name: Roll out
              type: ShellScript
              spec:
                script: |
                  echo "deploying <+pipeline.stages.build.output.image> to <+stage.variables.region>"
                  sleep 1
                  if [ "<+stage.variables.fail>" = "yes" ]; then echo "health check failed" >&2; exit 3; fi
                  echo "healthy"
"""

CHATTY_YAML = """
pipeline:
  name: Data refresh
  identifier: data_refresh
  stages:
    - stage:
        identifier: load
        name: Load
        steps:
          - step:
              identifier: copy
              name: Copy tables
              type: ShellScript
              spec:
                script: |
                  for i in $(seq 1 25); do echo "copied table $i of 25"; sleep 0.3; done
"""


def url(execution: Execution) -> str:
    return reverse("execution", args=[execution.pk])


def failed_run(pipeline, user, **inputs) -> Execution:
    return wait_for_status(run_pipeline(pipeline=pipeline, user=user, inputs=inputs), Status.FAILED)


def open_retry_dialog(page):
    page.click("#retry-button")
    expect(page.locator("#modal")).to_have_attribute("open", "")
    expect(page.locator("#retry-form")).to_be_visible()


def settling(page, action) -> None:
    """Do ``action`` and wait until the htmx swap it causes has settled: the new content is in
    the page and htmx listens to it (a value chosen in an element that a swap is about to
    replace, or before htmx has processed the new one, is lost)."""
    page.evaluate(
        "if (!window.stagelineSettles) { window.stagelineSettles = 0;"
        " document.body.addEventListener('htmx:afterSettle', () => window.stagelineSettles++); }"
    )
    before = page.evaluate("window.stagelineSettles")
    action()
    deadline = time.monotonic() + 10  # polled from here: the page's CSP forbids wait_for_function
    while page.evaluate("window.stagelineSettles") <= before:
        assert time.monotonic() < deadline, "the htmx swap did not settle"
        page.wait_for_timeout(20)


def mark_page(page) -> None:
    """Leave a mark in the page's window: it survives everything but a reload."""
    page.evaluate("window.stagelineMark = 'still here'")


def assert_not_reloaded(page) -> None:
    assert page.evaluate("window.stagelineMark") == "still here", "the page was reloaded"


def test_an_executor_retries_from_an_earlier_stage_and_watches_it_succeed_live(session, personas):
    pipeline = make_pipeline(personas.project, RELEASE_YAML)
    failed = failed_run(pipeline, personas.executor, **{"deploy.fail": "yes"})
    page = session.open(personas.executor, url(failed))
    expect(page.locator("h1 .badge")).to_have_text("Failed")
    expect(page.locator("#log-lines")).to_contain_text("health check failed")

    open_retry_dialog(page)
    expect(page.locator("[name=from_stage][value=deploy]")).to_be_checked()
    expect(page.locator(".run-list [data-stage]")).to_have_count(1)
    expect(page.locator("[name='input-test.suite']")).to_have_count(0)

    page.locator(".stage-picker .option", has_text="Test").click()
    expect(page.locator(".run-list [data-stage]")).to_have_count(2)
    expect(page.locator(".carried-list")).to_contain_text(f"Build from #{failed.sequence}")
    expect(page.locator("[name='input-test.suite']")).to_be_visible()
    expect(page.locator(".frozen-inputs")).to_contain_text("version")

    page.select_option("[name='input-deploy.fail']", "no")
    expect(page.locator(".changed-inputs")).to_contain_text("deploy.fail: yes → no")
    page.fill("[name=reason]", "the health check was flaky")
    screenshot(page, "retry-dialog-serial")

    page.click("#retry-form button[type=submit]")
    retry = wait_for(lambda: Execution.objects.filter(retry_of=failed).first(), message="the retry")
    page.wait_for_url(f"**{url(retry)}")
    mark_page(page)
    expect(page.locator(".msg-success")).to_contain_text(
        f"Retry #{retry.sequence} of #{failed.sequence} started from Test."
    )
    expect(page.locator("#stage-build")).to_contain_text(f"from #{failed.sequence}")

    expect(page.locator("h1 .badge")).to_have_text("Success", timeout=40_000)
    expect(page.locator("#stage-deploy .badge")).to_have_text("Success")
    expect(page.locator("#progress")).to_contain_text("3 / 3 stages done")
    expect(page.locator("#execution-live")).not_to_have_attribute("hx-trigger", re.compile(".*"))
    assert_not_reloaded(page)
    expect(page.locator("#retry-history .attempt")).to_have_count(2)
    screenshot(page, "retry-succeeded-live")


def test_retrying_a_parallel_group_runs_only_its_failed_stage(session, personas):
    yaml_text = (ROOT / "examples" / "pipelines" / "web_deploy.yaml").read_text()
    pipeline = make_pipeline(personas.project, yaml_text)
    failed = failed_run(
        pipeline, personas.executor, **{"deploy_eu.fail": "yes", "version": "1.5.0"}
    )
    page = session.open(
        personas.executor, url(failed), width=1600, height=1400
    )  # room for the graph and the whole dialog
    open_retry_dialog(page)
    group = page.locator("[name=from_stage][value=parallel_3]")
    expect(group).to_be_checked()
    expect(page.locator(".stage-picker")).to_contain_text("deploy_eu: failed, deploy_us: success")
    expect(page.locator("[name=mode][value=failed_only]")).to_be_checked()
    expect(page.locator(".carried-list")).to_contain_text("Deploy US")

    settling(page, page.locator(".mode-picker .option", has_text="All stages of the group").click)
    expect(page.locator(".run-list")).to_contain_text("Deploy US")
    settling(page, page.locator(".mode-picker .option", has_text="Failed stages only").click)
    expect(page.locator(".carried-list")).to_contain_text("Deploy US")
    page.select_option("[name='input-deploy_eu.fail']", "no")
    expect(page.locator(".changed-inputs")).to_contain_text("deploy_eu.fail")
    screenshot(page, "retry-dialog", docs=True)

    page.click("#retry-form button[type=submit]")
    retry = wait_for(lambda: Execution.objects.filter(retry_of=failed).first(), message="the retry")
    page.wait_for_url(f"**{url(retry)}")
    mark_page(page)
    expect(page.locator("#stage-deploy_us")).to_contain_text(f"from #{failed.sequence}")
    expect(page.locator("#stage-approve_prod .badge")).to_have_text(
        "Waiting for approval", timeout=40_000
    )
    assert retry.retry_mode == "failed_only"

    answer_approval(
        execution=retry, stage="approve_prod", user=personas.admin, approve=True, comment="go"
    )
    expect(page.locator("h1 .badge")).to_have_text("Success", timeout=40_000)
    assert_not_reloaded(page)
    runs = {r.identifier: r for r in Execution.objects.get(pk=retry.pk).stage_runs.all()}
    assert runs["deploy_us"].carried_from_id and not runs["deploy_eu"].carried_from_id

    page.locator("#stage-deploy_us .step a").click()
    expect(page.locator("#log-title")).to_contain_text("Deploy US › Roll out")
    expect(page.locator("#log-status")).to_contain_text(f"Success from #{failed.sequence}")
    page.locator("#stage-deploy_eu .step a").click()
    expect(page.locator("#log-title")).to_contain_text("Deploy EU › Roll out")
    expect(page.locator("#log-status")).to_have_text("Success")
    expect(page.locator("#log-panel")).to_contain_text(
        "deploying registry.example.internal/web:1.5.0 to eu-west-1"
    )
    expect(page.locator("#stage-deploy_eu .step")).to_have_class(re.compile("selected"))
    page.mouse.move(0, 0)
    screenshot(page, "execution-page", docs=True, full_page=True)


def test_a_viewer_sees_the_retry_button_disabled_with_the_reason(session, personas):
    pipeline = make_pipeline(personas.project, RELEASE_YAML)
    failed = failed_run(pipeline, personas.executor, **{"deploy.fail": "yes"})
    page = session.open(personas.viewer, url(failed))
    button = page.get_by_role("button", name="Retry Failed Pipeline")
    expect(button).to_be_visible()
    expect(button).to_be_disabled()
    expect(page.locator("#retry-reason")).to_have_text(
        "You need the Execute permission on pipeline release_train."
    )
    expect(button).to_have_attribute("aria-describedby", "retry-reason")
    screenshot(page, "viewer-retry-disabled")


def test_an_approver_approves_a_waiting_stage_with_a_comment(session, personas):
    pipeline = make_pipeline(personas.project, APPROVAL_YAML)
    waiting = wait_for_status(
        run_pipeline(pipeline=pipeline, user=personas.executor, inputs={}), Status.WAITING
    )
    page = session.open(personas.approver, url(waiting))
    expect(page.locator("#stage-approve .approval-message")).to_have_text("Ship v7 <b>now</b>?")
    page.click("#approve-approve-button")
    expect(page.locator("#modal")).to_have_attribute("open", "")
    expect(page.locator("#modal-title")).to_have_text("Approve or reject Approve production")
    page.fill("#modal [name=comment]", "release notes checked")
    screenshot(page, "approval-dialog")
    page.click("#modal button[name=decision][value=approve]")
    expect(page.locator(".msg-success")).to_contain_text("Approved stage 'Approve production'")
    mark_page(page)
    expect(page.locator("h1 .badge")).to_have_text("Success", timeout=40_000)
    assert_not_reloaded(page)
    step = Execution.objects.get(pk=waiting.pk).step_runs.get(identifier="gate")
    assert step.comment == "release notes checked" and step.decided_by == personas.approver
    screenshot(page, "approved")


def test_a_running_steps_log_grows_live(session, personas):
    pipeline = make_pipeline(personas.project, CHATTY_YAML)
    execution = run_pipeline(pipeline=pipeline, user=personas.executor, inputs={})
    wait_for_stage(execution, "load", Status.RUNNING)
    page = session.open(personas.viewer, url(execution))
    mark_page(page)
    log = page.locator("#log-lines")
    expect(page.locator("#log-poller")).to_contain_text("Following the log")
    expect(log).to_contain_text("copied table 3 of 25")
    early = log.inner_text().count("\n")
    expect(log).to_contain_text("copied table 12 of 25", timeout=20_000)
    assert log.inner_text().count("\n") > early
    screenshot(page, "live-log")
    expect(log).to_contain_text("copied table 25 of 25", timeout=30_000)
    expect(page.locator("#log-poller")).to_have_text("End of the log.")
    expect(page.locator("#log-status")).to_have_text("Success")
    text = log.inner_text()
    assert [f"copied table {i} of 25" for i in range(1, 26)] == text.strip().splitlines(), (
        "every line once, in order"
    )
    expect(page.locator("h1 .badge")).to_have_text("Success")
    assert_not_reloaded(page)


def test_a_tampered_retry_gets_a_message_in_the_dialog_not_an_error_page(session, personas):
    pipeline = make_pipeline(personas.project, RELEASE_YAML)
    failed = failed_run(pipeline, personas.executor, **{"deploy.fail": "yes"})
    page = session.open(personas.executor, url(failed))
    open_retry_dialog(page)
    page.evaluate(
        """() => {
            const field = document.createElement("input");
            field.type = "hidden"; field.name = "input-version"; field.value = "2.4.0";
            document.getElementById("retry-form").appendChild(field);
        }"""
    )
    page.click("#retry-form button[type=submit]")
    error = page.locator("#modal .form-errors")
    expect(error).to_contain_text(
        "Input 'version' cannot change: a pipeline-level input cannot change on retry"
    )
    expect(page.locator("#retry-form")).to_be_visible()

    page.evaluate("document.querySelector('[name=from_stage]:checked').value = 'nowhere'")
    page.click("#retry-form button[type=submit]")
    expect(error).to_contain_text("Stage 'nowhere' is not in this pipeline.")
    expect(page.locator("#modal")).to_have_attribute("open", "")
    screenshot(page, "tampered-retry")
    assert not Execution.objects.filter(retry_of=failed).exists()

    # Meanwhile another operator retries it: this submit is sent to that retry.
    create_retry(execution=failed, user=personas.admin, from_stage="deploy")
    page.evaluate("document.querySelector('[name=from_stage]:checked').value = 'deploy'")
    page.click("#retry-form button[type=submit]")
    winner = Execution.objects.get(retry_of=failed)
    page.wait_for_url(f"**{url(winner)}")
    expect(page.locator(".msg-warning")).to_contain_text(
        f"was already retried as #{winner.sequence}"
    )
    wait_for_status(winner, Status.FAILED)  # let the worker finish before the database is reset
