"""The fault suite: workers killed mid-step, a broker and a database restarted under load,
redeliveries, poison steps, operators racing each other, floods of log output.

Every test here is marked ``integration``: it runs in the integration suite
(``STAGELINE_TEST_WORKERS=process``, PostgreSQL and Redis; see docs/testing.md and
docs/reliability.md). Anywhere else each test fails with the reason (the root conftest's
``pytest_runtest_setup``) instead of skipping.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from django.conf import settings
from django.db import connection

from executions.models import Execution, LogChunk, StepRun
from tests.faults.servers import (
    FAULTS_DIR,
    FaultWorkers,
    Gunicorn,
    PostgresCluster,
    RedisServer,
    kill_leftovers,
)

SESSION_PROCESSES = ("w1", "beat")


@pytest.fixture(scope="session", autouse=True)
def _no_leftovers():
    """Servers and workers that a crashed earlier run left behind are ended first."""
    kill_leftovers()


@pytest.fixture
def session_workers(worker):
    """The session's ``ProcessWorkers``: worker ``w1`` on ``default`` and the beat that sends
    the reaper every second (lease 4 s, heartbeat 1 s)."""
    for name in SESSION_PROCESSES:
        proc = worker.procs.get(name)
        assert proc is not None and proc.poll() is None, (
            f"the session's {name} is gone; log: {worker.logs.get(name)}"
        )
    yield worker
    worker.stop_all_but(*SESSION_PROCESSES)


@pytest.fixture
def fault_workers(session_workers) -> Iterator:
    """Make ``FaultWorkers`` (workers with settings of their own); all are stopped afterwards."""
    made: list[FaultWorkers] = []
    FAULTS_DIR.mkdir(parents=True, exist_ok=True)

    def make(**options) -> FaultWorkers:
        group = FaultWorkers(connection.settings_dict["NAME"], **options)
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
    the tests of one module (tests using it need the ``session_workers`` too)."""
    server = Gunicorn(FaultWorkers(connection.settings_dict["NAME"]).env())
    server.start()
    yield server
    server.stop()


# --- reading what happened ----------------------------------------------------------------------


def log_of(execution: Execution, stage: str) -> str:
    chunks = LogChunk.objects.filter(
        step_run__execution=execution, step_run__stage_run__identifier=stage
    )
    return "".join(chunk.text for chunk in chunks.order_by("step_run__position", "seq"))


def step_of(execution: Execution, stage: str) -> StepRun:
    return StepRun.objects.get(execution=execution, stage_run__identifier=stage)


def worker_pid(step: StepRun) -> int:
    """The pid of the process that ran ``step`` (``StepRun.worker`` is ``hostname:pid``)."""
    host, _, pid = step.worker.rpartition(":")
    assert host == socket.gethostname(), f"step {step.identifier} ran on {step.worker!r}"
    return int(pid)


def broker_url() -> str:
    return settings.CELERY_BROKER_URL
