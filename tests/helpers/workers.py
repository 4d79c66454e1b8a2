"""Real Celery workers for tests: a thread (fast suite) or separate processes (integration).

The processes are started the one way Stageline starts worker processes from a program,
``stageline.workers.CeleryProcesses`` (the benchmark uses it too); this module only says with
which settings: the PostgreSQL test database, short leases and a beat that sends the reaper.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self
from urllib.parse import quote

from celery.contrib.testing.worker import start_worker
from celery.worker import WorkController
from django.conf import settings

from config.celery import app
from stageline.workers import ROOT, CeleryProcesses

__all__ = ["PROCESS_MODE", "ROOT", "WORKER_MODE", "ProcessWorkers", "thread_worker"]

# Which workers the `worker` fixture starts: "thread" (the default) or "process" (docs/testing.md).
WORKER_MODE = os.environ.get("STAGELINE_TEST_WORKERS", "") or "thread"
PROCESS_MODE = WORKER_MODE == "process"


@contextmanager
def thread_worker(queues: str = "default") -> Iterator[WorkController]:
    """A worker thread with a pool of 4 threads on an in-memory broker."""
    app.conf.update(broker_url="memory://", broker_transport_options={"polling_interval": 0.01})
    with start_worker(
        app,
        pool="threads",
        concurrency=4,
        perform_ping_check=False,
        queues=queues.split(","),
        shutdown_timeout=30,
    ) as worker:
        yield worker


def postgres_url(database_name: str) -> str:
    """The URL of ``database_name`` on the server (and as the user) of the configured database."""
    db: Mapping[str, Any] = settings.DATABASES["default"]
    credentials = quote(db["USER"] or "", safe="")
    if db["PASSWORD"]:
        credentials += ":" + quote(db["PASSWORD"], safe="")
    return (
        f"postgres://{credentials}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/"
        f"{quote(database_name, safe='')}"
    )


class ProcessWorkers(CeleryProcesses):
    """``celery worker`` processes and a ``celery beat`` on the test database
    (``database_name``, or the whole ``database_url``) and the configured broker.

    The leases are short (4 s, heartbeat 1 s) and, once started, the beat sends the reaper every
    second, so a lost worker is noticed within about 5 s. ``env`` adds settings of one's own
    (a short visibility timeout, a small log limit…). Logs and pid files go to ``log_dir``
    (``$STAGELINE_VAR_DIR/test-workers`` by default).

    As a context manager (the session's workers) it starts worker ``w1`` on ``default`` and
    the beat, after ending what a crashed earlier session left running.
    """

    def __init__(
        self,
        database_name: str,
        *,
        database_url: str | None = None,
        env: Mapping[str, str] | None = None,
        log_dir: Path | None = None,
        lease_seconds: int = 4,
        heartbeat_seconds: int = 1,
        reaper_interval_seconds: int = 1,
    ) -> None:
        self.lease_seconds = lease_seconds
        self.heartbeat_seconds = heartbeat_seconds
        self.reaper_interval_seconds = reaper_interval_seconds
        super().__init__(
            log_dir or Path(settings.VAR_DIR) / "test-workers",
            broker_url=settings.CELERY_BROKER_URL,
            env={
                "DATABASE_URL": database_url or postgres_url(database_name),
                "STAGELINE_STEP_LEASE_SECONDS": str(lease_seconds),
                "STAGELINE_HEARTBEAT_SECONDS": str(heartbeat_seconds),
                "STAGELINE_REAPER_INTERVAL_SECONDS": str(reaper_interval_seconds),
                **(env or {}),
            },
        )

    def __enter__(self) -> Self:
        super().__enter__()
        try:
            self.start("w1", "default", concurrency=2, wait=False)
            self.start_beat(wait=False)
            self.wait_until_ready("w1", "beat")
        except BaseException:
            self.stop_all_but()
            raise
        return self
