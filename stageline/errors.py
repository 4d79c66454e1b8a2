"""Typed refusals, and the one place that turns them into answers.

A service that refuses a request raises one of these with the message a person should read:

- ``NotFound`` (404): the object does not exist, or the user may not see it (never say which);
- ``Forbidden`` (403): the user may see the object but not do this; the message names the
  missing permission;
- ``Invalid`` (400): the request itself is wrong (bad input, optionally per field);
- ``Conflict`` (409): the request was fine but the state changed under it (already ended,
  answered by someone else, a newer version saved, the last Project Admin).

Views, HTMX endpoints, admin actions and commands do not decide these: a view may catch one to
show the message in place (a form re-rendered with it), and whatever it does not catch reaches
``RefusalMiddleware``, which answers with the status above. Management commands wrap their
``handle`` in ``refusals_exit_2``: the message is printed and the exit status is 2.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from functools import wraps
from typing import ClassVar

from django.core.management.base import CommandError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.html import format_html

REFUSAL_EXIT_CODE = 2


class Refusal(Exception):
    """A refused request; ``message`` is what the user reads, ``status`` the HTTP answer.

    ``field_errors`` names the form fields a message is about (``{"version": "…"}``);
    ``extra`` carries what a translator may use to say more (the newer version's number)."""

    status: ClassVar[int] = 400

    def __init__(
        self,
        message: str,
        *,
        field_errors: Mapping[str, str] | None = None,
        **extra: object,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field_errors: dict[str, str] = dict(field_errors or {})
        self.extra: dict[str, object] = extra


class NotFound(Refusal):
    """What the user may not see, or what does not exist (the message never says which)."""

    status = 404


class Forbidden(Refusal):
    """The user may see the object, not do this to it; the message names the permission."""

    status = 403


class Invalid(Refusal):
    """Bad input: nothing was changed; ``field_errors`` points at the fields."""

    status = 400


class Conflict(Refusal):
    """The request came too late or collides with the current state; nothing was changed."""

    status = 409


# --- web: one translator --------------------------------------------------------------------

# The pages for a refusal outside a dialog. 404.html never repeats the message: it says the
# same for a missing object and a hidden one.
TEMPLATES = {400: "400.html", 403: "403.html", 404: "404.html", 409: "409.html"}


def refusal_response(request: HttpRequest, refusal: Refusal) -> HttpResponse:
    """The answer to ``refusal``: for htmx a fragment holding the message (app.js shows a 403's
    or 404's ``[data-reason]`` in the flash area; a 400 or 409 is swapped in place), otherwise
    the error page of its status."""
    if getattr(request, "htmx", False):
        fragment = format_html(
            '<p class="msg msg-error" data-reason hx-disable><span>{}</span></p>', refusal.message
        )
        return HttpResponse(fragment, status=refusal.status)
    context = {"reason": refusal.message, "exception": refusal.message}
    return render(request, TEMPLATES[refusal.status], context, status=refusal.status)


class RefusalMiddleware:
    """Turns a ``Refusal`` a view did not catch into its 404 / 403 / 400 / 409 answer."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if isinstance(exception, Refusal):
            return refusal_response(request, exception)
        return None


# --- management commands ----------------------------------------------------------------------


def command_error(refusal: Refusal) -> CommandError:
    """The ``CommandError`` for ``refusal``: its message, exit status 2."""
    return CommandError(refusal.message, returncode=REFUSAL_EXIT_CODE)


@contextmanager
def refusals_as_command_errors() -> Iterator[None]:
    """Inside a command: a ``Refusal`` becomes a ``CommandError`` with exit status 2."""
    try:
        yield
    except Refusal as refusal:
        raise command_error(refusal) from None


def refusals_exit_2[**P, R](handle: Callable[P, R]) -> Callable[P, R]:
    """Decorates a command's ``handle``: a refusal prints its message and exits with status 2."""

    @wraps(handle)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with refusals_as_command_errors():
            return handle(*args, **kwargs)

    return wrapper
