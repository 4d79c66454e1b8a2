"""Personal access tokens: shown once and stored hashed; scoped read or read-write; acting as
their user, never more; refused when expired, revoked or of a deactivated user; last use
recorded at most once a minute; rate limited per token (429 with Retry-After); made and revoked
on the My tokens page and in the admin; CSRF for session writes."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from api.models import AccessToken
from api.tokens import RateLimited, count_request, create_token
from executions.models import Execution
from pipelines.models import RoleAssignment
from pipelines.roles import revoke_role
from stageline.errors import Invalid
from tests.helpers.factories import make_pipeline, make_user
from tests.helpers.pages import APPROVAL_YAML

API = "/api/v1"


def bearer(raw: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {raw}"}


@pytest.fixture
def pipeline(personas):
    return make_pipeline(personas.project, APPROVAL_YAML)


def run_url(pipeline) -> str:
    return f"{API}/projects/acme/web/pipelines/{pipeline.identifier}/run"


def post(client, url, raw, body=None):
    return client.post(url, body or {}, content_type="application/json", headers=bearer(raw))


def test_only_the_hash_of_a_token_is_stored(personas):
    token, raw = create_token(user=personas.executor, name="bot", scope="read-write")
    assert raw.startswith("stl_") and len(raw) > 40
    row = AccessToken.objects.filter(pk=token.pk).values().get()
    assert raw not in " ".join(str(value) for value in row.values())
    assert row["digest"] == hashlib.sha256(raw.encode()).hexdigest()
    assert raw.startswith(row["prefix"])


def test_a_read_token_reads_and_may_not_write(client, personas, pipeline):
    _, raw = create_token(user=personas.executor, name="reader", scope="read")
    assert client.get(f"{API}/projects", headers=bearer(raw)).status_code == 200
    answer = post(client, run_url(pipeline), raw)
    assert answer.status_code == 403
    assert "may only read" in answer.json()["detail"]
    assert not Execution.objects.exists()
    _, writer = create_token(user=personas.executor, name="writer", scope="read-write")
    assert post(client, run_url(pipeline), writer).status_code == 201


def test_a_token_acts_as_its_user_with_the_roles_of_the_moment(client, personas, pipeline):
    _, viewer = create_token(user=personas.viewer, name="v", scope="read-write")
    refused = post(client, run_url(pipeline), viewer)
    assert (
        refused.status_code == 403 and "You need the Execute permission" in refused.json()["detail"]
    )
    _, executor = create_token(user=personas.executor, name="e", scope="read-write")
    started = post(client, run_url(pipeline), executor)
    assert Execution.objects.get(pk=started.json()["id"]).triggered_by == personas.executor
    revoke_role(assignment=RoleAssignment.objects.get(user=personas.executor))
    assert post(client, run_url(pipeline), executor).status_code == 404
    assert client.get(f"{API}/projects", headers=bearer(executor)).json() == []


@pytest.mark.parametrize(
    "spoil, reason",
    [
        (
            lambda t: AccessToken.objects.filter(pk=t.pk).update(revoked_at=timezone.now()),
            "revoked",
        ),
        (
            lambda t: AccessToken.objects.filter(pk=t.pk).update(
                expires_at=timezone.now() - timedelta(seconds=1)
            ),
            "expired",
        ),
        (
            lambda t: type(t.user).objects.filter(pk=t.user_id).update(is_active=False),
            "deactivated",
        ),
    ],
)
def test_a_revoked_expired_or_orphaned_token_is_401_saying_why(client, personas, spoil, reason):
    token, raw = create_token(user=personas.viewer, name="old", scope="read")
    assert client.get(f"{API}/projects", headers=bearer(raw)).status_code == 200
    spoil(token)
    answer = client.get(f"{API}/projects", headers=bearer(raw))
    assert answer.status_code == 401 and reason in answer.json()["detail"]
    assert answer["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "header", ["Bearer stl_unknown", "Bearer not-a-token", "Basic dXNlcjpwdw==", "Bearer "]
)
def test_a_bad_authorization_header_is_401_even_with_a_session(client, personas, header):
    client.force_login(personas.viewer)
    answer = client.get(f"{API}/projects", headers={"Authorization": header})
    assert answer.status_code == 401 and answer.json()["detail"]


def test_the_last_use_is_recorded_at_most_once_a_minute(client, personas):
    token, raw = create_token(user=personas.viewer, name="t", scope="read")
    assert token.last_used_at is None
    client.get(f"{API}/projects", headers=bearer(raw))
    first = AccessToken.objects.get(pk=token.pk).last_used_at
    assert first is not None
    client.get(f"{API}/projects", headers=bearer(raw))
    assert AccessToken.objects.get(pk=token.pk).last_used_at == first
    AccessToken.objects.filter(pk=token.pk).update(last_used_at=first - timedelta(minutes=2))
    client.get(f"{API}/projects", headers=bearer(raw))
    assert AccessToken.objects.get(pk=token.pk).last_used_at > first - timedelta(minutes=1)


@pytest.mark.database  # the counter's conditional UPDATE, on PostgreSQL too
def test_requests_are_rate_limited_per_token(client, personas, settings):
    settings.STAGELINE_API_RATE_PER_MINUTE = 3
    _, raw = create_token(user=personas.viewer, name="busy", scope="read")
    _, other = create_token(user=personas.viewer, name="calm", scope="read")
    answers = [client.get(f"{API}/projects", headers=bearer(raw)) for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert 1 <= int(answers[-1]["Retry-After"]) <= 60
    assert "3 requests a minute" in answers[-1].json()["detail"]
    assert client.get(f"{API}/projects", headers=bearer(other)).status_code == 200
    client.force_login(personas.viewer)
    assert client.get(f"{API}/projects").status_code == 200, "the session is not a token"


@pytest.mark.database
def test_the_next_minute_opens_a_new_window(personas, settings):
    settings.STAGELINE_API_RATE_PER_MINUTE = 1
    token, _ = create_token(user=personas.viewer, name="t", scope="read")
    now = timezone.now().replace(second=10)
    count_request(token, now=now)
    with pytest.raises(RateLimited) as refused:
        count_request(token, now=now + timedelta(seconds=5))
    assert refused.value.retry_after == 45
    count_request(token, now=now + timedelta(minutes=1))


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"name": ""}, "name"),
        ({"name": "x" * 101}, "name"),
        ({"name": "t", "scope": "admin"}, "scope"),
        ({"name": "t", "days": 0}, "days"),
        ({"name": "t", "days": 10_000}, "days"),
    ],
)
def test_a_token_needs_a_name_a_scope_and_a_bounded_expiry(personas, kwargs, field):
    with pytest.raises(Invalid) as refused:
        create_token(user=personas.viewer, **kwargs)
    assert field in refused.value.field_errors
    assert not AccessToken.objects.exists()


# --- the My tokens page ---------------------------------------------------------------------


def test_my_tokens_page_shows_a_new_token_once(client, personas):
    client.force_login(personas.viewer)
    page = client.get(reverse("tokens"))
    assert page.status_code == 200 and reverse("tokens") in page.content.decode()
    made = client.post(reverse("tokens"), {"name": "chat bot", "scope": "read", "days": "7"})
    assert made.status_code == 201
    token = AccessToken.objects.get(user=personas.viewer)
    raw = made.context["plaintext"]
    assert raw in made.content.decode() and made["Cache-Control"].startswith("max-age=0")
    assert client.get(f"{API}/projects", headers=bearer(raw)).status_code == 200
    again = client.get(reverse("tokens")).content.decode()
    assert raw not in again and token.prefix in again and "chat bot" in again


def test_my_tokens_page_refuses_bad_input_in_place(client, personas):
    client.force_login(personas.viewer)
    answer = client.post(reverse("tokens"), {"name": "t", "scope": "read", "days": "forever"})
    assert answer.status_code == 400 and "days" in answer.content.decode()
    assert not AccessToken.objects.exists()


def test_a_user_revokes_their_own_tokens_only(client, personas):
    mine, raw = create_token(user=personas.viewer, name="mine")
    theirs, _ = create_token(user=personas.executor, name="theirs")
    client.force_login(personas.viewer)
    assert client.post(reverse("token_revoke", args=[theirs.pk])).status_code == 404
    assert AccessToken.objects.get(pk=theirs.pk).revoked_at is None
    assert client.post(reverse("token_revoke", args=[mine.pk])).status_code == 302
    assert client.get(f"{API}/projects", headers=bearer(raw)).status_code == 401


def test_my_tokens_page_asks_visitors_to_log_in(client):
    assert client.get(reverse("tokens"))["Location"].startswith(reverse("login"))


def test_the_admin_makes_tokens_for_superusers_only(client, personas):
    root = make_user("root", is_superuser=True, is_staff=True)
    client.force_login(personas.admin)  # staff, not superuser
    assert client.get(reverse("admin:api_accesstoken_changelist")).status_code == 403
    client.force_login(root)
    made = client.post(
        reverse("admin:api_accesstoken_add"),
        {"user": personas.executor.pk, "name": "deploy bot", "scope": "read-write", "days": "5"},
    )
    assert made.status_code == 200, made.content[:500]
    raw = made.context["plaintext"]
    token = AccessToken.objects.get(name="deploy bot")
    assert (
        token.user == personas.executor and token.digest == hashlib.sha256(raw.encode()).hexdigest()
    )
    revoked = client.post(
        reverse("admin:api_accesstoken_changelist"),
        {"action": "revoke", "_selected_action": [token.pk]},
    )
    assert revoked.status_code == 302
    assert AccessToken.objects.get(pk=token.pk).revoked_at is not None


# --- CSRF for session writes ---------------------------------------------------------------


def test_a_session_write_needs_the_csrf_token(personas, pipeline):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(personas.executor)
    refused = browser.post(run_url(pipeline), {}, content_type="application/json")
    assert refused.status_code == 403 and "CSRF" in refused.json()["detail"]
    assert not Execution.objects.exists()
    browser.get(reverse("home"))  # sets the CSRF cookie
    csrf = browser.cookies["csrftoken"].value
    ok = browser.post(
        run_url(pipeline), {}, content_type="application/json", headers={"X-CSRFToken": csrf}
    )
    assert ok.status_code == 201, ok.content
    _, raw = create_token(user=personas.executor, name="t", scope="read-write")
    no_csrf_needed = Client(enforce_csrf_checks=True).post(
        run_url(pipeline), {}, content_type="application/json", headers=bearer(raw)
    )
    assert no_csrf_needed.status_code == 201
