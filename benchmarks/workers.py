"""``celery worker`` processes for the benchmark, started and stopped by it.

Each worker is ``celery -A config worker -P prefork`` in a session of its own (so stopping it
stops its pool too), with the benchmark's ``DATABASE_URL`` and the configured broker, and
``-I benchmarks.tasks`` so that the bare-chain baseline runs on the very same workers. A pid
file per worker lets the next run kill what a crashed run left behind. No ``celery beat``: the
reaper would re-send lost work and hide it, and the benchmark wants to see it.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings

ROOT = Path(__file__).resolve().parent.parent
READY = re.compile(r"@\S+ ready\.")


def purge(queues: list[str]) -> int:
    """Drop the messages waiting in ``queues`` on the configured broker; how many were dropped."""
    from kombu import Connection

    dropped = 0
    with Connection(
        settings.CELERY_BROKER_URL, transport_options=settings.CELERY_BROKER_TRANSPORT_OPTIONS
    ) as conn:
        for queue in queues:
            try:
                with conn.channel() as channel:
                    dropped += channel.queue_purge(queue) or 0
            except Exception:  # noqa: BLE001 - a queue never declared cannot be purged: nothing waits there
                pass
    return dropped


def _is_our_worker(pid: int) -> bool:
    try:
        cmdline = (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
        return "celery" in cmdline and "benchmarks.tasks" in cmdline and os.getpgid(pid) == pid
    except (OSError, ProcessLookupError):
        return False


class Workers:
    """``count`` worker nodes of ``concurrency`` pool processes each, serving ``queues``
    (the benchmark gives them a queue of their own)."""

    def __init__(
        self,
        database_url: str,
        *,
        count: int = 2,
        concurrency: int = 1,
        queues: str = "default",
        app: str = "config",
    ):
        self.database_url = database_url
        self.app = app
        self.count = count
        self.concurrency = concurrency
        self.queues = queues
        self.dir = Path(settings.VAR_DIR) / "bench"
        self.procs: dict[str, subprocess.Popen] = {}

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            DATABASE_URL=self.database_url,
            CELERY_BROKER_URL=settings.CELERY_BROKER_URL,
            STAGELINE_VAR_DIR=str(settings.VAR_DIR),
            DJANGO_SETTINGS_MODULE="config.settings",
            PYTHONUNBUFFERED="1",
            LOG_LEVEL="WARNING",
        )
        return env

    def kill_leftovers(self) -> None:
        """Kill benchmark workers that an interrupted earlier run left (from their pid files)."""
        for pidfile in self.dir.glob("worker-*.pid"):
            try:
                pid = int(pidfile.read_text().strip())
            except ValueError:
                pid = 0
            if pid and _is_our_worker(pid):
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            pidfile.unlink(missing_ok=True)

    def start(self, timeout: float = 120.0) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.kill_leftovers()
        purge(self.queues.split(","))
        env = self.env()
        for index in range(1, self.count + 1):
            name = f"bench{index}"
            log = self.dir / f"worker-{name}.log"
            with log.open("w") as out:
                proc = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "celery",
                        "-A",
                        self.app,
                        "worker",
                        "-n",
                        f"{name}@%h",
                        "-Q",
                        self.queues,
                        "-c",
                        str(self.concurrency),
                        "-P",
                        "prefork",
                        "-l",
                        "info",
                        "--without-gossip",
                        "--without-mingle",
                        "--without-heartbeat",
                        "-I",
                        "benchmarks.tasks",
                    ],
                    cwd=ROOT,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            self.procs[name] = proc
            (self.dir / f"worker-{name}.pid").write_text(str(proc.pid))
        deadline = time.monotonic() + timeout
        for name, proc in self.procs.items():
            log = self.dir / f"worker-{name}.log"
            while not READY.search(log.read_text(errors="replace")):
                if proc.poll() is not None or time.monotonic() > deadline:
                    text = log.read_text(errors="replace")[-3000:]
                    self.stop()
                    raise RuntimeError(f"benchmark worker {name} did not start:\n{text}")
                time.sleep(0.1)

    def alive(self) -> bool:
        return all(proc.poll() is None for proc in self.procs.values())

    def stop(self, timeout: float = 20.0) -> None:
        """A warm shutdown (SIGTERM to each worker's process group), then SIGKILL what is left."""
        for proc in self.procs.values():
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout
        for name, proc in list(self.procs.items()):
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # pool processes that outlived their parent
            except ProcessLookupError:
                pass
            proc.wait()
            (self.dir / f"worker-{name}.pid").unlink(missing_ok=True)
        self.procs.clear()
        try:
            purge(self.queues.split(","))  # what an interrupted run left queued
        except Exception:  # noqa: BLE001 - the broker is away: nothing more to clean here
            pass

    def __enter__(self) -> Workers:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
