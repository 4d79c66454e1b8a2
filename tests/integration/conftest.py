"""The integration suite: real ``celery worker`` and ``celery beat`` processes on PostgreSQL and
Redis (or RabbitMQ). It runs only with ``STAGELINE_TEST_WORKERS=process``; anywhere else each
test fails with the reason, so a misconfigured run can never pass by skipping them.
"""

from __future__ import annotations

import pytest

from tests.conftest import PROCESS_MODE

BASELINE = ("w1", "beat")  # started once per session by the ``worker`` fixture


@pytest.fixture(autouse=True)
def _require_process_mode():
    if not PROCESS_MODE:
        pytest.fail(
            "the integration suite needs worker processes: run it with STAGELINE_TEST_WORKERS=process, "
            "DATABASE_URL=postgres://… and CELERY_BROKER_URL=redis://… or amqp://… (see docs/testing.md)",
            pytrace=False,
        )


@pytest.fixture
def workers(worker):
    """The session's ``ProcessWorkers`` (worker ``w1`` on ``default`` and the beat that sends
    the reaper). Workers a test starts are stopped after it."""
    for name in BASELINE:
        proc = worker.procs.get(name)
        assert proc is not None and proc.poll() is None, (
            f"the session's {name} process is gone; its log: {worker.logs.get(name)}"
        )
    yield worker
    worker.stop_all_but(*BASELINE)
