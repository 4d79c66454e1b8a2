"""Every page and fragment of the dashboard is served under a strict Content Security Policy
and carries nothing that policy would have to allow: no inline script, no inline style, no
inline event handler, no htmx ``hx-on`` (which needs eval)."""

from __future__ import annotations

import json
import re

import pytest
from django.urls import reverse

from executions.models import Execution, Status
from tests.helpers import factories

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}
INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.I)
INLINE_STYLE = re.compile(r"<style\b|\sstyle\s*=", re.I)
INLINE_HANDLER = re.compile(r"\s(on[a-z]+|hx-on[:\-][\w:\-]*|hx-on)\s*=", re.I)
JAVASCRIPT_URL = re.compile(r"""(href|src|action)\s*=\s*["']?\s*javascript:""", re.I)


@pytest.fixture
def rendered(client, personas):
    """(label, response) for every page and fragment of part A, as an admin sees them, with
    data in them (executions with retry links, a definition with a secret, form errors)."""
    pipeline = factories.make_pipeline(
        personas.project,
        factories.serial_pipeline(
            "web_deploy",
            [factories.shell_stage("build", "echo hi")],
            variables="""
            - {name: version, type: String, value: <+input>, allowed_values: ["1", "2"], required: true}
            - {name: token, type: Secret, value: <+input>}
            """,
        ),
    )
    first = Execution.objects.create(
        pipeline=pipeline, version=pipeline.current_version, sequence=1, status=Status.FAILED
    )
    Execution.objects.create(
        pipeline=pipeline,
        version=pipeline.current_version,
        sequence=2,
        retry_of=first,
        chain_root=first,
        attempt=2,
    )
    args = ["acme", "web", "web_deploy"]
    client.force_login(personas.admin)
    pages = [
        ("home", client.get(reverse("home"))),
        ("project", client.get(reverse("project", args=["acme", "web"]))),
        (
            "project fragment",
            client.get(reverse("project", args=["acme", "web"]) + "?status=FAILED", **HTMX),
        ),
        ("project bad filter", client.get(reverse("project", args=["acme", "web"]) + "?before=x")),
        ("pipeline", client.get(reverse("pipeline", args=args))),
        (
            "pipeline fragment",
            client.get(reverse("pipeline", args=args) + "?status=FAILED", **HTMX),
        ),
        ("definition", client.get(reverse("pipeline_definition", args=args))),
        ("history", client.get(reverse("pipeline_history", args=args))),
        ("editor", client.get(reverse("pipeline_edit", args=args))),
        (
            "editor errors",
            client.post(
                reverse("pipeline_edit", args=args), {"yaml": "pipeline: [", "base_version": "1"}
            ),
        ),
        (
            "editor errors fragment",
            client.post(
                reverse("pipeline_edit", args=args), {"yaml": "x: 1", "base_version": "1"}, **HTMX
            ),
        ),
        ("run page", client.get(reverse("pipeline_run", args=args))),
        ("run dialog", client.get(reverse("pipeline_run", args=args), **HTMX)),
        (
            "run dialog errors",
            client.post(reverse("pipeline_run", args=args), {"input-version": "9"}, **HTMX),
        ),
    ]
    client.force_login(personas.viewer)
    pages.append(("run refused", client.get(reverse("pipeline_run", args=args), **HTMX)))
    pages.append(("edit refused", client.get(reverse("pipeline_edit", args=args))))
    client.logout()
    pages.append(("login", client.get(reverse("login"))))
    return pages


def test_every_page_is_served_with_a_strict_csp_and_no_framing(rendered):
    for label, response in rendered:
        policy = response.headers.get("Content-Security-Policy", "")
        assert "script-src 'self'" in policy, label
        assert "style-src 'self'" in policy, label
        assert "unsafe-inline" not in policy and "unsafe-eval" not in policy, label
        assert "frame-ancestors 'none'" in policy, label
        assert response.headers.get("X-Frame-Options") == "DENY", label
        assert response.headers.get("X-Content-Type-Options") == "nosniff", label


def test_no_page_or_fragment_carries_inline_script_style_or_handlers(rendered):
    for label, response in rendered:
        html = response.content.decode()
        assert response.status_code in (200, 400, 403), label
        assert not INLINE_SCRIPT.search(html), f"{label}: {INLINE_SCRIPT.search(html)}"
        assert not INLINE_STYLE.search(html), f"{label}: {INLINE_STYLE.search(html)}"
        assert not INLINE_HANDLER.search(html), f"{label}: {INLINE_HANDLER.search(html)}"
        assert not JAVASCRIPT_URL.search(html), label


def test_pages_load_only_same_origin_scripts_and_styles_and_forbid_htmx_eval(rendered):
    for label, response in rendered:
        html = response.content.decode()
        if "<html" not in html:
            continue
        for src in re.findall(r'<script[^>]*\bsrc="([^"]+)"', html) + re.findall(
            r'<link[^>]*href="([^"]+)"', html
        ):
            assert src.startswith("/static/") or src.startswith("data:"), f"{label}: {src}"
        assert '<script src="/static/stageline/app.js" defer></script>' in html, label
        meta = re.search(r"<meta name=\"htmx-config\" content='([^']+)'>", html)
        config = json.loads(meta.group(1))
        assert config["allowEval"] is False and config["includeIndicatorStyles"] is False, label
        assert (
            '<dialog id="modal" aria-labelledby="modal-title"><div id="modal-body"></div></dialog>'
            in html
        ), label


def test_static_assets_are_served_by_the_app(client):
    for path in (
        "/static/stageline/app.css",
        "/static/stageline/app.js",
        "/static/django_htmx/htmx-2.min.js",
    ):
        response = client.get(path)
        assert response.status_code == 200, path
        body = b"".join(response.streaming_content) if response.streaming else response.content
        assert len(body) > 100, path
