"""Site-wide views: log in with a brake on password guessing, and the 400 page.

After ``STAGELINE_LOGIN_MAX_FAILURES`` failed attempts for one username from one address (or
ten times as many from one address for any usernames) within ``STAGELINE_LOGIN_LOCKOUT_SECONDS``,
further attempts are refused with HTTP 429 until the window passes. Counts live in Django's
cache (the database cache by default), so every web process sees the same numbers.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.views import LoginView
from django.core.cache import cache


def _client_ip(request) -> str:
    return request.META.get("REMOTE_ADDR", "unknown")


class RateLimitedLoginView(LoginView):
    def _keys(self) -> tuple[str, str]:
        ip = _client_ip(self.request)
        username = (self.request.POST.get("username") or "").strip().lower()[:150]
        return f"login-fail:{ip}:{username}", f"login-fail-ip:{ip}"

    def _blocked(self) -> bool:
        user_key, ip_key = self._keys()
        limit = settings.STAGELINE_LOGIN_MAX_FAILURES
        return cache.get(user_key, 0) >= limit or cache.get(ip_key, 0) >= limit * 10

    def post(self, request, *args, **kwargs):
        if self._blocked():
            form = self.get_form()
            minutes = max(1, settings.STAGELINE_LOGIN_LOCKOUT_SECONDS // 60)
            form.errors.clear()
            form.add_error(None, f"Too many failed log-ins. Try again in {minutes} minute(s).")
            return self.render_to_response(self.get_context_data(form=form), status=429)
        return super().post(request, *args, **kwargs)

    def form_invalid(self, form):
        window = settings.STAGELINE_LOGIN_LOCKOUT_SECONDS
        for key in self._keys():
            cache.add(key, 0, window)
            try:
                cache.incr(key)
            except ValueError:  # expired between add and incr
                cache.set(key, 1, window)
        return super().form_invalid(form)

    def form_valid(self, form):
        cache.delete(self._keys()[0])
        return super().form_valid(form)


def bad_request(request, exception=None, template_name="400.html"):
    """The 400 page, naming the problem when Django knows it (a body past the upload limit)."""
    from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent
    from django.shortcuts import render

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
