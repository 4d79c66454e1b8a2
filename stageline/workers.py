"""Celery worker and beat processes that a program starts and stops itself: the integration
and fault suites (``tests/helpers/workers.py``) and ``manage.py bench`` (``benchmarks/workers.py``).

Why here: the tests and the benchmark command both need it and neither should import the
other (a management command must not need the test suite, and the tests are no part of the
benchmark); it imports neither app, only kombu and the standard library, so it belongs with
the shared plain-Python helpers.

Each process is ``python -m celery -A APP …`` in a session of its own (its process group is its
pid, so stopping it stops its pool too). It logs to ``LOG_DIR/NAME.log`` and leaves
``LOG_DIR/NAME.pid``, so that ``kill_leftovers`` can end what a crashed earlier run left
running. A worker counts as started once its log says ``… ready.``.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from kombu import Connection, Queue

from stageline.processes import command_line, is_alive, process_group_of

ROOT = Path(__file__).resolve().parent.parent
WORKER_READY = re.compile(r"@\S+ ready\.")
BEAT_READY = re.compile(r"beat: Starting\.\.\.")
# What every worker gets: prefork, no gossip/mingle/heartbeat (they only slow a start-up and
# add broker traffic nobody here reads).
WORKER_OPTIONS = (
    "-P",
    "prefork",
    "-l",
    "info",
    "--without-gossip",
    "--without-mingle",
    "--without-heartbeat",
)


def purge_queues(
    broker_url: str,
    queues: Iterable[str],
    *,
    transport_options: Mapping[str, Any] | None = None,
) -> int:
    """Drop the messages waiting in ``queues``; how many were dropped. Messages left by an
    earlier run would name rows of a database that no longer exists."""
    dropped = 0
    with Connection(
        broker_url, connect_timeout=5, transport_options=dict(transport_options or {})
    ) as conn:
        for queue in queues:
            try:
                with conn.channel() as channel:
                    dropped += Queue(queue, channel=channel).purge() or 0
            except Exception:  # noqa: BLE001 - AMQP answers NotFound for a queue never declared
                pass
    return dropped


class CeleryProcesses:
    """Named ``celery worker`` and ``celery beat`` processes sharing a folder for their logs
    and pid files, with the environment of ``env()``.

    ``start(name, queues)`` adds a worker (node ``NAME@host``); the first worker on a queue
    purges it. ``start_beat()`` adds the beat. ``kill(name)`` SIGKILLs one (a lost worker),
    ``stop(name)`` stops one warmly, ``stop_all_but(*names)`` the others; ``owner_of(pid)``
    says which of them a process belongs to. Used as a context manager, it ends leftovers of an
    earlier run first and stops everything at the end; subclasses start what they need.
    """

    def __init__(
        self,
        log_dir: Path,
        *,
        broker_url: str,
        app: str = "config",
        env: Mapping[str, str] | None = None,
        broker_transport_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.log_dir = log_dir
        self.broker_url = broker_url
        self.app = app
        self.extra_env = dict(env or {})
        self.broker_transport_options = dict(broker_transport_options or {})
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: dict[str, Path] = {}
        self._ready: dict[str, re.Pattern[str]] = {}
        self._purged: set[tuple[str, str]] = set()

    # --- environment -----------------------------------------------------------------------

    def env(self, **overrides: str) -> dict[str, str]:
        """The environment of every process: ours, the group's settings, then ``overrides``."""
        env = dict(os.environ)
        env.update(
            CELERY_BROKER_URL=self.broker_url,
            DJANGO_SETTINGS_MODULE="config.settings",
            PYTHONUNBUFFERED="1",
        )
        env.update(self.extra_env)
        env.update(overrides)
        return env

    # --- starting --------------------------------------------------------------------------

    def _spawn(
        self, name: str, args: Sequence[str], env: Mapping[str, str], ready: re.Pattern[str]
    ) -> subprocess.Popen[bytes]:
        if name in self.procs:
            raise RuntimeError(f"a Celery process named {name} is already running")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_dir / f"{name}.log"
        self.logs[name] = log
        with log.open("w") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", self.app, *args],
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

    def start(
        self,
        name: str = "w1",
        queues: str = "default",
        *,
        concurrency: int = 2,
        broker_url: str | None = None,
        args: Sequence[str] = (),
        wait: bool = True,
    ) -> subprocess.Popen[bytes]:
        """Start ``celery worker -n NAME@host -Q QUEUES -c CONCURRENCY`` (prefork) and, unless
        ``wait=False`` (then call ``wait_until_ready``), wait until it is ready."""
        env = self.env(**({"CELERY_BROKER_URL": broker_url} if broker_url else {}))
        broker = env["CELERY_BROKER_URL"]
        fresh = [q for q in queues.split(",") if (broker, q) not in self._purged]
        if fresh:
            purge_queues(broker, fresh, transport_options=self.broker_transport_options)
            self._purged.update((broker, q) for q in fresh)
        command = ["worker", "-n", f"{name}@%h", "-Q", queues, "-c", str(concurrency)]
        proc = self._spawn(name, [*command, *WORKER_OPTIONS, *args], env, WORKER_READY)
        if wait:
            self.wait_until_ready(name)
        return proc

    def start_beat(self, name: str = "beat", *, wait: bool = True) -> subprocess.Popen[bytes]:
        """Start a ``celery beat`` (the reaper's schedule, from the settings)."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for stale in self.log_dir.glob("celerybeat-schedule*"):
            stale.unlink()
        schedule = self.log_dir / "celerybeat-schedule"
        proc = self._spawn(
            name, ["beat", "-s", str(schedule), "-l", "info"], self.env(), BEAT_READY
        )
        if wait:
            self.wait_until_ready(name)
        return proc

    def wait_until_ready(self, *names: str, timeout: float = 90) -> None:
        """Wait until each named process says it is ready; raise with its log if it does not."""
        deadline = time.monotonic() + timeout
        for name in names:
            proc, ready = self.procs[name], self._ready[name]
            while not ready.search(text := self.log_text(name)):
                if proc.poll() is not None:
                    self._forget(name)
                    raise RuntimeError(
                        f"Celery process {name} exited with {proc.returncode}:\n{text[-3000:]}"
                    )
                if time.monotonic() > deadline:
                    self.stop(name)
                    raise RuntimeError(
                        f"Celery process {name} did not start within {timeout}s:\n{text[-3000:]}"
                    )
                time.sleep(0.1)

    # --- looking ---------------------------------------------------------------------------

    def log_text(self, name: str) -> str:
        return self.logs[name].read_text(errors="replace")

    def alive(self) -> bool:
        """Whether every process started and not stopped is still running."""
        return all(proc.poll() is None for proc in self.procs.values())

    def owner_of(self, pid: int) -> str | None:
        """The name of the running process whose process group ``pid`` belongs to, if any."""
        group = process_group_of(pid)
        for name, proc in self.procs.items():
            if group == proc.pid and proc.poll() is None:
                return name
        return None

    # --- stopping --------------------------------------------------------------------------

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
        self._stop([name], timeout)

    def stop_all_but(self, *keep: str, timeout: float = 20) -> None:
        """Stop every process but those named, all at once (SIGTERM to all, then wait)."""
        self._stop([name for name in self.procs if name not in keep], timeout)

    def _stop(self, names: list[str], timeout: float) -> None:
        for name in names:
            try:
                os.killpg(self.procs[name].pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout
        for name in names:
            proc = self.procs[name]
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # pool processes that outlived their parent
            except ProcessLookupError:
                pass
            proc.wait()
            self._forget(name)

    def _forget(self, name: str) -> None:
        self.procs.pop(name, None)
        self._ready.pop(name, None)
        (self.log_dir / f"{name}.pid").unlink(missing_ok=True)

    def kill_leftovers(self) -> None:
        """Kill Celery processes that a crashed earlier run left running (from their pid
        files): only a live group leader whose command line names celery is killed."""
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

    def __enter__(self) -> Self:
        self.kill_leftovers()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop_all_but()
