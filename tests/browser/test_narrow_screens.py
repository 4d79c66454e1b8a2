"""Every page and dialog is usable on a 390 px phone: the page never scrolls sideways and nothing
is clipped (a wide table scrolls inside its own box)."""

from __future__ import annotations

import pytest
from django.urls import reverse
from playwright.sync_api import expect

from executions.models import Status
from executions.services import run_pipeline
from tests.browser.conftest import screenshot
from tests.browser.test_execution_flows import RELEASE_YAML, failed_run, url
from tests.helpers.factories import make_pipeline
from tests.helpers.pages import APPROVAL_YAML
from tests.helpers.runs import wait_for_status

pytestmark = pytest.mark.browser

PHONE = {"width": 390, "height": 844}

# Elements whose content is wider than their box, where the overflow is not meant to scroll
# (overflow visible or hidden): what a person would see cut off or spilling out.
CLIPPED = """
() => {
  const width = document.documentElement.clientWidth;
  const found = [];
  // Boxes meant to scroll sideways: a wide table (.scroll-x), code and logs (pre, .code, .log).
  const scrollable = (el) => Boolean(el.closest(".scroll-x, pre, .code, .log, .diff"));
  const hidden = (el) => {  // the visually-hidden pattern: a 1 px box that clips on purpose
    for (let node = el; node && node !== document.body; node = node.parentElement) {
      const box = node.getBoundingClientRect();
      if ((box.width <= 1 || box.height <= 1) && getComputedStyle(node).overflow !== "visible") return true;
    }
    return false;
  };
  for (const el of document.querySelectorAll("main *, dialog[open] *, header *")) {
    const rect = el.getBoundingClientRect();
    if (rect.width === 0 || rect.height === 0 || el.closest(".visually-hidden, .skip-link") || hidden(el) || scrollable(el)) continue;
    const style = getComputedStyle(el);
    if (rect.right > width + 1 || rect.left < -1) {
      found.push(`${el.tagName.toLowerCase()}.${el.className} sticks out (${Math.round(rect.left)}..${Math.round(rect.right)} of ${width})`);
 } else if (el.children.length === 0 && el.textContent.trim().length > 30 && rect.width < 110) {
      found.push(`${el.tagName.toLowerCase()}.${el.className} is crushed to ${Math.round(rect.width)} px: "${el.textContent.trim().slice(0, 30)}…"`);
    } else if (style.overflowX === "hidden" && el.scrollWidth > el.clientWidth + 1 && style.textOverflow !== "ellipsis") {
      found.push(`${el.tagName.toLowerCase()}.${el.className} is clipped (${el.scrollWidth} > ${el.clientWidth})`);
    }
  }
  return found.slice(0, 8);
}
"""


def assert_fits(page, what: str) -> None:
    page.wait_for_load_state("networkidle")
    sideways = page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert sideways <= 0, f"{what}: the page scrolls sideways by {sideways} px"
    clipped = page.evaluate(CLIPPED)
    assert clipped == [], f"{what}: {clipped}"


def test_pages_and_dialogs_fit_a_phone(session, personas):
    pipeline = make_pipeline(personas.project, RELEASE_YAML)
    failed = failed_run(pipeline, personas.executor, **{"deploy.fail": "yes"})
    gated = make_pipeline(personas.project, APPROVAL_YAML)
    waiting = wait_for_status(
        run_pipeline(pipeline=gated, user=personas.executor, inputs={}), Status.WAITING
    )
    args = ["acme", "web", pipeline.identifier]
    pages = {
        "home": (personas.executor, reverse("home")),
        "project": (personas.executor, reverse("project", args=["acme", "web"])),
        "pipeline": (personas.executor, reverse("pipeline", args=args)),
        "definition": (personas.executor, reverse("pipeline_definition", args=args)),
        "history": (personas.executor, reverse("pipeline_history", args=args)),
        "edit": (personas.admin, reverse("pipeline_edit", args=args)),
        "access": (personas.admin, reverse("project_access", args=["acme", "web"])),
        "execution": (personas.executor, url(failed)),
        "waiting": (personas.approver, reverse("waiting")),
    }
    for name, (user, path) in pages.items():
        page = session.open(user, path, **PHONE)
        assert_fits(page, f"the {name} page")
        screenshot(page, f"phone-{name}", full_page=True)

    page = session.open(personas.executor, url(failed), **PHONE)
    for button, title in [("#retry-button", "Retry Failed Pipeline"), ("#rerun-button", "Rerun")]:
        page.click(button)
        expect(page.locator("#modal")).to_have_attribute("open", "")
        expect(page.locator("#modal-title")).to_contain_text(title)
        assert_fits(page, f"the {title} dialog")
        screenshot(page, f"phone-{button[1:]}")
        page.keyboard.press("Escape")
        expect(page.locator("#modal")).not_to_have_attribute("open", "")

    page = session.open(personas.executor, reverse("pipeline", args=args), **PHONE)
    page.click("#run-button")
    expect(page.locator("#modal")).to_have_attribute("open", "")
    assert_fits(page, "the Run dialog")

    page = session.open(personas.approver, url(waiting), **PHONE)
    page.click("#approve-approve-button")
    expect(page.locator("#modal")).to_have_attribute("open", "")
    assert_fits(page, "the Approve dialog")
