"""The ``ShellScript`` step: bash in a fresh working directory, its output stored as it comes.

- The script's expressions become ``${SL_…}`` environment references (see
  ``executions.context``); the step's environment is built from scratch (the worker's own
  variables, such as DATABASE_URL, are not passed on).
- bash runs in its own session, so a timeout or an abort kills its whole process group.
- Output is read in small pieces, masked (secrets → ``***``), and appended to the step's log
  a few times a second. Past ``STAGELINE_LOG_LIMIT_BYTES`` the middle is dropped: the head and
  the last ``TAIL_BYTES`` are kept, with a marker saying how much was left out.
- ``key=value`` lines written to ``$STAGELINE_OUTPUT`` become the step's outputs.
"""

from __future__ import annotations

import codecs
import ctypes
import os
import re
import selectors
import shutil
import signal
import subprocess
import tempfile
import time
from collections import deque
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import F

from executions.context import build_context
from executions.models import LogChunk, Status, StepRun
from executions.runners.base import Lease, StepResult, remove_later, with_db_retry
from stageline.masking import StreamMasker, mask

FLUSH_SECONDS = 0.25
READ_SIZE = 65536
TAIL_BYTES = 256 * 1024
KILL_GRACE_SECONDS = 3
OUTPUT_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_OUTPUT_VALUE = 64 * 1024


class LogWriter:
    """Appends masked output to a step's log in chunks; keeps head and tail past the limit.

    Secrets are masked in the bytes as they arrive (``stageline.masking.StreamMasker``: a few
    bytes wait for the next read, so that a secret cut by a read boundary is masked all the same).
    The head is decoded incrementally and every cut is made where a character starts, so that
    a multi-byte character cut by a boundary is stored whole.
    """

    def __init__(self, step: StepRun, secrets: list[str], seq: int = 0):
        """``seq``: the number of chunks stored already (none for a freshly claimed step: a
        step is claimed once, from QUEUED, and never returns there)."""
        self.step_id = step.pk
        self.masker = StreamMasker(secrets)
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.seq = seq
        self.pending = b""
        self.stored = 0
        self.limit = settings.STAGELINE_LOG_LIMIT_BYTES
        self.tail: deque[bytes] = deque()
        self.tail_size = 0
        self.dropped = 0
        self.truncated = False
        self.last_flush = time.monotonic()
        self.pid: int | None = None  # the step's process, stored with the first piece of output
        self.pid_stored = False

    def feed(self, data: bytes, final: bool = False) -> None:
        data = self.masker.feed(data, final)
        if self.truncated:
            self._to_tail(data)
            return
        self.pending += data
        if len(self.pending) >= READ_SIZE or time.monotonic() - self.last_flush >= FLUSH_SECONDS:
            self.flush()

    def _to_tail(self, data: bytes) -> None:
        if not data:
            return
        self.tail.append(data)
        self.tail_size += len(data)
        while self.tail_size - len(self.tail[0]) >= TAIL_BYTES:
            gone = self.tail.popleft()
            self.tail_size -= len(gone)
            self.dropped += len(gone)

    def flush(self, final: bool = False, whole_lines: bool = True) -> None:
        if final:
            self.feed(b"", final=True)  # what waited for the rest of a possible secret
        self.last_flush = time.monotonic()
        if self.truncated:
            if final:
                self._write_tail()
            return
        data, self.pending = self.pending, b""
        if not final and whole_lines:
            # Hold back a partial line (up to 4 KiB), so that chunks end at line ends.
            cut = data.rfind(b"\n") + 1
            if 0 < cut < len(data) and len(data) - cut < 4096:
                data, self.pending = data[:cut], data[cut:]
        room = self.limit - self.stored
        if len(data) <= room:
            self._write(data)
            if final:
                self._store(self.decoder.decode(b"", final=True), 0)
            return
        cut = room
        while 0 < cut < len(data) and data[cut] & 0xC0 == 0x80:  # not inside a character
            cut -= 1
        self._write(data[:cut])
        self._store(self.decoder.decode(b"", final=True), 0)
        self.truncated = True
        self._store(
            f"\n[stageline: the log passed {self.limit} bytes; the middle is left out and "
            f"the last {TAIL_BYTES // 1024} KiB are kept]\n",
            0,
        )
        self._to_tail(data[cut:] + self.pending)  # the held-back partial line comes after
        self.pending = b""
        if final:
            self._write_tail()

    def _write_tail(self) -> None:
        tail = b"".join(self.tail)
        start = max(0, len(tail) - TAIL_BYTES)
        while 0 < start < len(tail) and tail[start] & 0xC0 == 0x80:
            start += 1
        self.dropped += start
        self._store(f"[stageline: {self.dropped} bytes left out]\n", 0)
        self._store(tail[start:].decode("utf-8", errors="replace"), len(tail) - start)
        self.tail.clear()
        StepRun.objects.filter(pk=self.step_id).update(log_truncated=True)

    def _write(self, data: bytes) -> None:
        """Store the next piece of the head (masked bytes, in order)."""
        self._store(self.decoder.decode(data), len(data))
        self.stored += len(data)

    def _store(self, text: str, size: int) -> None:
        text = text.replace("\x00", "\ufffd")
        if not text:
            return

        def store() -> None:
            with transaction.atomic():
                LogChunk.objects.create(step_run_id=self.step_id, seq=self.seq, text=text)
                fields = {"log_bytes": F("log_bytes") + size}
                if self.pid and not self.pid_stored:
                    fields["pid"] = self.pid
                StepRun.objects.filter(pk=self.step_id).update(**fields)

        # Across a short database outage the output waits (the step blocks on its full pipe).
        with_db_retry(store, seconds=60)
        self.seq += 1
        self.pid_stored = self.pid_stored or bool(self.pid)

    def note(self, text: str) -> None:
        self.feed(b"", final=True)
        self.flush(whole_lines=False)
        self._store(f"[stageline] {text}\n", 0)


