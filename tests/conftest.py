"""Shared fixtures: the personas, and a real Celery worker.

The worker is real in both modes, never ``task_always_eager``:

- default (the fast suite): a worker thread (``celery.contrib.testing``) with a thread pool,
  on an in-memory broker, against the SQLite test database (a file, WAL mode);
- ``STAGELINE_TEST_WORKERS=process`` (the integration suite): separate ``celery worker``
  processes on the broker of ``CELERY_BROKER_URL`` (Redis or RabbitMQ) against the PostgreSQL
  test database of ``DATABASE_URL``, plus one ``celery beat`` sending the reaper every second.
  PostgreSQL and the broker must answer: if they do not, the run stops with a usage error
  (exit code 4) instead of skipping anything.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.db import connection

from tests.helpers import factories
from tests.helpers.personas import Personas
from tests.helpers.workers import PROCESS_MODE, WORKER_MODE, ProcessWorkers, thread_worker

ROOT = Path(__file__).resolve().parent.parent
BROKER_SCHEMES = {"redis", "rediss", "amqp", "amqps", "pyamqp"}


# Steps see only their working directory (docs/security.md); tests whose steps leave a witness
# (a counter file, a ledger) give them a folder here, shared with the test (``shared_dir``).
STEP_SHARED_ROOT = Path(tempfile.mkdtemp(prefix="stageline-test-shared-"))
STEP_SHARED_ROOT.chmod(0o1777)
os.environ["STAGELINE_STEP_SHARED_DIRS"] = str(STEP_SHARED_ROOT)


def pytest_unconfigure(config):
    shutil.rmtree(STEP_SHARED_ROOT, ignore_errors=True)


@pytest.fixture
def shared_dir() -> Path:
    """A folder that the test's steps may write and the test may read (tmp_path is not visible
    to a sandboxed step, nor writable by the step user)."""
    path = Path(tempfile.mkdtemp(dir=STEP_SHARED_ROOT))
    path.chmod(0o777)
    return path


def pytest_configure(config):
    from django.conf import settings

    # Steps of the tests' workers run as the step user when the tests run as root.
    subprocess.run(["bash", str(ROOT / "scripts" / "step-user")], check=True)

    settings.STAGELINE_STEP_SHARED_DIRS = [str(STEP_SHARED_ROOT)]

    # Password hashing is not under test; the default (PBKDF2) costs ~0.4 s per user.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    if WORKER_MODE not in {"thread", "process"}:
        raise pytest.UsageError(
            f"STAGELINE_TEST_WORKERS must be 'thread' (the default) or 'process', not {WORKER_MODE!r}"
        )
    if PROCESS_MODE:
        problem = process_mode_problem(settings)
        if problem:
            raise pytest.UsageError(f"STAGELINE_TEST_WORKERS=process, but {problem}")


def pytest_runtest_setup(item):
    if item.get_closest_marker("integration") and not PROCESS_MODE:
        pytest.fail(
            "integration tests need worker processes on PostgreSQL and Redis or RabbitMQ: run them "
            "with STAGELINE_TEST_WORKERS=process DATABASE_URL=postgres://… CELERY_BROKER_URL=redis://… "
            "(see docs/testing.md)",
            pytrace=False,
        )


def _safe_url(url: str) -> str:
    """``url`` with its password replaced by ***, for messages."""
    parsed = urlsplit(url)
    if parsed.password:
        netloc = parsed.netloc.replace(f":{parsed.password}@", ":***@", 1)
        return urlunsplit(parsed._replace(netloc=netloc))
    return url


def process_mode_problem(settings) -> str:
    """Why the integration suite cannot run here ("" if PostgreSQL and the broker answer)."""
    db = settings.DATABASES["default"]
    if db["ENGINE"] != "django.db.backends.postgresql":
        return (
            f"DATABASE_URL is not PostgreSQL (the database engine is {db['ENGINE']}); "
            "set DATABASE_URL=postgres://USER@HOST:PORT/NAME"
        )
    broker = settings.CELERY_BROKER_URL
    if urlsplit(broker).scheme not in BROKER_SCHEMES:
        return (
            f"CELERY_BROKER_URL {_safe_url(broker)!r} is not Redis or RabbitMQ; "
            "set CELERY_BROKER_URL=redis://HOST:6379/N or amqp://USER:PW@HOST:5672//"
        )
    import psycopg

    where = f"{db['HOST'] or 'the local socket'}:{db['PORT'] or 5432}"
    try:
        psycopg.connect(
            dbname="postgres",
            user=db["USER"] or None,
            password=db["PASSWORD"] or None,
            host=db["HOST"] or None,
            port=db["PORT"] or None,
            connect_timeout=5,
        ).close()
    except psycopg.Error as exc:
        return f"PostgreSQL at {where} does not answer: {str(exc).strip()}"
    from kombu import Connection

    try:
        with Connection(broker, connect_timeout=5) as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=5)
            conn.default_channel  # noqa: B018 - opening a channel proves the broker speaks to us
    except Exception as exc:  # noqa: BLE001 - any failure means the same thing here
        return f"the broker at {_safe_url(broker)} does not answer: {type(exc).__name__}: {exc}"
    return ""


@pytest.fixture
def personas(db) -> Personas:
    project = factories.make_project("acme", "web")
    other = factories.make_project("globex", "ops")
    users = {
        name: factories.make_user(name)
        for name in ("admin", "executor", "viewer", "approver", "stranger")
    }
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


SESSION_PROCESSES = ("w1", "beat")  # started once per session by ``_workers`` in process mode


@pytest.fixture
def workers(worker):
    """Process mode only (the integration and fault suites): the session's ``ProcessWorkers``
    (worker ``w1`` on ``default`` and the beat that sends the reaper every second; lease 4 s,
    heartbeat 1 s). Workers a test starts on it are stopped after the test."""
    for name in SESSION_PROCESSES:
        proc = worker.procs.get(name)
        assert proc is not None and proc.poll() is None, (
            f"the session's {name} process is gone; its log: {worker.logs.get(name)}"
        )
    yield worker
    worker.stop_all_but(*SESSION_PROCESSES)
