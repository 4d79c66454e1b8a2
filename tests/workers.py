"""Real Celery workers for tests: a thread (fast suite) or separate processes (integration)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

from django.conf import settings

from tests.processes import command_line, is_alive, process_group_of

ROOT = Path(__file__).resolve().parent.parent
READY = re.compile(r"@\S+ ready\.")
BEAT_READY = "beat: Starting..."


@contextmanager
def thread_worker(queues: str = "default"):
    """A worker thread with a pool of 4 threads on an in-memory broker."""
    from celery.contrib.testing.worker import start_worker

    from config.celery import app

    app.conf.broker_url = "memory://"
    app.conf.broker_transport_options = {"polling_interval": 0.01}
    with start_worker(
        app,
        pool="threads",
        concurrency=4,
        perform_ping_check=False,
        queues=queues.split(","),
        shutdown_timeout=30,
    ) as worker:
        yield worker


def purge_queues(broker_url: str, queues: list[str]) -> None:
    """Drop messages left in ``queues`` by an earlier test session (they would name rows of a
    database that no longer exists, and could be picked up by the wrong worker)."""
    from kombu import Connection

    with Connection(broker_url, connect_timeout=5) as conn:
        for queue in queues:
            try:
                with conn.channel() as channel:
                    channel.queue_purge(queue)
            except Exception:  # noqa: BLE001 - AMQP answers NotFound for a queue never declared
                pass


class ProcessWorkers:
    """``celery worker`` processes and one ``celery beat`` sharing the test database and the
    configured broker.

    ``start(name, queues)`` adds a worker (node name ``NAME@host``); ``kill(name)`` SIGKILLs one
    (a lost worker); ``owner_of(pid)`` says which worker a process belongs to. Beat sends the
    reaper every ``reaper_interval_seconds`` to the ``default`` queue, so worker-lost detection
    takes about ``lease_seconds`` plus that interval.

    Each process runs in its own session (its process group is its pid) and leaves a pid file in
    ``$STAGELINE_VAR_DIR/test-workers``; a test session that died without stopping them has its
    leftovers killed by the next one (and by ``.ci/run``).
    """

    def __init__(
        self,
        database_name: str,
        lease_seconds: int = 4,
        heartbeat_seconds: int = 1,
        reaper_interval_seconds: int = 1,
    ):
        self.database_name = database_name
        self.lease_seconds = lease_seconds
        self.heartbeat_seconds = heartbeat_seconds
        self.reaper_interval_seconds = reaper_interval_seconds
        self.procs: dict[str, subprocess.Popen] = {}
        self.logs: dict[str, Path] = {}
        self.log_dir = Path(settings.VAR_DIR) / "test-workers"
        self._purged: set[tuple[str, str]] = set()
        self._ready: dict[str, re.Pattern | str] = {}

    # --- environment ---------------------------------------------------------------------

    def env(self, **overrides: str) -> dict[str, str]:
        db = settings.DATABASES["default"]
        credentials = quote(db["USER"] or "", safe="")
        if db["PASSWORD"]:
            credentials += ":" + quote(db["PASSWORD"], safe="")
        url = (
            f"postgres://{credentials}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/"
            f"{quote(self.database_name, safe='')}"
        )
        env = dict(os.environ)
        env.update(
            DATABASE_URL=url,
            STAGELINE_STEP_LEASE_SECONDS=str(self.lease_seconds),
            STAGELINE_HEARTBEAT_SECONDS=str(self.heartbeat_seconds),
            STAGELINE_REAPER_INTERVAL_SECONDS=str(self.reaper_interval_seconds),
            DJANGO_SETTINGS_MODULE="config.settings",
            PYTHONUNBUFFERED="1",
        )
        env.update(overrides)
        return env

    # --- processes -------------------------------------------------------------------------

    def _spawn(
        self, name: str, args: list[str], env: dict[str, str], ready: re.Pattern | str
    ) -> subprocess.Popen:
        if name in self.procs:
            raise RuntimeError(f"a test worker named {name} is already running")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_dir / f"{name}.log"
        self.logs[name] = log
        with log.open("w") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "config", *args],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs[name] = proc
        self._ready[name] = ready
        (self.log_dir / f"{name}.pid").write_text(str(proc.pid))
        return proc

    def wait_until_ready(self, *names: str, timeout: float = 90) -> None:
        """Wait until each named process says it is ready; fail with its log if it does not."""
        deadline = time.monotonic() + timeout
        for name in names:
            proc, log, ready = self.procs[name], self.logs[name], self._ready[name]
            while True:
                text = log.read_text(errors="replace")
                if ready.search(text) if isinstance(ready, re.Pattern) else ready in text:
                    break
                if proc.poll() is not None:
                    self._forget(name)
                    raise RuntimeError(
                        f"test worker {name} exited with {proc.returncode}:\n{text[-3000:]}"
                    )
                if time.monotonic() > deadline:
                    self.stop(name)
                    raise RuntimeError(
                        f"test worker {name} did not start within {timeout}s:\n{text[-3000:]}"
                    )
                time.sleep(0.1)

    def start(
        self,
        name: str = "w1",
        queues: str = "default",
        concurrency: int = 2,
        broker_url: str | None = None,
        wait: bool = True,
    ) -> subprocess.Popen:
        """Start ``celery worker -n NAME@host -Q QUEUES`` and (unless ``wait=False``: then call
        ``wait_until_ready``) wait until it is ready."""
        env = self.env(**({"CELERY_BROKER_URL": broker_url} if broker_url else {}))
        broker = env.get("CELERY_BROKER_URL", settings.CELERY_BROKER_URL)
        fresh = [q for q in queues.split(",") if (broker, q) not in self._purged]
        if fresh:
            purge_queues(broker, fresh)
            self._purged.update((broker, q) for q in fresh)
        proc = self._spawn(
            name,
            [
                "worker",
                "-n",
                f"{name}@%h",
                "-Q",
                queues,
                "-c",
                str(concurrency),
                "-P",
                "prefork",
                "-l",
                "info",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ],
            env,
            READY,
        )
        if wait:
            self.wait_until_ready(name)
        return proc

    def start_beat(self, name: str = "beat", wait: bool = True) -> subprocess.Popen:
        """Start the one ``celery beat`` of the session: it sends the reaper periodically."""
        schedule = self.log_dir / "celerybeat-schedule"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for stale in self.log_dir.glob("celerybeat-schedule*"):
            stale.unlink()
        proc = self._spawn(
            name, ["beat", "-s", str(schedule), "-l", "info"], self.env(), BEAT_READY
        )
        if wait:
            self.wait_until_ready(name)
        return proc

    def owner_of(self, pid: int) -> str | None:
        """The name of the running worker whose process tree ``pid`` belongs to, if any."""
        group = process_group_of(pid)
        for name, proc in self.procs.items():
            if group == proc.pid and proc.poll() is None:
                return name
        return None

    def kill(self, name: str) -> int:
        """SIGKILL the worker's whole process group (the main process and its pool); its pid."""
        proc = self.procs[name]
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
        self._forget(name)
        return proc.pid

    def stop(self, name: str, timeout: float = 20) -> None:
        """A warm shutdown (SIGTERM), then SIGKILL for whatever is left after ``timeout``."""
        proc = self.procs[name]
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=timeout)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # pool children that outlived their parent
        except ProcessLookupError:
            pass
        proc.wait()
        self._forget(name)

    def stop_all_but(self, *keep: str) -> None:
        for name in list(self.procs):
            if name not in keep:
                self.stop(name)

    def _forget(self, name: str) -> None:
        self.procs.pop(name, None)
        self._ready.pop(name, None)
        (self.log_dir / f"{name}.pid").unlink(missing_ok=True)

    def kill_leftovers(self) -> None:
        """Kill test workers that a crashed earlier session left running (from their pid files)."""
        if not self.log_dir.is_dir():
            return
        for pidfile in self.log_dir.glob("*.pid"):
            try:
                pid = int(pidfile.read_text().strip())
            except ValueError:
                pid = 0
            if (
                pid
                and is_alive(pid)
                and process_group_of(pid) == pid
                and "celery" in command_line(pid)
            ):
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            pidfile.unlink(missing_ok=True)

    def __enter__(self) -> ProcessWorkers:
        self.kill_leftovers()
        try:
            self.start("w1", "default", concurrency=2, wait=False)
            self.start_beat(wait=False)
            self.wait_until_ready("w1", "beat")
        except BaseException:
            self.stop_all_but()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop_all_but()
