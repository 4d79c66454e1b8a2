"""``celery worker`` processes for the benchmark, started and stopped by it.

They are started the one way Stageline starts worker processes from a program,
``stageline.workers.CeleryProcesses`` (the integration tests use it too): each worker is
``celery -A config worker -P prefork`` in a session of its own (so stopping it stops its pool
too), with the benchmark's ``DATABASE_URL`` and the configured broker, and
``-I benchmarks.tasks`` so that the bare-chain baseline runs on the very same workers. Logs and
pid files are in ``$STAGELINE_VAR_DIR/bench``; the next run kills what a crashed run left
behind. No ``celery beat``: the reaper would re-send lost work and hide it, and the benchmark
wants to see it.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Self

from django.conf import settings

from benchmarks import fixtures
from stageline.workers import CeleryProcesses, purge_queues


def purge(queues: list[str]) -> int:
    """Drop the messages waiting in ``queues`` on the configured broker; how many were dropped."""
    return purge_queues(
        settings.CELERY_BROKER_URL,
        queues,
        transport_options=settings.CELERY_BROKER_TRANSPORT_OPTIONS,
    )


class Workers(CeleryProcesses):
    """``count`` worker nodes (``bench1``, ``bench2``…) of ``concurrency`` pool processes
    each, serving ``queues`` (the benchmark gives them a queue of their own)."""

    def __init__(
        self,
        database_url: str,
        *,
        count: int = 2,
        concurrency: int = 1,
        queues: str = "default",
        app: str = "config",
    ) -> None:
        super().__init__(
            Path(settings.VAR_DIR) / "bench",
            broker_url=settings.CELERY_BROKER_URL,
            broker_transport_options=settings.CELERY_BROKER_TRANSPORT_OPTIONS,
            app=app,
            env={
                "DATABASE_URL": database_url,
                "STAGELINE_VAR_DIR": str(settings.VAR_DIR),
                "LOG_LEVEL": "WARNING",
                "STAGELINE_STEP_SHARED_DIRS": str(fixtures.step_shared_dir()),
            },
        )
        self.count = count
        self.concurrency = concurrency
        self.queues = queues

    def __enter__(self) -> Self:
        super().__enter__()
        try:
            for index in range(1, self.count + 1):
                self.start(
                    f"bench{index}",
                    self.queues,
                    concurrency=self.concurrency,
                    args=["-I", "benchmarks.tasks"],
                    wait=False,
                )
            self.wait_until_ready(*self.procs, timeout=120)
        except BaseException:
            self.stop_all_but()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        super().__exit__(exc_type, exc, traceback)
        try:
            purge(self.queues.split(","))  # what an interrupted run left queued
        except Exception:  # noqa: BLE001 - the broker is away: nothing more to clean here
            pass
