"""Personal access tokens: create, revoke, authenticate, count requests.

- A token is ``stl_`` followed by 43 random URL-safe characters (256 bits from ``secrets``);
  the database keeps its SHA-256 digest and its first characters (to recognise it in a list),
  never the token. A fast hash is right here: the secret is random, not a password, so there is
  nothing to guess, and a request must be checked in microseconds.
- ``authenticate`` answers the token's user or raises ``TokenRefused`` (401) saying why
  (unknown, expired, revoked, user inactive). The token then acts as that user: every check is
  the user's own (``pipelines.permissions``), read fresh at each request.
- ``count_request`` is the rate limit: a fixed window of one minute per token, counted on the
  token's row by one conditional ``UPDATE`` (the same for every web process, with no cache to
  set up); over ``STAGELINE_API_RATE_PER_MINUTE`` it raises ``RateLimited`` (429, Retry-After).
  The same statement records the last-used time, at most once a minute.
"""

from __future__ import annotations

import hashlib
import math
import secrets
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, User
from django.db.models import Case, F, Q, Value, When
from django.utils import timezone

from api.models import AccessToken
from stageline.errors import Invalid, NotFound

PREFIX = "stl_"
NAME_MAX = 100
DAYS_DEFAULT = 30
DAYS_MAX = 366
LAST_USED_RESOLUTION = timedelta(minutes=1)
WINDOW = timedelta(minutes=1)


class TokenRefused(Exception):
    """The request carries a token that does not sign anybody in (401); ``message`` says why."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class RateLimited(Exception):
    """Too many requests with one token in this window (429); retry after ``retry_after`` s."""

    def __init__(self, limit: int, retry_after: int) -> None:
        super().__init__(f"Rate limit: {limit} requests a minute per token.")
        self.message = (
            f"Too many requests: this token may make {limit} requests a minute. "
            f"Try again in {retry_after} s."
        )
        self.retry_after = retry_after


def digest_of(raw: str) -> str:
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


def create_token(
    *,
    user: User,
    name: str,
    scope: str = AccessToken.Scope.READ,
    days: int = DAYS_DEFAULT,
) -> tuple[AccessToken, str]:
    """A new token of ``user`` and its plaintext (shown once, never stored)."""
    name = (name or "").strip()
    errors: dict[str, str] = {}
    if not name:
        errors["name"] = "Give the token a name (what will use it)."
    elif len(name) > NAME_MAX:
        errors["name"] = f"A token's name has at most {NAME_MAX} characters."
    if scope not in AccessToken.Scope.values:
        errors["scope"] = f"Unknown scope '{str(scope)[:20]}': use read or read-write."
    if not isinstance(days, int) or isinstance(days, bool) or not 1 <= days <= DAYS_MAX:
        errors["days"] = f"A token expires after 1 to {DAYS_MAX} days, not {str(days)[:20]}."
    if errors:
        raise Invalid(" ".join(errors.values()), field_errors=errors)
    token = AccessToken(user=user, name=name, scope=scope)
    raw = seal(token, days=days)
    token.save()
    return token, raw


def seal(token: AccessToken, *, days: int) -> str:
    """Give the unsaved ``token`` a new secret and its expiry; the secret (shown once)."""
    raw = PREFIX + secrets.token_urlsafe(32)
    token.prefix = raw[: len(PREFIX) + 4]
    token.digest = digest_of(raw)
    token.expires_at = timezone.now() + timedelta(days=days)
    return raw


def revoke_token(*, user: AbstractBaseUser | AnonymousUser, pk: int) -> AccessToken:
    """Revoke token ``pk`` of ``user`` (a superuser may revoke anybody's). Revoking a revoked
    token changes nothing. Another user's token is ``NotFound``."""
    tokens = AccessToken.objects.all()
    if not getattr(user, "is_superuser", False):
        tokens = tokens.filter(user_id=user.pk) if user.is_authenticated else tokens.none()
    token = tokens.filter(pk=pk).first()
    if token is None:
        raise NotFound("No such token among yours.")
    if token.revoked_at is None:
        AccessToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(
            revoked_at=timezone.now()
        )
        token.refresh_from_db()
    return token


def authenticate(raw: str) -> AccessToken:
    """The active token ``raw`` (with its user), or ``TokenRefused`` saying why not."""
    raw = raw.strip()
    if not raw.startswith(PREFIX) or len(raw) > 200:
        raise TokenRefused(f"This is not a Stageline access token (they start with '{PREFIX}').")
    token = AccessToken.objects.select_related("user").filter(digest=digest_of(raw)).first()
    if token is None:
        raise TokenRefused("Unknown access token.")
    if token.revoked_at is not None:
        raise TokenRefused(f"The access token '{token.name}' was revoked.")
    if token.is_expired:
        raise TokenRefused(
            f"The access token '{token.name}' expired on {token.expires_at:%Y-%m-%d}."
        )
    if not token.user.is_active:
        raise TokenRefused(f"The user of the access token '{token.name}' is deactivated.")
    return token


def count_request(token: AccessToken, *, now: datetime | None = None) -> None:
    """Count one request of ``token`` in the current minute, and record its use; raise
    ``RateLimited`` when the minute's requests are all taken (nothing is counted then)."""
    now = now or timezone.now()
    limit = settings.STAGELINE_API_RATE_PER_MINUTE
    used = Case(
        When(last_used_at__gte=now - LAST_USED_RESOLUTION, then=F("last_used_at")),
        default=Value(now),
    )
    rows = AccessToken.objects.filter(pk=token.pk)
    if limit <= 0:  # no limit: only the last-used time, written at most once a minute
        rows.filter(
            Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - LAST_USED_RESOLUTION)
        ).update(last_used_at=now)
        return
    window = now.replace(second=0, microsecond=0)
    counted = rows.filter(
        Q(window_start__isnull=True) | ~Q(window_start=window) | Q(window_count__lt=limit)
    ).update(
        # Every SET reads the row as it was: a new window starts over at 1.
        window_count=Case(When(window_start=window, then=F("window_count") + 1), default=Value(1)),
        window_start=window,
        last_used_at=used,
    )
    if not counted:
        wait = (window + WINDOW - now).total_seconds()
        raise RateLimited(limit, max(1, math.ceil(wait)))
