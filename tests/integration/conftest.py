"""The integration suite: real ``celery worker`` and ``celery beat`` processes on PostgreSQL and
Redis (or RabbitMQ). Every test here is marked ``integration``, so it runs only with
``STAGELINE_TEST_WORKERS=process``; anywhere else it fails with the reason (the root conftest's
``pytest_runtest_setup``), so a misconfigured run can never pass by skipping them.
"""

from __future__ import annotations

import pytest

BASELINE = ("w1", "beat")  # started once per session by the ``worker`` fixture


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
