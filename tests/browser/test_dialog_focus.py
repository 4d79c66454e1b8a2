"""Keyboard use of the retry dialog: it opens on the chosen stage, and editing an input (which
re-renders the plan) keeps the focus in the dialog, so Tab goes on to the next field."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.browser.test_execution_flows import (
    RELEASE_YAML,
    failed_run,
    open_retry_dialog,
    settling,
    url,
)
from tests.helpers.factories import make_pipeline

pytestmark = pytest.mark.browser

FOCUSED = "(() => { const el = document.activeElement; return el === document.body ? 'BODY' : (el.closest('#modal') ? '' : 'OUTSIDE:') + (el.name || el.id || el.tagName) + (el.type === 'radio' ? '=' + el.value : ''); })()"


def test_the_retry_dialog_keeps_the_focus_in_a_sensible_order(session, personas):
    pipeline = make_pipeline(personas.project, RELEASE_YAML)
    failed = failed_run(pipeline, personas.executor, **{"deploy.fail": "yes"})
    page = session.open(personas.executor, url(failed))
    open_retry_dialog(page)
    # the dialog opens on the stage it offers (the failed one), not the first radio
    expect(page.locator("[name=from_stage][value=deploy]")).to_be_checked()
    assert page.evaluate(FOCUSED) == "from_stage=deploy"

    # an input edited with the keyboard: the plan re-renders, the focus stays on it
    page.locator("[name='input-deploy.fail']").focus()
    settling(page, lambda: page.keyboard.press("ArrowUp"))
    assert page.evaluate(FOCUSED) == "input-deploy.fail"
    page.keyboard.press("Tab")
    after = page.evaluate(FOCUSED)
    assert after not in ("BODY", "") and not after.startswith("OUTSIDE:"), after

    # choosing another stage by keyboard re-renders the plan: still in the dialog, on the choice
    page.locator("[name=from_stage][value=deploy]").focus()
    settling(page, lambda: page.keyboard.press("ArrowUp"))
    expect(page.locator("[name=from_stage][value=test]")).to_be_checked()
    assert page.evaluate(FOCUSED) == "from_stage=test"
    page.keyboard.press("Tab")
    assert not page.evaluate(FOCUSED).startswith(("BODY", "OUTSIDE:"))
