"""The fault suite: workers killed mid-step, a broker and a database restarted under load,
redeliveries, poison steps, operators racing each other, floods of log output.

Every test here is marked ``integration``: it runs in the integration suite
(``STAGELINE_TEST_WORKERS=process``, PostgreSQL and Redis; see docs/testing.md and
docs/reliability.md). Anywhere else each test fails with the reason (the root conftest's
``pytest_runtest_setup``) instead of skipping.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.db import connection

from tests.faults.servers import (
    FAULTS_DIR,
    Gunicorn,
    PostgresCluster,
    RedisServer,
    kill_leftovers,
)
from tests.helpers.workers import ProcessWorkers


@pytest.fixture(scope="session", autouse=True)
def _no_leftovers():
    """Servers and workers that a crashed earlier run left behind are ended first."""
    kill_leftovers()


@pytest.fixture
def fault_workers(workers) -> Iterator:
    """Make ``ProcessWorkers`` with settings of their own (``env=``, ``database_url=``,
    ``lease_seconds=``…), their logs and pid files in ``$STAGELINE_VAR_DIR/test-faults``; they
    never touch the session's ``w1`` and ``beat``. All are stopped afterwards."""
    made: list[ProcessWorkers] = []
    FAULTS_DIR.mkdir(parents=True, exist_ok=True)

    def make(**options) -> ProcessWorkers:
        group = ProcessWorkers(connection.settings_dict["NAME"], log_dir=FAULTS_DIR, **options)
        made.append(group)
        return group

    yield make
    for group in made:
        group.stop_all_but()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def postgres_cluster() -> Iterator[PostgresCluster]:
    cluster = PostgresCluster()
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture(scope="module")
def web(django_db_setup) -> Iterator[Gunicorn]:
    """gunicorn (2 processes × 8 threads) on the test database and the session's broker, for
    the tests of one module (tests using it need the ``workers`` too)."""
    server = Gunicorn(ProcessWorkers(connection.settings_dict["NAME"], log_dir=FAULTS_DIR).env())
    server.start()
    yield server
    server.stop()
