"""Site-wide views: the 400 page, the CSRF failure page, and the 500 page that is a 503 while the database is down.
(Log-in is Django's ``LoginView``, throttled by django-axes: see ``config/login.py``.)"""

from __future__ import annotations

import sys

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.template import loader
from django.views import defaults


def bad_request(request, exception=None, template_name="400.html"):
    """The 400 page, naming the problem when Django knows it (a body past the upload limit)."""
    if isinstance(exception, RequestDataTooBig):
        reason = (
            "The request is too large: at most "
            f"{settings.DATA_UPLOAD_MAX_MEMORY_SIZE // (1024 * 1024)} MB can be sent at once. Nothing was saved."
        )
    elif isinstance(exception, TooManyFieldsSent):
        reason = "The form sent too many fields. Nothing was saved."
    else:
        reason = "The request could not be understood. Nothing was changed."
    return render(request, template_name, {"reason": reason}, status=400)


DATABASE_RETRY_SECONDS = 10


def server_error(request: HttpRequest, template_name: str = "500.html") -> HttpResponse:
    """The 500 page, except when the database cannot be reached or talked to (Django's
    ``OperationalError`` / ``InterfaceError``: refused, restarting, dropped, locked): then a 503
    with ``Retry-After`` and a plain page that reloads itself. Neither page reads the database
    (no request context: no user, no session). Nothing needs resetting when the database is
    back: every request opens or health-checks its connection, so the next one simply works."""
    error = sys.exc_info()[1]  # Django calls this view while handling the exception
    if not isinstance(error, OperationalError | InterfaceError):
        return defaults.server_error(request, template_name)
    page = loader.render_to_string("503.html", {"retry_after": DATABASE_RETRY_SECONDS})
    response = HttpResponse(page, status=503)
    response["Retry-After"] = str(DATABASE_RETRY_SECONDS)
    return response


CSRF_REASON = (
    "This form is out of date or your session has expired, so nothing was done: "
    "reload the page and try again."
)


def csrf_failure(request, reason: str = ""):
    """A refused CSRF check (``CSRF_FAILURE_VIEW``): plain words, never Django's developer page.
    The header tells the page's script that the text is already meant for a person."""
    response = render(request, "403.html", {"exception": CSRF_REASON}, status=403)
    response["X-Stageline-Csrf"] = "1"
    return response
