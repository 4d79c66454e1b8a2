"""Steps share the worker's network unless STAGELINE_STEP_NETWORK=none: the worker says at
start-up when that lets a step reach the database or the broker without any password."""

from __future__ import annotations

import copy

import pytest

from executions.launcher import Isolation, Launcher, open_to_steps

SANDBOX = Launcher(Isolation.SANDBOX, network=True)


@pytest.fixture
def postgres(settings):
    database = copy.deepcopy(settings.DATABASES)
    database["default"].update(
        ENGINE="django.db.backends.postgresql", HOST="db.internal", PASSWORD=""
    )
    settings.DATABASES = database
    settings.CELERY_BROKER_URL = "redis://:s3cret@broker.internal:6379/0"
    return settings


def test_a_database_without_a_password_on_the_network_is_named_at_start(postgres):
    (warning,) = open_to_steps(SANDBOX)
    assert "the database at db.internal has no password" in warning
    assert "STAGELINE_STEP_NETWORK=none" in warning


def test_a_broker_without_a_password_is_named_too(postgres):
    postgres.DATABASES["default"]["PASSWORD"] = "x"
    postgres.CELERY_BROKER_URL = "redis://broker.internal:6379/0"
    (warning,) = open_to_steps(SANDBOX)
    assert "the broker at broker.internal has no password" in warning


def test_nothing_to_say_with_passwords_a_socket_or_no_network(postgres):
    assert open_to_steps(Launcher(Isolation.SANDBOX, network=False)) == []
    postgres.DATABASES["default"]["HOST"] = "/var/run/postgresql"
    assert open_to_steps(SANDBOX) == []
    postgres.DATABASES["default"].update(HOST="db.internal", PASSWORD="x")
    assert open_to_steps(SANDBOX) == []
