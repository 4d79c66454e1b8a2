"""Who calls the API: a personal access token (``Authorization: Bearer stl_…``) or the
browser's session.

- Bearer: the token is checked (``api.tokens.authenticate``: 401 with the reason when it signs
  nobody in), counted against the rate limit (429), and a ``read`` token is refused every write
  (403) before anything is loaded. The request then acts as the token's user
  (``request.user`` is set to it), with that user's roles and nothing more.
- Session: the signed-in user of the pages; a write must carry the CSRF token
  (``X-CSRFToken`` header), or it is refused with 403.
An ``Authorization`` header that is present but not a bearer token is refused (401): it is
never silently ignored in favour of a session.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest
from ninja.security import HttpBearer
from ninja.security.apikey import APIKeyCookie
from ninja.utils import check_csrf

from api.models import AccessToken
from api.tokens import TokenRefused, authenticate, count_request
from stageline.errors import Forbidden

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


class TokenAuth(HttpBearer):
    """``Authorization: Bearer <token>``."""

    def __call__(self, request: HttpRequest) -> Any:
        header = request.headers.get(self.header)
        if not header:
            return None
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise TokenRefused("The Authorization header must be 'Bearer <access token>'.")
        return self.authenticate(request, value)

    def authenticate(self, request: HttpRequest, token: str) -> Any:
        found: AccessToken = authenticate(token)
        count_request(found)
        if request.method not in SAFE_METHODS and not found.can_write:
            raise Forbidden(
                f"The access token '{found.name}' may only read: create a read-write token "
                "to run, retry, rerun, abort, or answer approvals and interventions."
            )
        request.user = found.user
        request.access_token = found  # type: ignore[attr-defined]
        return found.user


class SessionAuth(APIKeyCookie):
    """The pages' session; a write needs the CSRF token."""

    def __init__(self) -> None:
        self.param_name = settings.SESSION_COOKIE_NAME
        super().__init__(csrf=True)

    def __call__(self, request: HttpRequest) -> Any:
        user = getattr(request, "user", None)
        if user is None or not user.is_authenticated:
            return None
        if request.method not in SAFE_METHODS and check_csrf(request) is not None:
            raise Forbidden(
                "CSRF check failed: a write with the session cookie must send the page's CSRF "
                "token in the X-CSRFToken header (or use an access token instead)."
            )
        return user

    def authenticate(self, request: HttpRequest, key: str | None) -> Any:
        return None  # not used: __call__ reads the session's user
