"""The API's docs page (Swagger UI from static files) renders under the site's CSP, and the My
tokens page shows a new token once."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.browser


def test_the_api_docs_page_lists_the_endpoints_without_console_errors(session, personas):
    page = session.open(personas.viewer, "/api/v1/docs")
    page.locator(".opblock").first.wait_for()
    assert page.locator(".opblock").count() >= 12
    assert "/api/v1/executions/{pk}/retry" in page.content()


def test_a_token_made_on_my_tokens_is_shown_once(session, personas):
    page = session.open(personas.viewer, "/tokens/")
    page.fill("#token-name", "laptop script")
    page.click("button:has-text('Make token')")
    token = page.locator("[data-token]").inner_text()
    assert token.startswith("stl_")
    page.goto("/tokens/")
    assert token not in page.content() and "laptop script" in page.content()
