"""Log-in throttling, as django-axes is told to do it (settings ``AXES_*``, docs/security.md).

Failures are counted per (username, client address): a user who types the right password is
never refused because of someone else's failures, whatever address they share. The client
address is ``REMOTE_ADDR``, or, behind ``STAGELINE_TRUSTED_PROXIES`` reverse proxies, the
address the outermost of them saw (so a client cannot pick its own address by sending an
``X-Forwarded-For`` header).
"""

from __future__ import annotations

import ipaddress

from django.conf import settings
from django.contrib.auth.forms import AuthenticationForm
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render


def client_ip(request: HttpRequest) -> str | None:
    """The client's address: with N trusted proxies, the N-th ``X-Forwarded-For`` entry from the
    right (each proxy appends the address it received the request from; entries further left
    are whatever the client sent); with none, or without a valid entry, ``REMOTE_ADDR``."""
    remote = request.META.get("REMOTE_ADDR") or None
    proxies = settings.STAGELINE_TRUSTED_PROXIES
    if proxies <= 0:
        return remote
    header = request.META.get("HTTP_X_FORWARDED_FOR", "")
    forwarded = [part.strip() for part in header.split(",") if part.strip()]
    if not forwarded:
        return remote
    candidate = forwarded[-min(proxies, len(forwarded))]
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:
        return remote


def locked_out(
    request: HttpRequest, response: HttpResponse | None = None, credentials: dict | None = None
) -> HttpResponse:
    """The log-in page again, with HTTP 429 and when to try again (never who else is locked)."""
    minutes = max(1, int(settings.AXES_COOLOFF_TIME.total_seconds() // 60))
    message = (
        "Too many failed log-ins for this username from your address. "
        f"Try again in {minutes} minute(s), or ask an administrator to clear the lockout."
    )
    context = {"form": AuthenticationForm(request), "lockout": message}
    return render(request, "registration/login.html", context, status=429)