# The step's process group is led by a small bash that runs the script and, when told to stop
# (SIGTERM: an abort, a timeout, or the death of the worker that started it), kills the whole
# group at once, so that no process of a step outlives its worker. ``$1`` is the worker's pid:
# if the worker died before the death signal was armed, the leader has another parent already
# and stops at once. The script runs in a subshell of the leader (``set -e``, no arguments,
# ``$0`` its path, default traps): a fork, ~1 ms cheaper than starting a second bash.
GROUP_LEADER = (
    '[ "$PPID" = "$1" ] || exit 143; '
    'trap "trap - TERM; kill -KILL 0" TERM; ( set -e --; . "$0" ) & wait $!'
)
PR_SET_PDEATHSIG = 1
# util-linux's setpriv arms the death signal and execs the leader, so Python can start the step
# with vfork (a fork of a large worker costs ~6 ms more: a preexec_fn forces a full fork).
SETPRIV = shutil.which("setpriv")


def _die_with(parent_pid: int):
    """A ``preexec_fn`` asking the kernel to SIGTERM the child when the worker dies (SIGKILL
    too); used only where setpriv is missing."""

    def preexec() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        except (OSError, AttributeError):  # not Linux: the reaper still fails the step
            return
        if os.getppid() != parent_pid:  # the worker died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


def _leader_command(script_file: Path) -> tuple[list[str], object]:
    """The command that starts the step's group leader, and its ``preexec_fn`` (or None)."""
    command = [
        "bash",
        "--noprofile",
        "--norc",
        "-c",
        GROUP_LEADER,
        str(script_file),
        str(os.getpid()),
    ]
    if SETPRIV:
        return [SETPRIV, "--pdeathsig", "TERM", *command], None
    return command, _die_with(os.getpid())


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGTERM the step's whole process group, then SIGKILL whatever is left."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + KILL_GRACE_SECONDS
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _read_outputs(path: Path, secrets: list[str]) -> dict[str, str]:
    outputs: dict[str, str] = {}
    if not path.exists():
        return outputs
    with path.open("rb") as handle:
        raw = handle.read(4 * 1024 * 1024)
    for line in raw.decode("utf-8", errors="replace").splitlines():
        key, sep, value = line.partition("=")
        key = key.strip()
        if sep and OUTPUT_KEY_RE.match(key):
            outputs[key] = mask(value[:MAX_OUTPUT_VALUE], secrets)
    return outputs


