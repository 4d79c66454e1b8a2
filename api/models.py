"""Personal access tokens: how a script or a bot signs in to the JSON API as its user.

Only the SHA-256 digest of a token is stored; the token itself (``stl_`` and 43 random
characters) is shown once, when it is created, and cannot be read back. A token acts as its
user with that user's roles at the time of each request, never more; a ``read`` token may
only read. ``window_start`` / ``window_count`` are the per-token fixed-window request counter
(``api.tokens.count_request``).
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class AccessToken(models.Model):
    """A personal access token: a name, its user, its scope, when it expires and its use."""

    class Scope(models.TextChoices):
        READ = "read", "Read"
        READ_WRITE = "read-write", "Read and write"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="access_tokens"
    )
    name = models.CharField(max_length=100)
    prefix = models.CharField(
        max_length=12, editable=False, help_text="The token's first characters, to recognise it."
    )
    digest = models.CharField(
        max_length=64, unique=True, editable=False, help_text="SHA-256 of the token (hex)."
    )
    scope = models.CharField(max_length=10, choices=Scope.choices, default=Scope.READ)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)
    window_start = models.DateTimeField(null=True, blank=True, editable=False)
    window_count = models.PositiveIntegerField(default=0, editable=False)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_expired(self) -> bool:
        return self.expires_at <= timezone.now()

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None and not self.is_expired

    @property
    def state(self) -> str:
        """active, expired or revoked (for pages)."""
        if self.revoked_at is not None:
            return "revoked"
        return "expired" if self.is_expired else "active"

    @property
    def can_write(self) -> bool:
        return self.scope == self.Scope.READ_WRITE
