"""A dialog whose submit fails (403, 404, CSRF, 5xx, network) says so inside the dialog, in plain
words, and stays usable: the operator can fix things and submit again."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from executions.models import Execution
from pipelines.models import RoleAssignment
from pipelines.roles import revoke_role
from tests.browser.conftest import screenshot
from tests.browser.test_execution_flows import RELEASE_YAML, failed_run, open_retry_dialog, url
from tests.helpers.factories import make_pipeline
from tests.helpers.runs import wait_for

pytestmark = pytest.mark.browser

SUBMIT = "#retry-form button[type=submit]"
ERROR = "#modal .dialog-error"


# What the browser itself logs for the failures this test makes on purpose.
MADE_ON_PURPOSE = ("net::ERR_FAILED", "status of 500", "Response Status Error Code", "htmx:")


def forget_expected_console_errors(session) -> None:
    session.console_errors[:] = [
        e for e in session.console_errors if not any(m in e for m in MADE_ON_PURPOSE)
    ]


def assert_still_usable(page) -> None:
    expect(page.locator("#modal")).to_have_attribute("open", "")
    expect(page.locator(SUBMIT)).to_be_enabled()
    # nothing is left behind the backdrop
    expect(page.locator("#flash .msg-error")).to_have_count(0)


def test_failed_submits_say_why_inside_the_dialog_and_it_stays_usable(session, personas):
    pipeline = make_pipeline(personas.project, RELEASE_YAML)
    failed = failed_run(pipeline, personas.executor, **{"deploy.fail": "yes"})
    page = session.open(personas.executor, url(failed))
    open_retry_dialog(page)

    # the network fails
    page.route("**/retry/", lambda route: route.abort())
    page.click(SUBMIT)
    expect(page.locator(ERROR)).to_have_text(
        "The server did not answer. Check your connection and try again."
    )
    assert_still_usable(page)
    page.unroute("**/retry/")

    # the server fails
    page.route(
        "**/retry/",
        lambda route: route.fulfill(
            status=500,
            body="<h1>Something went wrong</h1><p>The error was recorded. Try again in a moment.</p>",
            content_type="text/html",
        ),
    )
    page.click(SUBMIT)
    expect(page.locator(ERROR)).to_contain_text("The server failed")
    assert_still_usable(page)
    page.unroute("**/retry/")

    # the form is stale (CSRF): plain words, not Django's developer text
    page.context.add_cookies([{"name": "csrftoken", "value": "x" * 32, "url": session.base_url}])
    page.click(SUBMIT)
    expect(page.locator(ERROR)).to_contain_text("reload the page")
    expect(page.locator(ERROR)).not_to_contain_text("CSRF")
    assert_still_usable(page)
    screenshot(page, "dialog-error")

    # the role is taken away meanwhile: not allowed / not found, said in the dialog
    page.reload()
    open_retry_dialog(page)
    revoke_role(assignment=RoleAssignment.objects.get(user=personas.executor))
    page.click(SUBMIT)
    expect(page.locator(ERROR)).to_contain_text("Not found")
    assert_still_usable(page)
    assert not Execution.objects.filter(retry_of=failed).exists()
    forget_expected_console_errors(session)


def test_after_an_error_the_same_dialog_submits(session, personas):
    pipeline = make_pipeline(personas.project, RELEASE_YAML)
    failed = failed_run(pipeline, personas.executor, **{"deploy.fail": "yes"})
    page = session.open(personas.executor, url(failed))
    open_retry_dialog(page)
    page.route("**/retry/", lambda route: route.abort())
    page.click(SUBMIT)
    expect(page.locator(ERROR)).to_be_visible()
    page.unroute("**/retry/")
    page.click(SUBMIT)
    retry = wait_for(lambda: Execution.objects.filter(retry_of=failed).first(), message="the retry")
    page.wait_for_url(f"**{url(retry)}")
    forget_expected_console_errors(session)
