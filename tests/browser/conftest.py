"""Browser tests: Chromium driven by Playwright (sync API) against ``live_server`` and a real
Celery worker (the ``worker`` fixture), so pipelines really run while the page watches.

Chromium must be installed at /usr/bin/chromium: without it these tests fail (they never skip).
Every page opened records the browser's console errors (a CSP violation, a script error); a
test fails if any is left unexplained. Screenshots go to tests/artifacts/ (git-ignored), and the
README's pictures to docs/screenshots/.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client


@pytest.fixture(scope="session", autouse=True)
def _allow_orm_beside_playwright():
    """Playwright's sync API runs an event loop in this thread; Django refuses ORM calls from a
    thread with a running loop unless told that it is safe (it is: the loop is Playwright's).
    Set only while browser tests run, so the rest of the suite keeps Django's async checks."""
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    yield
    if previous is None:
        os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    else:
        os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts"
SCREENSHOTS = ROOT / "docs" / "screenshots"
# Chromium reports a failed XHR (a 4xx answer htmx then shows in place) as a console error.
EXPECTED_CONSOLE = ("Failed to load resource: the server responded with a status of 4",)


@pytest.fixture(scope="session")
def browser():
    if not CHROMIUM.exists():
        pytest.fail(
            f"Chromium is not installed at {CHROMIUM}: the browser tests need it (apt-get install chromium)."
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class Session:
    """Opens pages as a user (logged in through a session cookie) and collects console errors."""

    def __init__(self, browser, live_server):
        self.browser = browser
        self.base_url = live_server.url
        self.contexts = []
        self.console_errors: list[str] = []

    def open(
        self, user, path: str, *, width: int = 1360, height: int = 900, timezone_id: str = "UTC"
    ):
        client = Client()
        client.force_login(user)
        context = self.browser.new_context(
            base_url=self.base_url,
            viewport={"width": width, "height": height},
            timezone_id=timezone_id,
        )
        context.add_cookies(
            [
                {
                    "name": settings.SESSION_COOKIE_NAME,
                    "value": client.cookies[settings.SESSION_COOKIE_NAME].value,
                    "url": self.base_url,
                }
            ]
        )
        context.set_default_timeout(20_000)
        self.contexts.append(context)
        page = context.new_page()
        page.on("console", self._on_console)
        page.on("pageerror", lambda error: self.console_errors.append(f"page error: {error}"))
        page.goto(path)
        return page

    def _on_console(self, message) -> None:
        if message.type == "error" and not message.text.startswith(EXPECTED_CONSOLE):
            self.console_errors.append(message.text)

    def close(self) -> None:
        for context in self.contexts:
            context.close()


@pytest.fixture
def session(browser, live_server, worker):
    opened = Session(browser, live_server)
    yield opened
    opened.close()
    assert opened.console_errors == [], "the browser reported errors"


def screenshot(page, name: str, *, docs: bool = False, full_page: bool = False) -> Path:
    """Save a screenshot; one for the docs (``docs=True``) is written only when its pixels
    changed (Chromium encodes the same pixels to the same bytes), so a browser run leaves
    docs/screenshots untouched unless the page looks different."""
    folder = SCREENSHOTS if docs else ARTIFACTS
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    image = page.screenshot(full_page=full_page)
    if not (path.exists() and path.read_bytes() == image):
        path.write_bytes(image)
    return path
