"""Attempts of a step in a real browser (issue 13 point 5): a page watching a step that a retry
rule runs three times moves its log to each new attempt as it begins, counts a waiting retry
down ("next attempt in 3 s"), ends at "Attempt 3 of 3", and loads an earlier attempt's log in
place when the operator picks it."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from executions import engine
from executions.models import Execution, StepRun
from executions.services import run_pipeline
from executions.states import Status
from tests.browser.conftest import screenshot
from tests.browser.test_execution_flows import assert_not_reloaded, mark_page, url
from tests.helpers.factories import make_pipeline
from tests.helpers.pages import flaky_fetch_yaml
from tests.helpers.runs import wait_for

pytestmark = pytest.mark.browser


def test_the_page_follows_each_attempt_and_shows_earlier_ones_on_demand(
    session, personas, shared_dir
):
    pipeline = make_pipeline(personas.project, flaky_fetch_yaml(shared_dir, "4s"))
    execution = run_pipeline(pipeline=pipeline, user=personas.executor, inputs={})
    step = StepRun.objects.get(execution=execution, identifier="fetch")
    page = session.open(personas.viewer, f"{url(execution)}?step={step.pk}")
    mark_page(page)
    attempts = page.locator("#step-attempts")
    # Attempt 1 fails: the open log moves to attempt 2, which waits for its interval.
    expect(attempts).to_contain_text("Attempt 2 of 3")
    countdown = page.locator("#step-attempts time[data-countdown]")
    expect(countdown).to_be_visible()
    first = countdown.text_content()
    assert first in ("4 s", "3 s", "2 s", "1 s"), first
    expect(countdown).not_to_have_text(first, timeout=2500)  # it counts down
    # The scheduler starts each due attempt (this test plays it: no beat runs here).
    wait_for(
        lambda: (
            engine.reap() is not None
            and Execution.objects.get(pk=execution.pk).status == Status.SUCCESS
        ),
        timeout=40,
        interval=0.5,
        message="the third attempt to pass",
    )
    expect(attempts).to_contain_text("Attempt 3 of 3")
    expect(page.locator("#log-lines")).to_contain_text("attempt 3 says hello")
    expect(page.locator("#log-lines")).not_to_contain_text("attempt 2 says")
    items = attempts.locator(".attempt-list a")
    expect(items).to_have_count(3)
    expect(items.nth(0)).to_contain_text("Failed")
    expect(items.nth(0)).to_contain_text("exit 11")
    # Picking attempt 1 loads its log, facts and download in place.
    items.nth(0).click()
    expect(attempts).to_contain_text("Attempt 1 of 3")
    expect(page.locator("#log-lines")).to_contain_text("attempt 1 says hello")
    expect(page.locator("#log-lines")).not_to_contain_text("attempt 3 says")
    expect(page.locator("#step-facts .exit-code")).to_have_text("11")
    expect(page.locator("#log-download")).to_have_attribute("href", f"{step_log(step)}?attempt=1")
    expect(attempts.locator('a[aria-current="true"]')).to_contain_text("Attempt 1")
    assert "attempt=1" in page.url
    assert_not_reloaded(page)
    screenshot(page, "attempts-earlier")


def step_log(step: StepRun) -> str:
    return f"/executions/{step.execution_id}/steps/{step.pk}/log.txt"
