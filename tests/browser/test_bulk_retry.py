"""Bulk retry on the project page, in a browser: check two failed executions, preview, submit;
the list refreshes behind the dialog."""

from __future__ import annotations

import pytest

from executions.models import Execution, Status
from executions.services import run_pipeline
from tests.helpers.factories import make_pipeline
from tests.helpers.pages import SERIAL_YAML
from tests.helpers.runs import wait_for_status

pytestmark = pytest.mark.browser


def test_check_preview_and_retry_two_failed_executions(session, personas):
    pipeline = make_pipeline(personas.project, SERIAL_YAML)
    inputs = {"deploy.fail": "yes", "deploy.token": "t"}
    failed = [
        wait_for_status(
            run_pipeline(pipeline=pipeline, user=personas.executor, inputs=inputs), Status.FAILED
        )
        for _ in range(2)
    ]
    page = session.open(personas.executor, "/p/acme/web/")
    for execution in failed:
        page.check(f'input[name="ids"][value="{execution.pk}"]')
    page.click("button:has-text('Retry selected')")
    dialog = page.locator("#modal")
    dialog.locator("button:has-text('Retry 2 executions')").click()
    dialog.locator('[data-outcome="created"]').nth(1).wait_for()
    assert Execution.objects.filter(retry_of__in=failed).count() == 2
    # The list behind the dialog refreshed itself: both rows say where they were retried.
    page.locator("#executions .retry-link:has-text('retried as')").nth(1).wait_for()
