"""Finding 5: 50 failed log-ins from one address locked every user of that address out, right
passwords included. Failures now count per (username, client address) (django-axes); the
address comes from X-Forwarded-For only behind trusted proxies; lockouts expire and superusers
see them in the admin."""

from __future__ import annotations

from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from tests.helpers.factories import make_user

pytestmark = pytest.mark.django_db

OFFICE = "203.0.113.7"  # one address shared by everybody (a NAT, or the proxy itself)


def log_in(client: Client, username: str, password: str, address: str = OFFICE, **headers):
    return client.post(
        "/login/", {"username": username, "password": password}, REMOTE_ADDR=address, **headers
    )


def logged_in_as(client: Client) -> str:
    user_id = client.session.get("_auth_user_id")
    return get_user_model().objects.get(pk=user_id).username if user_id else ""


@pytest.fixture
def alice_and_bob():
    return make_user("alice", password="alice-pw"), make_user("bob", password="bob-pw")


def test_fifty_failures_for_one_user_do_not_lock_out_another_user_of_the_same_address(
    alice_and_bob,
):
    attacker = Client()
    for _ in range(50):
        assert log_in(attacker, "alice", "guess").status_code in {200, 429}
    bob = Client()
    response = log_in(bob, "bob", "bob-pw")
    assert response.status_code == 302 and logged_in_as(bob) == "bob"


def test_a_user_is_locked_out_only_after_their_own_failures_and_sees_why(alice_and_bob, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert log_in(Client(), "alice", "typo").status_code == 200
    alice = Client()
    assert log_in(alice, "alice", "alice-pw").status_code == 302  # not locked yet; resets
    alice.logout()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert log_in(alice, "alice", "typo").status_code == 200
    assert log_in(alice, "alice", "typo").status_code == 429  # the failure that reaches the limit
    refused = log_in(alice, "alice", "alice-pw")
    assert refused.status_code == 429 and logged_in_as(alice) == ""
    text = refused.content.decode()
    assert "Too many failed log-ins for this username from your address" in text
    assert "Try again in 5 minute(s)" in text
    # the same failures from another address do not refuse alice at home
    home = Client()
    assert log_in(home, "alice", "alice-pw", address="198.51.100.20").status_code == 302


def test_failures_from_elsewhere_never_lock_a_user_out_of_their_own_address(alice_and_bob):
    for _ in range(20):
        log_in(Client(), "alice", "guess", address="192.0.2.99")
    alice = Client()
    assert log_in(alice, "alice", "alice-pw").status_code == 302


def test_a_lockout_ends_by_itself_after_the_cool_off(alice_and_bob, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT):
        log_in(Client(), "alice", "typo")
    assert log_in(Client(), "alice", "alice-pw").status_code == 429
    AccessAttempt.objects.update(
        attempt_time=timezone.now() - settings.AXES_COOLOFF_TIME - timedelta(seconds=1)
    )
    alice = Client()
    assert log_in(alice, "alice", "alice-pw").status_code == 302 and logged_in_as(alice) == "alice"


def test_the_admin_log_in_page_is_throttled_the_same_way(alice_and_bob, settings):
    make_user("root", password="root-pw", is_staff=True, is_superuser=True)
    for _ in range(settings.AXES_FAILURE_LIMIT):
        Client().post("/admin/login/", {"username": "root", "password": "x"}, REMOTE_ADDR=OFFICE)
    refused = Client().post(
        "/admin/login/", {"username": "root", "password": "root-pw"}, REMOTE_ADDR=OFFICE
    )
    assert refused.status_code == 429


def test_forwarded_for_is_ignored_without_trusted_proxies(alice_and_bob, settings):
    settings.STAGELINE_TRUSTED_PROXIES = 0
    for n in range(settings.AXES_FAILURE_LIMIT):
        log_in(Client(), "alice", "guess", HTTP_X_FORWARDED_FOR=f"10.9.9.{n}")
    assert log_in(Client(), "alice", "alice-pw", HTTP_X_FORWARDED_FOR="10.1.1.1").status_code == 429
    assert AccessAttempt.objects.get().ip_address == OFFICE


def test_behind_a_trusted_proxy_each_client_is_counted_at_its_own_address(alice_and_bob, settings):
    settings.STAGELINE_TRUSTED_PROXIES = 1
    proxy = "10.0.0.2"
    # an attacker behind the proxy: whatever it writes on the left, the proxy appends its address
    for n in range(settings.AXES_FAILURE_LIMIT):
        log_in(Client(), "alice", "guess", proxy, HTTP_X_FORWARDED_FOR=f"1.2.3.{n}, {OFFICE}")
    assert (
        log_in(Client(), "alice", "alice-pw", proxy, HTTP_X_FORWARDED_FOR=f"9.9.9.9, {OFFICE}")
    ).status_code == 429
    # alice at home, through the same proxy, is another client
    home = Client()
    response = log_in(home, "alice", "alice-pw", proxy, HTTP_X_FORWARDED_FOR="198.51.100.20")
    assert response.status_code == 302
    assert logged_in_as(home) == "alice"
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {OFFICE}


def test_a_malformed_forwarded_address_falls_back_to_the_connection(alice_and_bob, settings):
    settings.STAGELINE_TRUSTED_PROXIES = 1
    log_in(Client(), "alice", "guess", "10.0.0.2", HTTP_X_FORWARDED_FOR="not-an-address")
    assert AccessAttempt.objects.get().ip_address == "10.0.0.2"


def test_lockouts_are_listed_for_superusers_only(alice_and_bob, personas, settings, client):
    for _ in range(settings.AXES_FAILURE_LIMIT):
        log_in(Client(), "alice", "typo")
    root = make_user("root", is_staff=True, is_superuser=True)
    client.force_login(root)
    page = client.get("/admin/axes/accessattempt/?locked_out=yes")
    assert page.status_code == 200 and "alice" in page.content.decode()
    for name, who in {**personas.all(), "staff project admin": personas.admin}.items():
        client.force_login(who)
        response = client.get("/admin/axes/accessattempt/")
        assert response.status_code in {302, 403}, name
        assert "alice" not in response.content.decode(), name


def test_attempts_during_a_lockout_do_not_extend_it(alice_and_bob, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT):
        log_in(Client(), "alice", "typo")
    locked_at = AccessAttempt.objects.get().attempt_time
    for _ in range(3):
        assert log_in(Client(), "alice", "guess").status_code == 429
    attempt = AccessAttempt.objects.get()
    assert attempt.attempt_time == locked_at
    assert attempt.failures_since_start == settings.AXES_FAILURE_LIMIT
