"""The "My tokens" page: a signed-in user's personal access tokens for the API, made and
revoked here. A new token is shown once, in the answer to the request that made it (never
stored, never put in a message or the session); the page lists the others by name and first
characters only."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.cache import add_never_cache_headers
from django.views.decorators.http import require_http_methods, require_POST

from api.models import AccessToken
from api.tokens import DAYS_DEFAULT, DAYS_MAX, create_token, revoke_token
from stageline.errors import Invalid
from stageline.numbers import NumberError, parse_int


def _page(request: HttpRequest, status: int = 200, **context: object) -> HttpResponse:
    user = request.user
    assert isinstance(user, User)  # login_required let only a signed-in user through
    context = {
        "tokens": AccessToken.objects.filter(user=user),
        "scopes": AccessToken.Scope.choices,
        "days_default": DAYS_DEFAULT,
        "days_max": DAYS_MAX,
        "form": {"name": "", "scope": AccessToken.Scope.READ, "days": str(DAYS_DEFAULT)},
        "errors": {},
        **context,
    }
    response = render(request, "api/tokens.html", context, status=status)
    add_never_cache_headers(response)  # it may hold a token shown once
    return response


@require_http_methods(["GET", "POST"])
@login_required
def tokens(request: HttpRequest) -> HttpResponse:
    """List the user's tokens (GET) or make a new one (POST: name, scope, days)."""
    if request.method == "GET":
        return _page(request)
    user = request.user
    assert isinstance(user, User)  # login_required let only a signed-in user through
    posted = {
        "name": request.POST.get("name", ""),
        "scope": request.POST.get("scope", ""),
        "days": request.POST.get("days", "").strip() or str(DAYS_DEFAULT),
    }
    try:
        try:
            days = parse_int(posted["days"], "days", minimum=1, maximum=DAYS_MAX)
        except NumberError as exc:
            raise Invalid(str(exc), field_errors={"days": str(exc)}) from None
        token, raw = create_token(user=user, name=posted["name"], scope=posted["scope"], days=days)
    except Invalid as exc:
        return _page(request, 400, form=posted, errors=exc.field_errors, error=exc.message)
    return _page(request, 201, created=token, plaintext=raw)


@require_POST
@login_required
def token_revoke(request: HttpRequest, pk: int) -> HttpResponse:
    """Revoke one of the user's tokens (another user's is a 404)."""
    token = revoke_token(user=request.user, pk=pk)
    messages.success(request, f"Token '{token.name}' revoked: it no longer signs anybody in.")
    return redirect("tokens")
