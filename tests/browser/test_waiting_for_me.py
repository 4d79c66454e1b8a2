""" "Waiting for me" in a real browser: the header counts what the approver may answer, the list
leads to the approval, and an answered approval leaves the list and the count."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from executions.models import Status
from executions.services import run_pipeline
from tests.browser.conftest import screenshot
from tests.helpers.factories import make_pipeline
from tests.helpers.pages import APPROVAL_YAML
from tests.helpers.runs import wait_for_status

pytestmark = pytest.mark.browser


def test_an_approver_finds_what_waits_for_them_and_answers_it(session, personas):
    pipeline = make_pipeline(personas.project, APPROVAL_YAML)
    waiting = wait_for_status(
        run_pipeline(pipeline=pipeline, user=personas.executor, inputs={}), Status.WAITING
    )
    page = session.open(personas.approver, "/")
    expect(page.locator(".topnav .waiting-count")).to_have_text("1")

    page.click(".topnav .waiting-link")
    expect(page.locator("h1")).to_have_text("Waiting for me")
    row = page.locator(".waiting-table tbody tr")
    expect(row).to_have_count(1)
    expect(row).to_contain_text(f"{pipeline.name} #{waiting.sequence}")
    expect(row).to_contain_text("acme/web")
    screenshot(page, "waiting-for-me", docs=True)

    row.locator("text=Answer").click()
    page.fill("[name=comment]", "checked from my list")
    page.click("button[name=decision][value=approve]")
    expect(page.locator(".msg-success")).to_contain_text("Approved stage 'Approve production'")
    # the header's count is loaded after the page: it is 0 once it has come
    expect(page.locator(".topnav .waiting-count")).to_have_attribute(
        "aria-label", "0 waiting for you"
    )

    page.goto("/waiting/")
    expect(page.locator(".empty")).to_have_text("Nothing waits for you.")
    # an executor (who may not approve) is never counted in
    other = session.open(personas.executor, "/waiting/")
    expect(other.locator(".empty")).to_have_text("Nothing waits for you.")
    expect(other.locator(".topnav .waiting-count")).to_have_attribute(
        "aria-label", "0 waiting for you"
    )
