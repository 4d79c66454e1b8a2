"""What every runner shares: the result type and the lease that proves the worker is alive."""

from __future__ import annotations

import logging
import queue
import shutil
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import DatabaseError, close_old_connections, connection
from django.utils import timezone

from executions.models import Status, StepRun


@dataclass
class StepResult:
    status: str
    exit_code: int | None = None
    outputs: dict[str, str] = field(default_factory=dict)
    error: str = ""
    pid: int | None = None  # the step's process (the group leader), stored with the result


log = logging.getLogger(__name__)


class Lease:
    """Renews a running step's lease and tells the runner when the step was aborted, or when
    this attempt was given up: its worker was thought lost (the lease lapsed while it was
    frozen or cut off) and a failure strategy gave the step a new attempt, queued or running
    elsewhere. Every check names the attempt, so the runner then kills its processes (its
    result would be dropped anyway), and a stale attempt never renews a newer one's lease.

    ``still_running()`` is cheap to call often: it reads the step's status at most once a
    second and renews the lease every ``STAGELINE_HEARTBEAT_SECONDS``.
    """

    CHECK_EVERY = 0.5

    def __init__(self, step: StepRun):
        self.step_id = step.pk
        self.attempt = step.attempts  # this attempt (the claim counted it)
        # The claim has just written the lease: the first check is due in CHECK_EVERY, so that a
        # step shorter than that costs no query at all.
        self.last_check = self.last_renewal = time.monotonic()
        self.running = True
        self.pid: int | None = (
            None  # set by a runner that started a process: stored at the first check
        )
        self.pid_stored = False

    def still_running(self) -> bool:
        now = time.monotonic()
        if not self.running or now - self.last_check < self.CHECK_EVERY:
            return self.running
        self.last_check = now
        try:
            if now - self.last_renewal >= settings.STAGELINE_HEARTBEAT_SECONDS:
                expires = timezone.now() + timedelta(seconds=settings.STAGELINE_STEP_LEASE_SECONDS)
                renewed = self._mine().update(lease_expires_at=expires)
                self.last_renewal = now
                self.running = bool(renewed)
            elif self.pid and not self.pid_stored:
                # The first check of a step that runs a process stores its pid (for operators,
                # and for what kills it) and checks the status in the same statement.
                stored = self._mine().update(pid=self.pid)
                self.pid_stored = True
                self.running = bool(stored)
            else:
                self.running = self._mine().exists()
        except DatabaseError:
            # The database is away (a restart, a failover): keep the step running and try again.
            # If it stays away past the lease, the reaper has failed the step meanwhile, so stop.
            log.warning("cannot reach the database to renew the lease of step %s", self.step_id)
            _reset_connection()
            if now - self.last_renewal > settings.STAGELINE_STEP_LEASE_SECONDS:
                self.running = False
        return self.running

    def _mine(self):
        """The step's row while this attempt is the one running."""
        return StepRun.objects.filter(pk=self.step_id, status=Status.RUNNING, attempts=self.attempt)


def _reset_connection() -> None:
    try:
        connection.close()
    except DatabaseError:
        pass
    close_old_connections()


def with_db_retry(action, *, seconds: float = 120.0):
    """Run ``action()``, retrying while the database is unreachable (up to ``seconds``)."""
    deadline = time.monotonic() + seconds
    delay = 0.2
    while True:
        try:
            return action()
        except DatabaseError:
            if time.monotonic() > deadline:
                raise
            log.warning("database unreachable; retrying in %.1fs", delay)
            _reset_connection()
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


# --- removing working directories off the critical path --------------------------------------

_doomed: queue.SimpleQueue[Path] = queue.SimpleQueue()
_remover: threading.Thread | None = None
_remover_lock = threading.Lock()


def _remove_forever() -> None:
    while True:
        shutil.rmtree(_doomed.get(), ignore_errors=True)


def remove_later(path: Path) -> None:
    """Remove a finished step's working directory in a thread of this process, so that the
    step's result and the next step do not wait for it (removing a directory tree costs
    milliseconds of file-system work). A worker that stops before the thread got to it leaves
    the directory behind, as a worker killed mid-step does."""
    global _remover
    with _remover_lock:
        if _remover is None or not _remover.is_alive():  # none yet in this (forked) process
            _remover = threading.Thread(
                target=_remove_forever, name="stageline-remove-workdirs", daemon=True
            )
            _remover.start()
    _doomed.put(path)
