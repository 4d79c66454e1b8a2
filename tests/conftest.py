"""Shared fixtures: the personas, and a real Celery worker.

The worker is real in both modes, never ``task_always_eager``:

- default (the fast suite): a worker thread (``celery.contrib.testing``) with a thread pool,
  on an in-memory broker, against the SQLite test database (a file, WAL mode);
- ``STAGELINE_TEST_WORKERS=process`` (the integration suite): separate ``celery worker``
  processes on the broker of ``CELERY_BROKER_URL`` (Redis or RabbitMQ) against the PostgreSQL
  test database of ``DATABASE_URL``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import pytest
from django.db import connection

from tests import factories
from tests.workers import ProcessWorkers, thread_worker

PROCESS_MODE = os.environ.get("STAGELINE_TEST_WORKERS") == "process"


def pytest_configure(config):
    from django.conf import settings

    # Password hashing is not under test; the default (PBKDF2) costs ~0.4 s per user.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@dataclass
class Personas:
    project: object
    other_project: object
    admin: object
    executor: object
    viewer: object
    approver: object
    stranger: object

    def all(self) -> dict[str, object]:
        return {
            "admin": self.admin,
            "executor": self.executor,
            "viewer": self.viewer,
            "approver": self.approver,
            "stranger": self.stranger,
        }


@pytest.fixture
def personas(db) -> Personas:
    project = factories.make_project("acme", "web")
    other = factories.make_project("globex", "ops")
    users = {name: factories.make_user(name) for name in ("admin", "executor", "viewer", "approver", "stranger")}
    users["admin"].is_staff = True
    users["admin"].save(update_fields=["is_staff"])
    factories.grant(users["admin"], project, "admin")
    factories.grant(users["executor"], project, "executor")
    factories.grant(users["viewer"], project, "viewer")
    factories.grant(users["approver"], project, "approver")
    factories.grant(users["stranger"], other, "admin")
    return Personas(project=project, other_project=other, **users)


@pytest.fixture(scope="session")
def _workers(django_db_setup, django_db_blocker):
    if PROCESS_MODE:
        name = connection.settings_dict["NAME"]
        with ProcessWorkers(database_name=name) as workers:
            yield workers
    else:
        with django_db_blocker.unblock():
            with thread_worker() as worker:
                yield worker


@pytest.fixture
def worker(transactional_db, _workers):
    """A running Celery worker; tests using it see committed data only (transactional_db)."""
    yield _workers


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.05, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")


def wait_for_status(execution, statuses, timeout: float = 60.0):
    """Poll until the execution's status is one of ``statuses``; return the fresh row."""
    from executions.models import Execution

    if isinstance(statuses, str):
        statuses = {statuses}

    def check():
        fresh = Execution.objects.get(pk=execution.pk)
        return fresh if fresh.status in statuses else None

    try:
        return wait_for(check, timeout, message=f"execution {execution.pk} to reach {statuses}")
    except AssertionError:
        fresh = Execution.objects.get(pk=execution.pk)
        runs = [(r.identifier, r.status, r.error) for r in fresh.stage_runs.all()]
        raise AssertionError(f"execution {execution.pk} is {fresh.status}, stages {runs}") from None


def wait_for_stage(execution, stage: str, statuses, timeout: float = 60.0):
    from executions.models import StageRun

    if isinstance(statuses, str):
        statuses = {statuses}
    return wait_for(
        lambda: StageRun.objects.filter(execution=execution, identifier=stage, status__in=statuses).first(),
        timeout,
        message=f"stage {stage} to reach {statuses}",
    )
