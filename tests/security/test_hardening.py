"""Production hardening: deploy checks, secure cookies and HSTS over HTTPS, refusals that never
answer HTML built from what the client sent."""

from __future__ import annotations

import secrets
from unittest import mock

from django.db import OperationalError, connection
from django.test import Client
from django.urls import reverse

from executions.models import StepRun
from tests.helpers.pages import as_user, failed_serial, htmx
from tests.security.commands import manage


def test_deploy_checks_are_clean_with_production_settings():
    result = manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        SECRET_KEY=secrets.token_urlsafe(64),
        STAGELINE_HTTPS="true",
        ALLOWED_HOSTS="stageline.example.com",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_deploy_checks_flag_an_insecure_setup():
    result = manage("check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr + result.stdout


def test_https_settings_turn_on_secure_cookies_and_hsts():
    code = (
        "from django.conf import settings as s;"
        "print(s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, s.SECURE_HSTS_SECONDS, s.SECURE_SSL_REDIRECT)"
    )
    on = manage("shell", "-c", code, STAGELINE_HTTPS="true")
    off = manage("shell", "-c", code, STAGELINE_HTTPS="false")
    assert on.stdout.split()[-4:] == ["True", "True", "31536000", "True"], on.stderr
    assert off.stdout.split()[-4:] == ["False", "False", "0", "False"], off.stderr


def test_web_and_worker_processes_freeze_their_start_up_heap():
    """Full garbage collections skip what lives as long as the process (docs/performance.md:
    they added 20-50 ms to ~7 % of retry submits)."""
    import gc
    import importlib

    import config.wsgi

    gc.unfreeze()
    importlib.reload(config.wsgi)
    assert gc.get_freeze_count() > 10_000
    gc.unfreeze()
    from celery import signals

    signals.worker_process_init.send(sender=None)
    assert gc.get_freeze_count() > 10_000
    gc.unfreeze()


PROBE = "<script>alert(1)</script>"


def test_a_bad_log_cursor_is_refused_as_plain_text_for_every_persona(client, personas):
    """Finding 6: the step-log 400 echoed ``after`` unescaped in an HTML answer."""
    execution = failed_serial(personas)
    step = StepRun.objects.get(execution=execution, identifier="rollout")
    url = reverse("execution_step_log", args=[execution.pk, step.pk])
    for who in (personas.admin, personas.executor, personas.viewer):
        response = as_user(client, who).get(url, {"after": PROBE}, headers=htmx("log-lines"))
        assert response.status_code == 400, who
        assert response["Content-Type"] == "text/plain; charset=utf-8", who
        assert "whole number" in response.content.decode()
    stranger = as_user(client, personas.stranger).get(
        url, {"after": PROBE}, headers=htmx("log-lines")
    )
    assert stranger.status_code == 404 and PROBE.encode() not in stranger.content


def test_a_database_outage_answers_503_with_a_plain_page_and_recovers_by_itself(personas):
    """Finding 6: pages answered 500 while the database was down."""
    clients = {}
    for name, who in personas.all().items():
        clients[name] = Client(raise_request_exception=False)
        clients[name].force_login(who)
    project = reverse("project", args=[personas.project.organization.slug, personas.project.slug])
    refused = OperationalError('connection to server at "127.0.0.1", port 5432 failed')
    with mock.patch.object(connection, "ensure_connection", side_effect=refused):
        for name, client in clients.items():
            for url in ("/", project, "/login/"):
                down = client.get(url)
                assert down.status_code == 503, (name, url)
                assert down["Retry-After"] == "10"
                text = down.content.decode()
                assert "The database is not answering" in text and "5432" not in text
        # a visitor without a session needs no database to be sent to the log-in page
        anonymous = Client(raise_request_exception=False)
        assert anonymous.get(project).status_code == 302
        assert anonymous.post("/login/", {"username": "a", "password": "b"}).status_code == 503
    clients["anonymous"] = anonymous
    up = {name: client.get(project).status_code for name, client in clients.items()}
    assert up == {
        "admin": 200,
        "executor": 200,
        "viewer": 200,
        "approver": 200,
        "stranger": 404,
        "anonymous": 302,
    }


def test_other_server_errors_stay_500(client, personas):
    client = Client(raise_request_exception=False)
    client.force_login(personas.viewer)
    with mock.patch("pipelines.views.render", side_effect=RuntimeError("bug")):
        response = client.get("/")
    assert response.status_code == 500 and "Retry-After" not in response
