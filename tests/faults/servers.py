"""Servers that fault tests start, break and restart: their own Redis, their own PostgreSQL
cluster, gunicorn, and a small HTTP client. Celery workers with settings of their own are
``tests.helpers.workers.ProcessWorkers`` with ``log_dir=FAULTS_DIR`` (the ``fault_workers`` fixture).

The machine's PostgreSQL and Redis are shared (other test sessions use them), so a test that
stops a server stops one of these throwaway ones, never those. Every process runs in its own
session and is stopped by the fixture that started it; a missing binary fails the test with
the reason (the integration suite never skips).
"""

from __future__ import annotations

import glob
import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import pytest
from django.conf import settings

from stageline.processes import command_line, is_alive, process_group_of
from stageline.workers import ROOT

FAULTS_DIR = Path(settings.VAR_DIR) / "test-faults"


def free_port() -> int:
    """A TCP port nobody listens on right now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait(predicate, timeout: float, what: str, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{tail}")


def _stop_group(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 15) -> None:
    """Signal a process started with ``start_new_session`` and its whole group; SIGKILL after
    ``timeout`` what is left."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=timeout)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def kill_leftovers() -> None:
    """End what a crashed earlier run of the fault suite left behind: its Celery workers,
    Redis servers and gunicorns (by their pid files) and its PostgreSQL clusters."""
    if not FAULTS_DIR.is_dir():
        return
    for pidfile in FAULTS_DIR.glob("*.pid"):
        try:
            pid = int(pidfile.read_text().strip())
        except ValueError:
            pid = 0
        command = command_line(pid) if pid else ""
        if (
            is_alive(pid)
            and process_group_of(pid) == pid
            and any(word in command for word in ("celery", "redis-server", "gunicorn"))
        ):
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        pidfile.unlink(missing_ok=True)
    for data in FAULTS_DIR.glob("pg-*/data"):
        if (data / "postmaster.pid").exists():
            pg_tool("pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(data.parent, ignore_errors=True)


# --- Redis ------------------------------------------------------------------------------------


class RedisServer:
    """A ``redis-server`` on a free port with no persistence: a restart empties it, as a broker
    that lost its queued messages would be."""

    def __init__(self, port: int | None = None):
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail(
                "redis-server is not installed: the broker-restart tests start their own Redis",
                pytrace=False,
            )
        self.binary = binary
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None
        FAULTS_DIR.mkdir(parents=True, exist_ok=True)
        self.log = FAULTS_DIR / f"redis-{self.port}.log"

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def ping(self) -> bool:
        import redis

        try:
            return bool(
                redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.5).ping()
            )
        except redis.RedisError:
            return False

    def start(self) -> None:
        with self.log.open("a") as out:
            self.proc = subprocess.Popen(
                [
                    self.binary,
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--daemonize",
                    "no",
                    "--dir",
                    str(FAULTS_DIR),
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        (FAULTS_DIR / f"redis-{self.port}.pid").write_text(str(self.proc.pid))
        _wait(self.ping, 15, f"redis-server on port {self.port}", self.log)

    def stop(self) -> None:
        if self.proc is not None:
            _stop_group(self.proc)
            self.proc = None
        (FAULTS_DIR / f"redis-{self.port}.pid").unlink(missing_ok=True)


# --- PostgreSQL -------------------------------------------------------------------------------


def postgres_bindir() -> Path:
    """Where initdb / pg_ctl live: $STAGELINE_TEST_PG_BIN, ``pg_config --bindir`` or the newest
    /usr/lib/postgresql/*/bin."""
    candidates = []
    if os.environ.get("STAGELINE_TEST_PG_BIN"):
        candidates.append(Path(os.environ["STAGELINE_TEST_PG_BIN"]))
    candidates += [
        Path(p)
        for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True)
    ]
    if shutil.which("pg_config"):
        out = subprocess.run(
            ["pg_config", "--bindir"], capture_output=True, text=True
        ).stdout.strip()
        if out:
            candidates.append(Path(out))
    for path in candidates:
        if (path / "initdb").exists() and (path / "pg_ctl").exists():
            return path
    pytest.fail(
        "initdb and pg_ctl were not found (set STAGELINE_TEST_PG_BIN): the database-restart test "
        "starts a PostgreSQL cluster of its own",
        pytrace=False,
    )


def _version_key(path: str) -> int:
    found = re.search(r"/(\d+)/bin$", path)
    return int(found.group(1)) if found else 0


def pg_tool(*args: str, check: bool = True, log: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``initdb`` / ``pg_ctl`` (as the ``postgres`` user when we are root: they refuse root)."""
    command = [str(postgres_bindir() / args[0]), *args[1:]]
    if os.geteuid() == 0:
        command = ["runuser", "-u", "postgres", "--", *command]
    result = subprocess.run(
        command, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120
    )
    if check and result.returncode != 0:
        tail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
        raise AssertionError(
            f"{' '.join(args[:2])} failed ({result.returncode}):\n{result.stdout}{result.stderr}{tail}"
        )
    return result


class PostgresCluster:
    """A PostgreSQL cluster of our own (initdb in a temporary folder, trust authentication).

    As root, initdb and postgres run as the ``postgres`` user (they refuse to run as root).
    """

    def __init__(self, port: int | None = None):
        postgres_bindir()  # fails the test with the reason when PostgreSQL is not installed
        self.port = port or free_port()
        FAULTS_DIR.mkdir(parents=True, exist_ok=True)
        # Outside var/: a worker closes var/'s entries to everyone but its own user
        # (executions.launcher.close_var), and the cluster runs as the postgres user.
        self.base = Path(tempfile.mkdtemp(prefix="stageline-pg-"))
        self.data = self.base / "data"
        self.sockets = self.base / "sockets"
        self.log = self.base / "postgres.log"
        self.sockets.mkdir()
        if os.geteuid() == 0:
            shutil.chown(self.base, "postgres")
            shutil.chown(self.sockets, "postgres")
        self.running = False

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return pg_tool(*args, check=check, log=self.log)

    def url(self, dbname: str = "postgres") -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{dbname}"

    def init(self) -> None:
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
            "-E",
            "UTF8",
        )

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=60"
        )
        # pg_ctl waits until the server accepts connections (-w is the default for start).
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.log),
            "-w",
            "-t",
            "60",
            "start",
        )
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")
        self.running = False

    def accepts(self) -> bool:
        import psycopg

        try:
            psycopg.connect(self.url(), connect_timeout=1).close()
            return True
        except psycopg.Error:
            return False

    def sql(self, query: str, params: tuple = (), dbname: str = "stageline") -> list[tuple]:
        import psycopg

        with psycopg.connect(self.url(dbname), autocommit=True, connect_timeout=5) as conn:
            cursor = conn.execute(query, params)
            return cursor.fetchall() if cursor.description else []

    def destroy(self) -> None:
        if self.running:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", check=False)
            self.running = False
        shutil.rmtree(self.base, ignore_errors=True)


# --- Celery workers with their own settings: ProcessWorkers(log_dir=FAULTS_DIR, env=...) ----


def broker_url() -> str:
    return settings.CELERY_BROKER_URL


def forget_unacked(broker_url: str) -> None:
    """Drop the broker's record of unacknowledged messages (kombu's ``unacked`` hash, shared by
    every queue of a Redis database).

    A worker with a short visibility timeout puts back every unacknowledged message older than
    that timeout, whichever queue it came from, including those that workers killed by an
    earlier test or session left behind. They would name steps of another database.
    """
    import redis

    client = redis.Redis.from_url(broker_url, socket_connect_timeout=5)
    client.delete("unacked", "unacked_index", "unacked_mutex")


# --- gunicorn ---------------------------------------------------------------------------------


class Gunicorn:
    """The real web application under gunicorn (several processes, threads), on a free port."""

    def __init__(
        self, env: dict[str, str], *, workers: int = 2, threads: int = 8, name: str = "web"
    ):
        self.env = env
        self.workers = workers
        self.threads = threads
        self.port = free_port()
        FAULTS_DIR.mkdir(parents=True, exist_ok=True)
        self.log = FAULTS_DIR / f"{name}.log"
        self.pidfile = FAULTS_DIR / f"{name}-gunicorn.pid"
        self.proc: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with self.log.open("w") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "gunicorn",
                    "config.wsgi:application",
                    "--bind",
                    f"127.0.0.1:{self.port}",
                    "--workers",
                    str(self.workers),
                    "--worker-class",
                    "gthread",
                    "--threads",
                    str(self.threads),
                    "--timeout",
                    "120",
                    "--graceful-timeout",
                    "5",
                    "--error-logfile",
                    "-",
                ],
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        proc = self.proc
        self.pidfile.write_text(str(proc.pid))

        def answers() -> bool:
            if proc.poll() is not None:
                raise AssertionError(
                    f"gunicorn exited with {proc.returncode}:\n{self.log.read_text()[-3000:]}"
                )
            try:
                return HttpSession(self.base_url).get("/login/").status == 200
            except OSError:
                return False

        _wait(answers, 60, "gunicorn to answer", self.log)

    def stop(self) -> None:
        if self.proc is not None:
            _stop_group(self.proc)
            self.proc = None
        self.pidfile.unlink(missing_ok=True)


# --- HTTP -------------------------------------------------------------------------------------


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    text: str
    elapsed: float

    @property
    def location(self) -> str:
        """Where the answer sends the browser: ``Location`` or htmx's ``HX-Redirect``."""
        return self.headers.get("location") or self.headers.get("hx-redirect") or ""


@dataclass
class HttpSession:
    """A browser in miniature: keeps cookies, sends the CSRF token like the page's htmx does."""

    base_url: str
    cookies: dict[str, str] = field(default_factory=dict)
    timeout: float = 60.0

    def request(
        self, method: str, path: str, data=None, headers: dict[str, str] | None = None
    ) -> Response:
        parts = urlsplit(self.base_url)
        assert parts.hostname, f"no host in {self.base_url!r}"
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=self.timeout)
        sent = {"Host": f"{parts.hostname}:{parts.port}", "Connection": "close"}
        if self.cookies:
            sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        body = None
        if data is not None:
            body = urlencode(data, doseq=True).encode()
            sent["Content-Type"] = "application/x-www-form-urlencoded"
            if "csrftoken" in self.cookies:
                sent["X-CSRFToken"] = self.cookies["csrftoken"]
                sent["Origin"] = f"{parts.scheme}://{parts.hostname}:{parts.port}"
        sent.update(headers or {})
        started = time.monotonic()
        try:
            conn.request(method, path, body=body, headers=sent)
            raw = conn.getresponse()
            text = raw.read().decode("utf-8", errors="replace")
            received: dict[str, str] = {}
            for key, value in raw.getheaders():
                if key.lower() == "set-cookie":
                    cookie = SimpleCookie()
                    cookie.load(value)
                    for name, morsel in cookie.items():
                        if morsel.value == "" or morsel["max-age"] == "0":
                            self.cookies.pop(name, None)
                        else:
                            self.cookies[name] = morsel.value
                received[key.lower()] = value
        finally:
            conn.close()
        return Response(raw.status, received, text, time.monotonic() - started)

    def get(self, path: str, headers: dict[str, str] | None = None) -> Response:
        return self.request("GET", path, headers=headers)

    def post(self, path: str, data, headers: dict[str, str] | None = None) -> Response:
        return self.request("POST", path, data=data, headers=headers)

    def login(self, username: str, password: str) -> None:
        """Log in through the login form, as a person would."""
        page = self.get("/login/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
        assert token, f"no CSRF token on the login page ({page.status})"
        answer = self.post(
            "/login/",
            {"csrfmiddlewaretoken": token.group(1), "username": username, "password": password},
        )
        assert answer.status == 302, (
            f"logging in as {username} failed: {answer.status}\n{answer.text[:500]}"
        )


def session_cookie_for(user) -> str:
    """A logged-in session for ``user`` stored in the database (what logging in creates), so
    that many browsers can be logged in without paying for password hashing each time."""
    from django.test import Client

    client = Client()
    client.force_login(user)
    return client.cookies[settings.SESSION_COOKIE_NAME].value


def logged_in(base_url: str, user) -> HttpSession:
    """An ``HttpSession`` logged in as ``user``, with its CSRF cookie (from a first page)."""
    browser = HttpSession(
        base_url, cookies={settings.SESSION_COOKIE_NAME: session_cookie_for(user)}
    )
    page = browser.get("/")
    assert page.status == 200 and "csrftoken" in browser.cookies, (
        f"home page answered {page.status}"
    )
    return browser
