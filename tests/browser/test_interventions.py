"""Answering a manual intervention in a real browser (issue 13 point 9): a smoke test whose rule
is ``manual_intervention`` fails its first attempt; the execution page shows the banner (the
error, the time left, what the timeout will do, the five answers); the operator chooses Retry in
the dialog, with a comment; the second attempt passes and the run ends SUCCESS while the page
watches (no reload after the answer's own return to the page); the attempt picker shows both attempts' logs. The banner is the picture in
docs/pipelines.md."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from executions.models import Execution, PendingWait, StageRun, StepRun
from executions.services import run_pipeline
from executions.states import Status
from tests.browser.conftest import screenshot
from tests.browser.test_execution_flows import assert_not_reloaded, mark_page, url
from tests.helpers.factories import make_pipeline
from tests.helpers.runs import wait_for_status

pytestmark = pytest.mark.browser

# The smoke test fails its first try and passes the next: a count kept in a folder shared with
# the test (a sandboxed step keeps nothing of its own from one attempt to the next).
CHECKOUT_YAML = """
pipeline:
  name: Checkout deploy
  identifier: checkout_deploy
  stages:
    - stage:
        identifier: deploy
        name: Deploy
        steps:
          - step:
              identifier: smoke
              name: Smoke test
              type: ShellScript
              timeout: 1m
              failure_strategies:
                - on_failure:
                    errors: [all]
                    action: {type: manual_intervention, timeout: 1h, on_timeout: {type: abort}}
              spec:
                script: |
                  n=$(cat DIR/tries 2>/dev/null || echo 0); n=$((n+1)); echo "$n" > DIR/tries
                  echo "smoke test of checkout, try $n"
                  if [ "$n" -lt 2 ]; then echo "GET /health: 502 Bad Gateway" >&2; exit 1; fi
                  echo "GET /health: 200 OK"
    - stage:
        identifier: announce
        name: Announce
        steps:
          - step: {identifier: notify, name: Notify, type: ShellScript, spec: {script: echo live}}
"""


class Element:
    """A locator as ``conftest.screenshot`` takes a page (the picture is the element only)."""

    def __init__(self, locator):
        self.locator = locator

    def screenshot(self, full_page: bool = False) -> bytes:
        return self.locator.screenshot(animations="disabled", caret="hide")


def pin_the_wait(execution: Execution, step: StepRun) -> None:
    """Facts that differ from run to run are fixed, so that the docs' picture is written again
    only when the banner looks different: the failure 10 minutes ago, an hour (and 50 s, so the
    page still reads "1 h 00 min left" a few seconds later) left to answer."""
    now = timezone.now()
    failed = now - timedelta(minutes=10)
    due = now + timedelta(hours=1, seconds=50)
    StepRun.objects.filter(pk=step.pk).update(
        started_at=failed - timedelta(seconds=2), finished_at=failed, deadline=due
    )
    StageRun.objects.filter(pk=step.stage_run_id).update(started_at=failed - timedelta(seconds=2))
    Execution.objects.filter(pk=execution.pk).update(started_at=failed - timedelta(seconds=3))
    PendingWait.objects.filter(step_run=step, state=PendingWait.State.PENDING).update(due_at=due)


def test_the_operator_retries_a_step_waiting_for_intervention_and_sees_both_attempts(
    session, personas, shared_dir
):
    pipeline = make_pipeline(personas.project, CHECKOUT_YAML.replace("DIR", str(shared_dir)))
    execution = wait_for_status(
        run_pipeline(pipeline=pipeline, user=personas.executor, inputs={}),
        Status.INTERVENTION_WAITING,
    )
    step = StepRun.objects.get(execution=execution, identifier="smoke")
    assert (step.status, step.exit_code) == (Status.INTERVENTION_WAITING, 1)
    pin_the_wait(execution, step)

    page = session.open(personas.executor, url(execution))
    mark_page(page)
    banner = page.locator(".intervention-banner")
    expect(banner).to_have_count(1)
    expect(banner).to_contain_text("Deploy › Smoke test needs intervention.")
    expect(banner.locator(".time-left")).to_have_text("1 h 00 min left")
    expect(banner).to_contain_text("then, without an answer: abort")
    buttons = banner.locator(".intervention-actions a")
    expect(buttons).to_have_text(["Retry", "Ignore", "Mark as success", "Mark as failure", "Abort"])
    page.mouse.move(0, 0)
    screenshot(Element(page.locator("#interventions")), "intervention-banner", docs=True)

    # Retry, in the dialog, with a comment: the second attempt starts at once.
    banner.get_by_role("link", name="Retry").click()
    dialog = page.locator("#modal-body")
    expect(dialog).to_contain_text("Retry Deploy › Smoke test")
    dialog.locator("textarea[name=comment], input[name=comment]").fill("the gateway restarted")
    expect(dialog).to_contain_text("runs the step again now, as a new attempt")
    with page.expect_navigation():  # the answer returns to the execution page
        dialog.locator("button[type=submit][value=retry]").click()
    mark_page(page)
    expect(page.locator(".messages")).to_contain_text("Retry: step 'Deploy › Smoke test' of #1")

    expect(page.locator("h1 .badge")).to_have_text("Success", timeout=40_000)
    expect(page.locator(".intervention-banner")).to_have_count(0)
    expect(page.locator(".intervention-outcome")).to_contain_text("executor chose")
    expect(page.locator(".intervention-outcome")).to_contain_text("the gateway restarted")
    step.refresh_from_db()
    assert (step.status, step.attempts, step.exit_code) == (Status.SUCCESS, 2, 0)
    assert (shared_dir / "tries").read_text().strip() == "2"

    # The step's log: the latest attempt, and the picker loads the first one's in place.
    page.locator("#stage-deploy .step a").first.click()
    attempts = page.locator("#step-attempts")
    expect(attempts).to_contain_text("Attempt 2 of 2")
    expect(page.locator("#log-lines")).to_contain_text("GET /health: 200 OK")
    expect(page.locator("#log-lines")).not_to_contain_text("502")
    items = attempts.locator(".attempt-list a")
    expect(items).to_have_count(2)
    expect(items.nth(0)).to_contain_text("exit 1")
    items.nth(0).click()
    expect(attempts).to_contain_text("Attempt 1 of 2")
    expect(page.locator("#log-lines")).to_contain_text("GET /health: 502 Bad Gateway")
    expect(page.locator("#log-lines")).not_to_contain_text("200 OK")
    items.nth(1).click()
    expect(page.locator("#log-lines")).to_contain_text("GET /health: 200 OK")
    assert_not_reloaded(page)
