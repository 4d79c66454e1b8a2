"""Finding 6 (settings): ``STAGELINE_HTTPS=ture`` silently meant false. Booleans now accept
only true/false/1/0/yes/no and anything else stops start-up naming the variable and the value;
DATABASE_URL is read by dj-database-url, every form supported before still works."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

from config.settings import BASE_DIR, VAR_DIR, database_from_url, env_bool
from tests.security.commands import manage


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("true", True),
        ("TRUE", True),
        (" Yes ", True),
        ("1", True),
        ("false", False),
        ("False", False),
        ("no", False),
        ("0", False),
    ],
)
def test_a_boolean_accepts_true_false_one_zero_yes_no_in_any_case(monkeypatch, value, expected):
    monkeypatch.setenv("STAGELINE_SOMETHING", value)
    assert env_bool("STAGELINE_SOMETHING", not expected) is expected


def test_an_unset_or_empty_boolean_is_its_default(monkeypatch):
    monkeypatch.delenv("STAGELINE_SOMETHING", raising=False)
    assert env_bool("STAGELINE_SOMETHING", True) is True
    monkeypatch.setenv("STAGELINE_SOMETHING", "")
    assert env_bool("STAGELINE_SOMETHING", False) is False


@pytest.mark.parametrize("value", ["ture", "on", "off", "2", "y", "enabled"])
def test_any_other_boolean_is_refused_naming_the_variable_and_the_value(monkeypatch, value):
    monkeypatch.setenv("STAGELINE_SOMETHING", value)
    with pytest.raises(ImproperlyConfigured) as refused:
        env_bool("STAGELINE_SOMETHING")
    assert "STAGELINE_SOMETHING" in str(refused.value) and repr(value) in str(refused.value)


def test_a_misspelt_https_setting_stops_start_up():
    result = manage("check", STAGELINE_HTTPS="ture")
    assert result.returncode != 0
    assert "STAGELINE_HTTPS must be true or false (or 1/0, yes/no), not 'ture'" in result.stderr


def test_sqlite_urls_keep_their_meaning(tmp_path):
    absolute = database_from_url(f"sqlite:///{tmp_path}/my%20db.sqlite3")
    assert absolute["ENGINE"] == "django.db.backends.sqlite3"
    assert absolute["NAME"] == f"{tmp_path}/my db.sqlite3"
    assert absolute["OPTIONS"]["transaction_mode"] == "IMMEDIATE"  # WAL set-up kept
    assert database_from_url("sqlite:///var/other.sqlite3")["NAME"] == str(
        BASE_DIR / "var/other.sqlite3"
    )
    assert database_from_url("sqlite://")["NAME"] == str(VAR_DIR / "stageline.sqlite3")


@pytest.mark.parametrize("scheme", ["postgres", "postgresql", "pgsql"])
def test_postgres_urls_give_every_part(scheme, monkeypatch):
    monkeypatch.setenv("DATABASE_CONN_MAX_AGE", "30")
    db = database_from_url(
        f"{scheme}://deploy:p%40ss%2Fw0rd@db.internal:5433/stage%20line?sslmode=require"
    )
    assert db["ENGINE"] == "django.db.backends.postgresql"
    assert (db["USER"], db["PASSWORD"], db["HOST"], str(db["PORT"]), db["NAME"]) == (
        "deploy",
        "p@ss/w0rd",
        "db.internal",
        "5433",
        "stage line",
    )
    assert db["OPTIONS"] == {"sslmode": "require"}
    assert db["CONN_MAX_AGE"] == 30 and db["CONN_HEALTH_CHECKS"] is True


def test_a_postgres_url_without_a_name_or_a_port_uses_the_defaults():
    db = database_from_url("postgres://stageline@[::1]")
    assert (db["HOST"], db["PORT"], db["NAME"]) == ("::1", "", "stageline")


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("mysql://u:p@h/db", "DATABASE_URL scheme 'mysql' is not supported"),
        ("postgres://u:p@host:port/db", "DATABASE_URL cannot be read"),
        ("db.sqlite3", "DATABASE_URL scheme 'db.sqlite3' is not supported"),
    ],
)
def test_a_database_url_that_cannot_be_used_is_refused_by_name(url, problem):
    with pytest.raises(ImproperlyConfigured, match=problem):
        database_from_url(url)
