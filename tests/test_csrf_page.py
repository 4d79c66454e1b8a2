"""A stale form (failed CSRF check) is answered in plain words, never with Django's developer
page, and changes nothing."""

from __future__ import annotations

from django.test import Client
from django.urls import reverse

from executions.models import Execution
from tests.helpers.pages import failed_serial


def test_a_stale_form_is_refused_in_plain_words(personas):
    failed = failed_serial(personas)
    client = Client(enforce_csrf_checks=True)
    client.force_login(personas.executor)
    response = client.post(reverse("execution_retry", args=[failed.pk]), {"from_stage": "build"})
    html = response.content.decode()
    assert response.status_code == 403
    assert "reload the page and try again" in html
    assert "CSRF verification failed" not in html and "CSRF_FAILURE_VIEW" not in html
    assert Execution.objects.count() == 1
