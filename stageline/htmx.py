"""HTMX rendering helpers shared by the views (plain Django: imports neither app).

- ``is_htmx``: the request was sent by htmx (django-htmx's middleware sets ``request.htmx``);
- ``page_or_partial``: one view serves a page and, for htmx, one of its partials;
- ``render_dialog``: the one way to answer with a dialog (templates extending
  ``components/dialog_page.html``): its ``dialog`` partial for htmx, loaded into ``#modal-body``;
  a page of its own otherwise; with a status code;
- ``done``: after an action, "go there": a client redirect for htmx, a 302 otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django_htmx.http import HttpResponseClientRedirect, reswap, retarget

MODAL_BODY = "#modal-body"  # base.html's <dialog id="modal"><div id="modal-body">


def is_htmx(request: HttpRequest) -> bool:
    return bool(getattr(request, "htmx", False))


def htmx_target(request: HttpRequest) -> str | None:
    """The id of the element htmx will swap (``HX-Target``), or ``None``."""
    details = getattr(request, "htmx", None)
    target = getattr(details, "target", None) if details else None
    return target if isinstance(target, str) else None


def page_or_partial(request: HttpRequest, template: str, partial: str) -> str:
    """``template#partial`` for htmx, ``template`` (the whole page) otherwise."""
    return f"{template}#{partial}" if is_htmx(request) else template


def render_dialog(
    request: HttpRequest, template: str, context: Mapping[str, Any], status: int = 200
) -> HttpResponse:
    """A dialog answered with ``status``: for htmx its ``dialog`` partial; a refusal (4xx) is
    retargeted to ``#modal-body`` so that the message replaces the dialog in place (base.html's
    htmx config swaps a 400 or 409; app.js shows a 403's or 404's ``[data-reason]``)."""
    if not is_htmx(request):
        return render(request, template, dict(context), status=status)
    response = render(request, f"{template}#dialog", dict(context), status=status)
    if status >= 400:
        retarget(response, MODAL_BODY)
        reswap(response, "innerHTML")
    return response


def done(request: HttpRequest, url: str) -> HttpResponse:
    """After an action: the target page (a client redirect for htmx, a 302 otherwise)."""
    if is_htmx(request):
        return HttpResponseClientRedirect(url)
    return redirect(url)
