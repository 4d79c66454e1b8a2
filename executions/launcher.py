"""Starts a step's script isolated from the worker, and ends every process it started.

A step is untrusted code: a pipeline author of one project must not read the worker's secrets
(its environment: DATABASE_URL, SECRET_KEY), the database file, the broker's folder, another
step's files, or leave processes behind. The mode is chosen once per worker process
(``STAGELINE_STEP_ISOLATION``, shown in the worker's start-up line; docs/security.md):

- ``sandbox`` (bubblewrap): the script runs in its own PID, IPC and mount namespaces: no worker
  process is visible, the system folders are read-only, /tmp is private, the step's working
  directory is the only writable place, and var/ and the project checkout do not exist there.
  When the worker runs as root the sandbox is started as the step user. The step ends with its
  namespace: every process it started is killed by the kernel, ``setsid`` or not.
- ``other-user`` (root, no bubblewrap): the script runs as ``STAGELINE_STEP_USER`` under a group
  leader; var/ is closed to that user, the step's working directory is its own.
- ``same-user`` (neither): the script runs as the worker's user under a group leader. The worker
  is made non-dumpable (its /proc files are root's), which hides its environment, but every file
  the worker's user can read is readable by the step. A loud warning at start-up.

Outside the sandbox, processes that left the step's process group (``setsid``, a double fork)
are re-parented to the worker (a child subreaper) and killed when the step ends.
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
import logging
import os
import pwd
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

log = logging.getLogger(__name__)

KILL_GRACE_SECONDS = 3
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36
SANDBOX_WORKDIR = Path("/step")  # where the sandbox shows the step's working directory
SANDBOX_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Mounted read-only in the sandbox (a symlink stays a symlink): enough for bash and common tools.
SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")
# What of /etc a step never needs and may not read (masked with an empty file or folder).
ETC_SECRETS = (
    "/etc/shadow",
    "/etc/shadow-",
    "/etc/gshadow",
    "/etc/gshadow-",
    "/etc/sudoers",
    "/etc/sudoers.d",
    "/etc/ssh",
    "/etc/ssl/private",
    "/etc/stageline",
)


class Isolation(StrEnum):
    SANDBOX = "sandbox"
    OTHER_USER = "other-user"
    SAME_USER = "same-user"


CHOICES = ("auto", *Isolation)

# The step's process group is led by a small bash that runs the script and, when told to stop
# (SIGTERM: an abort, a timeout, or the death of the worker that started it), kills the whole
# group at once. ``$1`` is the worker's pid: if the worker died before the death signal was
# armed, the leader has another parent already and stops at once. The script runs in a subshell
# (``set -e``, ``$0`` its path): a fork, ~1 ms cheaper than a second bash. Not used in the
# sandbox, whose namespace does all of this.
GROUP_LEADER = (
    '[ "$PPID" = "$1" ] || exit 143; '
    'trap "trap - TERM; kill -KILL 0" TERM; ( set -e --; . "$0" ) & wait $!'
)
BASH = ["bash", "--noprofile", "--norc"]


@dataclass(frozen=True)
class StepUser:
    name: str
    uid: int
    gid: int


@dataclass(frozen=True)
class Launcher:
    """How this worker starts steps. ``user``: who steps run as when that is not the worker."""

    mode: Isolation
    user: StepUser | None = None
    bwrap: str | None = None
    setpriv: str | None = shutil.which("setpriv")
    shared_dirs: tuple[Path, ...] = ()
    notes: tuple[str, ...] = field(default=())
    reuse: bool = False  # sandbox: one long-lived sandbox per worker thread (``Sandbox``)
    network: bool = True  # sandbox: False = STAGELINE_STEP_NETWORK=none (loopback only)

    # --- what the worker says at start-up ------------------------------------------------------

    def describe(self) -> str:
        who = f"as {self.user.name} (uid {self.user.uid})" if self.user else "as the worker's user"
        if self.mode == Isolation.SANDBOX:
            text = (
                f"sandbox: bubblewrap ({self.bwrap}), {who}, own PID/IPC/mount"
                f"{'' if self.network else '/network'} namespaces, "
                "private /tmp, only the step's working directory writable, "
                + (
                    "one long-lived sandbox per worker process, emptied between steps"
                    if self.reuse
                    else "a new sandbox per step"
                )
            )
        elif self.mode == Isolation.OTHER_USER:
            text = f"other-user: {who}, var/ closed to it, no sandbox"
        else:
            text = (
                "same-user: steps run AS THE WORKER'S USER without a sandbox and can read every "
                "file it can (the SQLite file, var/); install bubblewrap or run the worker as "
                "root (see docs/security.md)"
            )
        return "; ".join((text, *self.notes))

    # --- the step's working directory ----------------------------------------------------------

    def make_workdir(self, prefix: str) -> Path:
        """A fresh working directory for one step, owned by whoever the step runs as."""
        base = Path(settings.STAGELINE_WORK_DIR)
        base.mkdir(parents=True, exist_ok=True)
        if self.reuse:
            workdir = _sandbox_for_this_thread(self).workdir
        else:
            workdir = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
        (workdir / "tmp").mkdir()
        if self.user:
            for path in (workdir, workdir / "tmp"):
                os.chown(path, self.user.uid, self.user.gid)
        return workdir

    def seen(self, path: Path) -> Path:
        """``path`` (in the step's working directory) as the step sees it: the sandbox shows the
        working directory as /step, so that nothing of the worker's layout is visible."""
        return SANDBOX_WORKDIR / path.name if self.mode == Isolation.SANDBOX else path

    def prepare(self) -> None:
        """Start this thread's long-lived sandbox now (a pool process calls it when it starts),
        so that its first step does not wait for it."""
        if self.reuse:
            _sandbox_for_this_thread(self)

    def remove_workdir(self, workdir: Path) -> None:
        """After the step: its working directory goes (a long-lived sandbox's is emptied)."""
        if self.reuse:
            try:
                _empty(workdir)
            except OSError:
                shutil.rmtree(workdir.parent, ignore_errors=True)  # its sandbox was dropped
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    def environment(self, workdir: Path) -> dict[str, str]:
        """The variables every step starts with (the step's own are added by the runner)."""
        path = os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin")
        home = SANDBOX_WORKDIR if self.mode == Isolation.SANDBOX else workdir
        return {
            "PATH": SANDBOX_PATH if self.mode == Isolation.SANDBOX else path,
            "HOME": str(home),
            "TMPDIR": str(home / "tmp"),
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
        }

    # --- starting and ending a step ------------------------------------------------------------

    def command(
        self, script: Path, workdir: Path, helper: bool = False, workdir_fd: int = -1
    ) -> tuple[list[str], Callable[[], None] | None]:
        """The command that runs ``script`` in ``workdir`` (or, with ``helper``, the long-lived
        sandbox's helper), and its ``preexec_fn`` (or None: then Python starts it by vfork,
        ~6 ms cheaper than a fork of a large worker). The sandbox mounts the working directory
        from ``workdir_fd`` (``open_dir``, passed to the child): the step user need not be able
        to reach it by its path."""
        drop = []
        if self.user:
            assert self.setpriv  # checked when the mode was chosen
            drop = [
                self.setpriv,
                f"--reuid={self.user.uid}",
                f"--regid={self.user.gid}",
                "--clear-groups",
            ]
        if self.mode == Isolation.SANDBOX:
            assert self.bwrap
            inside = (
                [SANDBOX_PYTHON, "-I", "-S", "-c", SANDBOX_HELPER]
                if helper
                else [*BASH, "-e", str(self.seen(script))]
            )
            become: list[str] = []
            if drop:
                # A root worker runs bubblewrap as root (it reaches every path, needs no user
                # namespace) and the step becomes the step user inside, with no capability left.
                become = [
                    "--cap-add",
                    "CAP_SETUID",
                    "--cap-add",
                    "CAP_SETGID",
                    *drop,
                    "--inh-caps=-all",
                    "--bounding-set=-all",
                    "--",
                ]
            return [
                *([self.setpriv, "--pdeathsig=KILL"] if self.setpriv else []),
                *sandbox_arguments(self.bwrap, workdir_fd, self.shared_dirs, self.network),
                *become,
                *inside,
            ], None
        leader = [*BASH, "-c", GROUP_LEADER, str(script), str(os.getpid())]
        if self.setpriv:
            return [*(drop or [self.setpriv]), "--pdeathsig=TERM", *leader], None
        return leader, _die_with(os.getpid())

    def start(self, script: Path, workdir: Path, env: dict[str, str]) -> StepProcess | SandboxStep:
        if self.reuse:
            return SandboxStep(_sandbox_for_this_thread(self), script, env)
        fd = open_dir(workdir) if self.mode == Isolation.SANDBOX else -1
        command, preexec = self.command(script, workdir, workdir_fd=fd)
        if self.mode != Isolation.SANDBOX:
            _become_subreaper()
        # Under the lock, so that a step ending in another thread never takes this one's first
        # process for an orphan to kill.
        try:
            with _LOCK:
                proc = subprocess.Popen(
                    command,
                    cwd=workdir,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    preexec_fn=preexec,
                    pass_fds=(fd,) if fd >= 0 else (),
                )
                _LEADERS.add(proc.pid)
        finally:
            if fd >= 0:
                os.close(fd)
        return StepProcess(proc, self.mode)


class StepProcess:
    """A running step: its first process (the sandbox or the group leader) and its output."""

    def __init__(self, proc: subprocess.Popen, mode: Isolation):
        self.proc = proc
        self.pid = proc.pid
        self.mode = mode
        self.ended = False
        assert proc.stdout is not None
        self.stdout = proc.stdout

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    def poll(self) -> int | None:
        return self.proc.poll()

    def wait(self, timeout: float | None = None) -> int:
        return self.proc.wait(timeout)

    def stop(self) -> None:
        """An abort or a timeout: SIGTERM, then SIGKILL what is left after a grace period.
        The sandbox is killed at once: its namespace, and every process in it, ends with it."""
        if self.mode == Isolation.SANDBOX:
            self._kill()
            return
        try:
            os.killpg(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + KILL_GRACE_SECONDS
        while time.monotonic() < deadline and self.proc.poll() is None:
            time.sleep(0.05)
        self._kill()

    def _kill(self) -> None:
        try:
            if self.mode == Isolation.SANDBOX:
                self.proc.kill()
            else:
                os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()

    def end(self) -> None:
        """After the step: no process it started survives (called whatever the outcome)."""
        if self.ended:
            return
        self.ended = True
        if self.proc.poll() is None:
            self._kill()
        with _LOCK:
            _LEADERS.discard(self.pid)
        if self.mode != Isolation.SANDBOX:
            try:
                os.killpg(self.pid, signal.SIGKILL)  # what stayed in the group (background jobs)
            except (ProcessLookupError, PermissionError):
                pass
            _kill_adopted()


# The program that runs inside a long-lived sandbox (the system's python3, standard library
# only) and starts the steps sent to it: one step at a time, each in its own session; when the
# step's script ends (or the worker says "kill") it kills every other process of the sandbox
# (``kill(-1)``: all but init and itself), empties /tmp, /var/tmp and /dev/shm, and answers
# with the exit code. Non-dumpable, so that a step (the same user) cannot trace or read it.
SANDBOX_HELPER = r"""# stageline sandbox helper
import ctypes, json, os, select, shutil, signal, socket, sys, time
libc = ctypes.CDLL(None)
libc.prctl(4, 0, 0, 0, 0)
libc.prctl(36, 1, 0, 0, 0)
sock = socket.socket(fileno=int(sys.argv[1]))
me = os.getpid()

def reap():
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if not pid:
            return

def others():
    return [p for p in os.listdir("/proc") if p.isdigit() and int(p) not in (1, me)]

def sweep():
    for _ in range(300):
        try:
            os.kill(-1, signal.SIGKILL)
        except ProcessLookupError:
            pass
        reap()
        if not others():
            return True
        time.sleep(0.01)
    return False

def mount_points():
    with open("/proc/self/mountinfo") as handle:
        return {line.split()[4] for line in handle}

def wipe(folder, keep):
    # Empty folder, never crossing into a mount (a shared folder mounted under /tmp stays).
    clean = True
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return True
    for entry in entries:
        path = entry.path
        if path in keep:
            continue
        if any(point.startswith(path + "/") for point in keep):
            clean = wipe(path, keep) and clean
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                try:
                    shutil.rmtree(path)
                except OSError:
                    unlock(path)
                    shutil.rmtree(path)
            else:
                os.unlink(path)
        except OSError:
            clean = False
    return clean

def unlock(top):
    # Folders the step made unreadable (chmod 0): their owner may open them again.
    os.chmod(top, 0o700)
    for root, folders, _ in os.walk(top):
        for name in folders:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                os.chmod(path, 0o700)

while True:
    try:
        data, fds, _, _ = socket.recv_fds(sock, 1 << 22, 1)
    except OSError:
        break
    if not data:
        break
    request = json.loads(data)
    if "script" not in request:
        continue
    out = fds[0]
    pid = os.fork()
    if pid == 0:
        try:
            os.setsid()
            os.dup2(out, 1)
            os.dup2(out, 2)
            os.dup2(os.open("/dev/null", os.O_RDONLY), 0)
            os.closerange(3, 1 << 16)
            for number in (signal.SIGPIPE, signal.SIGINT, signal.SIGTERM):
                signal.signal(number, signal.SIG_DFL)
            os.chdir("/step")
            os.execve("/bin/bash", ["bash", "--noprofile", "--norc", "-e", request["script"]], request["env"])
        finally:
            os._exit(127)
    os.close(out)
    pidfd = os.pidfd_open(pid)
    status = None
    while status is None:
        ready, _, _ = select.select([sock, pidfd], [], [])
        if sock in ready:
            message = sock.recv(1 << 16)
            if not message:
                sweep()
                raise SystemExit(0)
            try:
                os.kill(-1, signal.SIGKILL)
            except ProcessLookupError:
                pass
        got, code = os.waitpid(pid, os.WNOHANG)
        if got:
            status = code
    os.close(pidfd)
    clean = sweep()
    keep = mount_points()
    for folder in ("/tmp", "/var/tmp", "/dev/shm"):
        clean = wipe(folder, keep) and clean
    code = os.waitstatus_to_exitcode(status)
    sock.send(json.dumps({"exit": code if code >= 0 else 128 - code, "clean": clean}).encode())
"""
SANDBOX_PYTHON = "/usr/bin/python3"


class Sandbox:
    """A long-lived sandbox of one worker process (one per thread that runs steps): bubblewrap
    with ``SANDBOX_HELPER`` inside, its working directory shown as /step. Started at the first
    step, it starts each step in ~1 ms instead of a new sandbox (whose namespaces cost 5-25 ms
    to make and tear down, docs/performance.md); every step still gets an empty /step, /tmp and
    no process of the step before it. A sandbox that could not be cleaned is thrown away."""

    def __init__(self, launcher: Launcher):
        self.folder = Path(
            tempfile.mkdtemp(prefix=f"sandbox-{os.getpid()}-", dir=settings.STAGELINE_WORK_DIR)
        )
        self.workdir = self.folder / "step"
        self.workdir.mkdir()
        if launcher.user:
            for path in (self.folder, self.workdir):
                os.chown(path, launcher.user.uid, launcher.user.gid)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        fd = open_dir(self.workdir)
        command, _ = launcher.command(
            Path(SANDBOX_PYTHON), self.workdir, helper=True, workdir_fd=fd
        )
        try:
            with _LOCK:  # a first process of this process's steps: never an orphan to sweep
                self.proc = subprocess.Popen(
                    [*command, str(theirs.fileno())],
                    cwd=self.workdir,
                    env={"PATH": SANDBOX_PATH, "LANG": "C.UTF-8"},
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    pass_fds=(theirs.fileno(), fd),
                    start_new_session=True,
                )
                _LEADERS.add(self.proc.pid)
        finally:
            theirs.close()
            os.close(fd)
        self.sock = ours
        self.busy = False

    def alive(self) -> bool:
        return self.proc.poll() is None

    def empty_workdir(self) -> None:
        _empty(self.workdir)

    def close(self) -> None:
        """Kill the sandbox (its namespace takes every process in it) and remove its folder."""
        try:
            self.sock.close()
            self.proc.kill()
        except ProcessLookupError:
            pass
        self.proc.wait()
        with _LOCK:
            _LEADERS.discard(self.proc.pid)
        shutil.rmtree(self.folder, ignore_errors=True)


class SandboxStep:
    """A step running in a long-lived ``Sandbox`` (the same interface as ``StepProcess``)."""

    def __init__(self, sandbox: Sandbox, script: Path, env: dict[str, str]):
        self.sandbox = sandbox
        self.pid = sandbox.proc.pid
        self.mode = Isolation.SANDBOX
        self.ended = False
        self.clean = True
        self.returncode: int | None = None
        read, write = os.pipe()
        request = json.dumps({"script": str(SANDBOX_WORKDIR / script.name), "env": env})
        try:
            socket.send_fds(sandbox.sock, [request.encode()], [write])
        except OSError:
            os.close(read)
            raise
        finally:
            os.close(write)
        sandbox.busy = True
        self.stdout = os.fdopen(read, "rb", buffering=0)

    def poll(self) -> int | None:
        if self.returncode is None:
            self._answer(0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None and not self._answer(timeout):
            raise subprocess.TimeoutExpired("sandbox step", timeout or 0)
        assert self.returncode is not None
        return self.returncode

    def _answer(self, timeout: float | None) -> bool:
        ready, _, _ = select.select([self.sandbox.sock], [], [], timeout)
        if not ready:
            return False
        try:
            message = self.sandbox.sock.recv(1 << 16)
        except OSError:
            message = b""
        if not message:  # the helper is gone (killed by the step?): so is the sandbox
            self.returncode, self.clean = -signal.SIGKILL, False
            return True
        answer = json.loads(message)
        self.returncode, self.clean = answer["exit"], answer["clean"]
        return True

    def stop(self) -> None:
        if self.returncode is not None:
            return
        try:
            self.sandbox.sock.send(b'{"kill": true}')
        except OSError:
            pass
        if not self._answer(KILL_GRACE_SECONDS):
            self.returncode, self.clean = -signal.SIGKILL, False

    def end(self) -> None:
        if self.ended:
            return
        self.ended = True
        self.stop()
        self.sandbox.busy = False
        if not self.clean or not self.sandbox.alive():
            _drop_sandbox(self.sandbox)


def _empty(folder: Path) -> None:
    """Remove everything in ``folder`` (also what a step made unreadable), keep the folder."""
    for entry in os.scandir(folder):
        if not entry.is_dir(follow_symlinks=False):
            os.unlink(entry.path)
            continue
        try:
            shutil.rmtree(entry.path)
        except OSError:  # folders made unreadable (chmod 0): their owner opens them again
            os.chmod(entry.path, 0o700)
            for root, folders, _ in os.walk(entry.path):
                for name in folders:
                    if not os.path.islink(os.path.join(root, name)):
                        os.chmod(os.path.join(root, name), 0o700)
            shutil.rmtree(entry.path)


_sandboxes: dict[tuple[int, int, Launcher], Sandbox] = {}


def _sandbox_for_this_thread(launcher: Launcher) -> Sandbox:
    key = (os.getpid(), threading.get_ident(), launcher)  # a launcher's own (tests try several)
    sandbox = _sandboxes.get(key)
    if sandbox is None or not sandbox.alive():
        if sandbox is not None:
            _drop_sandbox(sandbox)
        sandbox = _sandboxes[key] = Sandbox(launcher)
    return sandbox


def _drop_sandbox(sandbox: Sandbox) -> None:
    for key, value in list(_sandboxes.items()):
        if value is sandbox:
            del _sandboxes[key]
    sandbox.close()


def open_dir(path: Path) -> int:
    """A descriptor of the folder ``path`` for bubblewrap's ``--bind-fd``."""
    return os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)


def sandbox_arguments(
    bwrap: str, workdir_fd: int, shared: tuple[Path, ...] = (), network: bool = True
) -> list[str]:
    """bubblewrap's arguments: the system read-only, /etc without its secrets, a private /tmp,
    the working directory (and the configured shared folders) writable, nothing else."""
    args = [
        bwrap,
        "--unshare-pid",
        "--unshare-ipc",
        "--die-with-parent",
        "--new-session",
        *([] if network else ["--unshare-net"]),
    ]
    for path in SYSTEM_PATHS:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    for path in ETC_SECRETS:
        if os.path.isdir(path) and not os.path.islink(path):
            args += ["--tmpfs", path, "--remount-ro", path]
        elif os.path.lexists(path):
            args += ["--ro-bind", "/dev/null", path]
    args += ["--proc", "/proc", "--dev", "/dev"]
    args += ["--perms", "1777", "--tmpfs", "/tmp", "--perms", "1777", "--tmpfs", "/var/tmp"]
    made = {Path("/"), Path("/tmp"), Path("/var"), Path("/var/tmp"), *map(Path, SYSTEM_PATHS)}
    for folder in shared:
        for parent in reversed(folder.parents):  # crossable folders down to the mount point
            if parent not in made:
                args += ["--perms", "0755", "--dir", str(parent)]
                made.add(parent)
        args += ["--bind", str(folder), str(folder)]
    args += ["--bind-fd", str(workdir_fd), str(SANDBOX_WORKDIR), "--chdir", str(SANDBOX_WORKDIR)]
    return args


# --- choosing the mode (once per worker process) ---------------------------------------------

_LOCK = threading.Lock()  # guards _LEADERS (and the spawns that add to it)
_CHOOSING = threading.Lock()  # one choice of the mode per process
_LEADERS: set[int] = set()  # first processes of the steps running in this process
_current: Launcher | None = None
_subreaper_pid = 0


def current() -> Launcher:
    """This process's launcher: chosen at worker start (``configure``), or at the first step."""
    global _current
    with _CHOOSING:
        if _current is None:
            _current = choose(settings.STAGELINE_STEP_ISOLATION, settings.STAGELINE_STEP_USER)
        return _current


def configure(announce: Callable[[str], None] | None = None) -> Launcher:
    """Choose the mode at worker start, say it, and protect the worker's own process.
    An explicit mode that cannot be honoured raises ImproperlyConfigured (start-up stops)."""
    global _current
    with _CHOOSING:
        launcher = _current = choose(
            settings.STAGELINE_STEP_ISOLATION, settings.STAGELINE_STEP_USER
        )
    protect_worker()
    exposed = open_to_steps(launcher)
    if exposed:
        launcher = _current = dataclasses.replace(launcher, notes=(*launcher.notes, *exposed))
    line = f"stageline worker: step isolation = {launcher.describe()}"
    (announce or _to_stderr)(line)
    if launcher.mode == Isolation.SAME_USER or exposed:
        log.warning(line)
    return launcher


def open_to_steps(launcher: Launcher) -> list[str]:
    """What a step could reach over the worker's network without any password: the database or
    the broker on a network address with none set. Said at start-up (the fix is a password, or
    STAGELINE_STEP_NETWORK=none); steps never learn the passwords themselves."""
    if launcher.mode == Isolation.SANDBOX and not launcher.network:
        return []
    found = []
    database = settings.DATABASES["default"]
    host = str(database.get("HOST") or "")
    if (
        "postgresql" in database["ENGINE"]
        and not database.get("PASSWORD")
        and host
        and not host.startswith("/")
    ):
        found.append(
            f"WARNING: the database at {host} has no password in DATABASE_URL, and steps share "
            "the worker's network: if it trusts connections without one, a step can read every "
            "project's data (give it a password, or set STAGELINE_STEP_NETWORK=none)"
        )
    broker = urlsplit(str(settings.CELERY_BROKER_URL or ""))
    if broker.scheme in ("redis", "rediss") and broker.hostname and not broker.password:
        found.append(
            f"WARNING: the broker at {broker.hostname} has no password, and steps share the "
            "worker's network: a step can read and send its messages (give Redis a password, or "
            "set STAGELINE_STEP_NETWORK=none)"
        )
    return found


def _to_stderr(line: str) -> None:
    print(line, file=sys.__stderr__, flush=True)


def choose(wanted: str, step_user: str) -> Launcher:
    wanted = (wanted or "auto").strip().lower()
    if wanted not in CHOICES:
        raise ImproperlyConfigured(
            f"STAGELINE_STEP_ISOLATION must be one of {', '.join(CHOICES)}, not {wanted!r}"
        )
    shared = tuple(Path(p).resolve() for p in settings.STAGELINE_STEP_SHARED_DIRS)
    for path in shared:
        if not path.is_dir():
            raise ImproperlyConfigured(f"STAGELINE_STEP_SHARED_DIRS: {path} is not a folder")
        if _inside(Path(settings.VAR_DIR), path) or _inside(path, Path(settings.VAR_DIR)):
            raise ImproperlyConfigured(
                f"STAGELINE_STEP_SHARED_DIRS: {path} would open var/ ({settings.VAR_DIR}) to steps"
            )
    network = settings.STAGELINE_STEP_NETWORK.strip().lower()
    if network not in ("host", "none"):
        raise ImproperlyConfigured(f"STAGELINE_STEP_NETWORK must be host or none, not {network!r}")
    result = _choose(wanted, step_user, shared, network == "host")
    if network == "none" and result.mode != Isolation.SANDBOX:
        raise ImproperlyConfigured(
            "STAGELINE_STEP_NETWORK=none needs the sandbox, but steps would run in "
            f"{result.mode} mode: {result.describe()}"
        )
    return result


def _choose(wanted: str, step_user: str, shared: tuple[Path, ...], network: bool) -> Launcher:
    root = os.geteuid() == 0
    user = _step_user(step_user) if root else None
    setpriv = shutil.which("setpriv")
    if root and user is None and wanted in ("sandbox", "other-user"):
        raise ImproperlyConfigured(
            f"STAGELINE_STEP_ISOLATION={wanted}: the worker runs as root but the step user "
            f"{step_user!r} does not exist (scripts/start creates it: useradd --system "
            f"--no-create-home --shell /usr/sbin/nologin {step_user})"
        )
    if root and user and not setpriv:
        raise ImproperlyConfigured(
            "the worker runs as root but util-linux's setpriv is missing: it cannot start steps "
            "as the step user"
        )
    if user:
        close_var()
    if wanted in ("auto", "sandbox"):
        bwrap = shutil.which("bwrap")
        problem = _sandbox_problem(bwrap, user, setpriv, shared, network)
        if not problem:
            launcher = Launcher(Isolation.SANDBOX, user, bwrap, setpriv, shared, network=network)
            if not os.path.exists(SANDBOX_PYTHON):
                return launcher
            reusing = dataclasses.replace(launcher, reuse=True)
            problem = _reuse_problem(reusing)
            if not problem:
                return reusing
            log.warning("a new sandbox per step (slower): %s", problem)
            return dataclasses.replace(launcher, notes=(problem,))
        if wanted == "sandbox":
            raise ImproperlyConfigured(f"STAGELINE_STEP_ISOLATION=sandbox, but {problem}")
        log.info("no sandbox for steps: %s", problem)
    if wanted == "other-user" and not root:
        raise ImproperlyConfigured(
            "STAGELINE_STEP_ISOLATION=other-user needs a worker running as root (to switch to "
            f"{step_user!r}); it runs as uid {os.geteuid()}"
        )
    if wanted in ("auto", "other-user") and user:
        blocked = _blocked_way(Path(settings.STAGELINE_WORK_DIR), user)
        if blocked:
            raise ImproperlyConfigured(
                f"steps would run as {user.name} without a sandbox, but {user.name} cannot reach "
                f"STAGELINE_WORK_DIR ({settings.STAGELINE_WORK_DIR}): {blocked} is not crossable "
                "by it; set STAGELINE_WORK_DIR to a folder it can reach, or install bubblewrap"
            )
        return Launcher(Isolation.OTHER_USER, user, None, setpriv, shared)
    notes = ("the worker runs as root, so steps run AS ROOT",) if root else ()
    return Launcher(Isolation.SAME_USER, None, None, setpriv, shared, notes)


def _blocked_way(path: Path, user: StepUser) -> str:
    """The first folder on the way to ``path`` that ``user`` may not cross ("" if none)."""
    for folder in [*reversed(path.resolve().parents), path.resolve()]:
        info = folder.stat()
        if info.st_uid == user.uid:
            allowed = info.st_mode & 0o100
        elif info.st_gid == user.gid:
            allowed = info.st_mode & 0o010
        else:
            allowed = info.st_mode & 0o001
        if not allowed:
            return str(folder)
    return ""


def _inside(parent: Path, path: Path) -> bool:
    return path.resolve() == parent.resolve() or parent.resolve() in path.resolve().parents


def _step_user(name: str) -> StepUser | None:
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return None
    if entry.pw_uid == 0:
        raise ImproperlyConfigured(f"STAGELINE_STEP_USER {name!r} is root: steps must not be")
    return StepUser(name, entry.pw_uid, entry.pw_gid)


def _sandbox_problem(
    bwrap: str | None,
    user: StepUser | None,
    setpriv: str | None,
    shared: tuple[Path, ...],
    network: bool = True,
) -> str:
    """Why bubblewrap cannot run a step here ("" when a probe step ran)."""
    if not bwrap:
        return "bubblewrap (bwrap) is not installed (Debian: apt-get install bubblewrap)"
    probe = Launcher(Isolation.SANDBOX, user, bwrap, setpriv, shared, network=network)
    base = Path(settings.STAGELINE_WORK_DIR)
    base.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="probe-", dir=base) as tmp:
        workdir = Path(tmp)
        if user:
            os.chown(workdir, user.uid, user.gid)
        script = workdir / "probe.sh"
        script.write_text("echo ok > probe.out\n")
        fd = open_dir(workdir)
        command, _ = probe.command(script, workdir, workdir_fd=fd)
        try:
            done = subprocess.run(
                command,
                cwd=workdir,
                env={"PATH": SANDBOX_PATH, "LANG": "C.UTF-8"},
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=30,
                pass_fds=(fd,),
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"bubblewrap could not start a probe step: {exc}"
        finally:
            os.close(fd)
        if done.returncode != 0 or not (workdir / "probe.out").exists():
            said = (done.stderr or done.stdout).decode(errors="replace").strip()[-300:]
            return (
                f"bubblewrap could not start a probe step (exit {done.returncode}: {said}); "
                "user namespaces may be disabled (sysctl kernel.unprivileged_userns_clone=1 or "
                "user.max_user_namespaces > 0)"
            )
    return ""


def _reuse_problem(launcher: Launcher) -> str:
    """Why a long-lived sandbox cannot run steps here ("" when a probe step ran in one)."""
    sandbox = Sandbox(launcher)
    try:
        script = sandbox.workdir / "probe.sh"
        script.write_text("echo ok > probe.out\n")
        step = SandboxStep(sandbox, script, {"PATH": SANDBOX_PATH})
        step.stdout.read()
        code = step.wait(30)
        if code != 0 or not step.clean or not (sandbox.workdir / "probe.out").exists():
            return f"a long-lived sandbox could not run a probe step (exit {code})"
        return ""
    except (OSError, ValueError, subprocess.TimeoutExpired) as exc:
        return f"a long-lived sandbox could not run a probe step: {exc}"
    finally:
        sandbox.close()


def protect_worker() -> None:
    """Make this process non-dumpable: its /proc files (environ, mem) become root's, so that a
    step running as the same user cannot read DATABASE_URL or SECRET_KEY from them. Pool
    processes forked from it inherit this; a step's own exec resets it."""
    _prctl(PR_SET_DUMPABLE, 0)


def close_var() -> None:
    """Close var/ to the step user: var/ (and the folders down to the steps' working directories,
    var/work by default) can be crossed but not listed, and every other entry of var/ (the
    database file, the broker's folder, key files, logs) is the worker user's alone."""
    var = Path(settings.VAR_DIR).resolve()
    work = Path(settings.STAGELINE_WORK_DIR).resolve()
    work.mkdir(parents=True, exist_ok=True)
    on_the_way = {var, work, *(p for p in work.parents if var in p.parents)}
    for path in (var, *var.iterdir()):
        if path in on_the_way:
            os.chmod(path, 0o711)
        elif not path.is_symlink():
            os.chmod(path, path.stat().st_mode & 0o700)
    for path in on_the_way:
        os.chmod(path, 0o711)


# --- process bookkeeping outside the sandbox ---------------------------------------------------


def _prctl(option: int, value: int) -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(option, value, 0, 0, 0) == 0
    except (OSError, AttributeError):  # not Linux
        return False


def _die_with(parent_pid: int) -> Callable[[], None]:
    """A ``preexec_fn`` asking the kernel to SIGTERM the child when the worker dies (SIGKILL
    too); used only where setpriv is missing (it forces a full fork)."""

    def preexec() -> None:
        if not _prctl(PR_SET_PDEATHSIG, signal.SIGTERM):
            return  # not Linux: the reaper still fails the step
        if os.getppid() != parent_pid:  # the worker died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


def _become_subreaper() -> None:
    """Orphans of this process's steps (``setsid``, double forks) come back to it, not to init,
    so that ``_kill_adopted`` finds them. Per process (a fork does not inherit it)."""
    global _subreaper_pid
    if _subreaper_pid != os.getpid():
        _prctl(PR_SET_CHILD_SUBREAPER, 1)
        _subreaper_pid = os.getpid()


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as handle:
                found += [int(child) for child in handle.read().split()]
        except OSError:
            continue
    return found


def _kill_adopted() -> None:
    """Kill and reap this process's children that no running step leads (processes that left
    a finished step's group and were re-parented here), with all their descendants. In a worker
    running several steps at once in threads, they cannot be told apart by step."""
    me = os.getpid()
    for _ in range(50):
        with _LOCK:
            adopted = [pid for pid in _children(me) if pid not in _LEADERS]
        if not adopted:
            return
        stack, victims = list(adopted), []
        while stack:
            pid = stack.pop()
            victims.append(pid)
            stack += _children(pid)
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        for pid in adopted:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
