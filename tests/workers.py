"""Real Celery workers for tests: a thread (fast suite) or separate processes (integration)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings

ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def thread_worker(queues: str = "default"):
    """A worker thread with a pool of 4 threads on an in-memory broker."""
    from celery.contrib.testing.worker import start_worker

    from config.celery import app

    app.conf.broker_url = "memory://"
    app.conf.broker_transport_options = {"polling_interval": 0.01}
    with start_worker(
        app, pool="threads", concurrency=4, perform_ping_check=False, queues=queues.split(","),
        shutdown_timeout=30,
    ) as worker:
        yield worker


class ProcessWorkers:
    """``celery worker`` processes sharing the test database and the configured broker.

    ``start(name, queues)`` adds a worker; ``kill(name)`` SIGKILLs one (a lost worker).
    """

    def __init__(self, database_name: str, lease_seconds: int = 4):
        self.database_name = database_name
        self.lease_seconds = lease_seconds
        self.procs: dict[str, subprocess.Popen] = {}
        self.logs: dict[str, Path] = {}

    def env(self) -> dict[str, str]:
        db = settings.DATABASES["default"]
        url = (
            f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/"
            f"{self.database_name}"
        )
        env = dict(os.environ)
        env.update(
            DATABASE_URL=url,
            STAGELINE_STEP_LEASE_SECONDS=str(self.lease_seconds),
            STAGELINE_HEARTBEAT_SECONDS="1",
            DJANGO_SETTINGS_MODULE="config.settings",
        )
        return env

    def start(self, name: str = "w1", queues: str = "default", concurrency: int = 2) -> subprocess.Popen:
        log_dir = ROOT / "var" / "test-workers"
        log_dir.mkdir(parents=True, exist_ok=True)
        log = log_dir / f"{name}.log"
        self.logs[name] = log
        proc = subprocess.Popen(
            [
                sys.executable, "-m", "celery", "-A", "config", "worker", "-n", f"{name}@%h",
                "-Q", queues, "-c", str(concurrency), "-P", "prefork", "-l", "info",
                "--without-gossip", "--without-mingle", "--without-heartbeat",
            ],
            cwd=ROOT,
            env=self.env(),
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs[name] = proc
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if "ready" in log.read_text():
                return proc
            if proc.poll() is not None:
                raise RuntimeError(f"worker {name} exited: {log.read_text()[-2000:]}")
            time.sleep(0.1)
        raise RuntimeError(f"worker {name} did not start: {log.read_text()[-2000:]}")

    def kill(self, name: str) -> None:
        """SIGKILL the worker's whole process group (the main process and its pool)."""
        proc = self.procs.pop(name)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def stop(self, name: str) -> None:
        proc = self.procs.pop(name)
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()

    def __enter__(self) -> ProcessWorkers:
        self.start("w1", "default", concurrency=2)
        return self

    def __exit__(self, *exc) -> None:
        for name in list(self.procs):
            self.stop(name)
