"""Site-wide views: the 400 page. (Log-in is Django's ``LoginView``, throttled by django-axes:
see ``config/login.py``.)"""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent
from django.shortcuts import render


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