def run(step: StepRun, step_spec, stage, execution) -> StepResult:
    context = build_context(execution)
    secrets = context.secret_values()
    script, expr_env = context.render_script(step_spec.script, stage)
    base = Path(settings.STAGELINE_WORK_DIR)
    base.mkdir(parents=True, exist_ok=True)
    workdir = Path(
        tempfile.mkdtemp(prefix=f"e{execution.pk}-{stage.identifier}-{step.identifier}-", dir=base)
    )
    output_file = workdir / ".stageline-output"
    script_file = workdir / ".stageline-script.sh"
    script_file.write_text(script)
    (workdir / "tmp").mkdir()
    env = {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "HOME": str(workdir),
        "TMPDIR": str(workdir / "tmp"),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "STAGELINE_OUTPUT": str(output_file),
        "STAGELINE_EXECUTION_ID": str(execution.pk),
        "STAGELINE_SEQUENCE_ID": str(execution.sequence),
        "STAGELINE_PIPELINE": context.spec.identifier,
        "STAGELINE_STAGE": stage.identifier,
        "STAGELINE_STEP": step.identifier,
    }
    env.update(context.stage_environment(stage))
    env.update(expr_env)
    for key, value in step_spec.env:
        env[key] = context.render(value, stage)
    env = {k: v.replace("\x00", "") for k, v in env.items()}

    writer = LogWriter(step, secrets)
    lease = Lease(step)
    command, preexec = _leader_command(script_file)
    proc = subprocess.Popen(
        command,
        cwd=workdir,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=preexec,
    )
    writer.pid = lease.pid = proc.pid
    deadline = time.monotonic() + step_spec.timeout
    selector = selectors.DefaultSelector()
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    os.set_blocking(fd, False)
    selector.register(fd, selectors.EVENT_READ)
    try:
        result = _supervise(
            proc, fd, selector, writer, lease, step_spec, deadline, output_file, secrets
        )
        result.pid = proc.pid
        return result
    except BaseException:
        # Whatever went wrong here (a database outage that outlived its retries, a worker shutdown),
        # the step's processes must not outlive the supervision.
        _kill_group(proc)
        raise
    finally:
        selector.close()
        proc.stdout.close()
        remove_later(workdir)  # off the critical path (runners.base)


def _supervise(
    proc, fd, selector, writer, lease, step_spec, deadline, output_file, secrets
) -> StepResult:
    outcome: str | None = None
    eof = False
    while not eof:
        wait = 0.2
        if writer.pending:  # output waits to be stored: wake up when its flush is due
            wait = min(wait, max(0.01, FLUSH_SECONDS - (time.monotonic() - writer.last_flush)))
        for _key, _ in selector.select(timeout=wait):
            try:
                data = os.read(fd, READ_SIZE)
            except BlockingIOError:
                continue
            if not data:
                eof = True
                break
            writer.feed(data)
        if writer.pending and time.monotonic() - writer.last_flush >= FLUSH_SECONDS:
            writer.flush()
        if time.monotonic() > deadline:
            outcome = Status.EXPIRED
            break
        if not lease.still_running():
            outcome = Status.ABORTED
            break
    if outcome:
        _kill_group(proc)
    else:
        # Output closed; the process may still be exiting (or a background child holds on).
        while True:
            try:
                proc.wait(
                    timeout=0.05
                )  # returns within a millisecond of the exit, not at the next tick
                break
            except subprocess.TimeoutExpired:
                pass
            if time.monotonic() > deadline:
                outcome = Status.EXPIRED
                _kill_group(proc)
                break
            if not lease.still_running():
                outcome = Status.ABORTED
                _kill_group(proc)
                break
    # Leftover processes of the group (daemons started by the script) do not outlive the step.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        while data := os.read(fd, READ_SIZE):
            writer.feed(data)
    except (BlockingIOError, OSError):
        pass
    if outcome == Status.EXPIRED:
        writer.note(f"timed out after {step_spec.timeout}s: the step's processes were killed")
    elif outcome == Status.ABORTED:
        writer.note("aborted: the step's processes were killed")
    writer.flush(final=True)
    outputs = _read_outputs(output_file, secrets)

    code = proc.returncode
    if outcome == Status.EXPIRED:
        return StepResult(
            status=Status.EXPIRED, exit_code=code, error=f"timed out after {step_spec.timeout}s"
        )
    if outcome == Status.ABORTED:
        return StepResult(status=Status.ABORTED, exit_code=code, error="aborted")
    if code != 0:
        return StepResult(
            status=Status.FAILED, exit_code=code, outputs=outputs, error=f"exit code {code}"
        )
    return StepResult(status=Status.SUCCESS, exit_code=0, outputs=outputs)
