"""The ``ShellScript`` step: bash in a fresh working directory, its output stored as it comes.

- The script's expressions become ``${SL_…}`` environment references (see
  ``executions.context``); the step's environment is built from scratch (the worker's own
  variables, such as DATABASE_URL, are not passed on).
- ``executions.launcher`` starts the script isolated from the worker (a sandbox, or
  another user) and, when the step ends whatever the outcome, ends every process it started.
- Output is read in small pieces, masked (secrets → ``***``), and appended to the step's log
  a few times a second; each attempt of the step (a failure strategy's retry, SPEC §9) has a
  log of its own (``LogChunk.attempt``: the claimed step's ``attempts``). Past ``STAGELINE_LOG_LIMIT_BYTES`` the middle is dropped: the head and
  the last ``TAIL_BYTES`` are kept, with a marker saying how much was left out.
- ``key=value`` lines (and ``key<<DELIM`` blocks) written to ``$STAGELINE_OUTPUT`` become the
  step's outputs (``parse_outputs``).
"""

from __future__ import annotations

import codecs
import os
import re
import selectors
import subprocess
import time
from collections import deque
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import F

from executions import launcher as launchers
from executions.context import build_context
from executions.launcher import SandboxStep, StepProcess
from executions.models import LogChunk, Status, StepRun
from executions.runners.base import Lease, StepResult, remove_later, with_db_retry
from stageline.masking import StreamMasker, mask

FLUSH_SECONDS = 0.25
READ_SIZE = 65536
TAIL_BYTES = 256 * 1024
OUTPUT_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
OUTPUT_HEREDOC_RE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)<<(\S+)$")
MAX_OUTPUT_FILE = 4 * 1024 * 1024
MAX_OUTPUT_VALUE = 64 * 1024


class LogWriter:
    """Appends masked output to a step's log in chunks; keeps head and tail past the limit.

    Secrets are masked in the bytes as they arrive (``stageline.masking.StreamMasker``: a few
    bytes wait for the next read, so that a secret cut by a read boundary is masked all the same).
    The head is decoded incrementally and every cut is made where a character starts, so that
    a multi-byte character cut by a boundary is stored whole.
    """

    def __init__(self, step: StepRun, secrets: list[str], seq: int = 0):
        """``seq``: the number of chunks of this attempt stored already (none for a freshly
        claimed step: each claim is a new attempt, whose log starts empty)."""
        self.step_id = step.pk
        self.attempt = max(step.attempts, 1)
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
                LogChunk.objects.create(
                    step_run_id=self.step_id, attempt=self.attempt, seq=self.seq, text=text
                )
                fields: dict[str, object] = {"log_bytes": F("log_bytes") + size}
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


def parse_outputs(raw: bytes, secrets: list[str]) -> tuple[dict[str, str], list[str]]:
    """The outputs a step wrote to ``$STAGELINE_OUTPUT``, and what was wrong with the file.

    A line ends at ``\\n`` and nowhere else (``\\r``, U+2028 and the other characters that
    ``str.splitlines`` breaks on belong to the value), so a value holding one of them cannot
    start a line of its own. ``key=value`` is a one-line value; a multi-line value is written as
    ``key<<DELIM``, its lines, then a line that is exactly ``DELIM`` (as in GitHub Actions'
    ``GITHUB_OUTPUT``). A later line for the same key replaces the earlier value.
    """
    outputs: dict[str, str] = {}
    problems: list[str] = []
    lines = raw.decode("utf-8", errors="replace").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    index = 0
    while index < len(lines):
        line = lines[index]
        index += 1
        heredoc = OUTPUT_HEREDOC_RE.match(line)
        if heredoc:
            key, delimiter = heredoc.groups()
            try:
                end = lines.index(delimiter, index)
            except ValueError:
                problems.append(f"output {key}: no line {delimiter!r} ends its value; ignored")
                break
            value = "\n".join(lines[index:end])
            index = end + 1
        else:
            key, sep, value = line.partition("=")
            key = key.strip()
            if not (sep and OUTPUT_KEY_RE.match(key)):
                continue
        outputs[key] = mask(value[:MAX_OUTPUT_VALUE], secrets)
    return outputs, problems


def _read_outputs(path: Path, secrets: list[str]) -> tuple[dict[str, str], list[str]]:
    if not path.exists():
        return {}, []
    with path.open("rb") as handle:
        return parse_outputs(handle.read(MAX_OUTPUT_FILE), secrets)


def run(step: StepRun, step_spec, stage, execution) -> StepResult:
    context = build_context(execution)
    secrets = context.secret_values()
    script, expr_env = context.render_script(step_spec.script, stage)
    launcher = launchers.current()
    workdir = launcher.make_workdir(f"e{execution.pk}-{stage.identifier}-{step.identifier}-")
    output_file = workdir / ".stageline-output"
    script_file = workdir / ".stageline-script.sh"
    script_file.write_text(script)
    env = launcher.environment(workdir)
    env.update(
        {
            "STAGELINE_OUTPUT": str(launcher.seen(output_file)),
            "STAGELINE_EXECUTION_ID": str(execution.pk),
            "STAGELINE_SEQUENCE_ID": str(execution.sequence),
            "STAGELINE_PIPELINE": context.spec.identifier,
            "STAGELINE_STAGE": stage.identifier,
            "STAGELINE_STEP": step.identifier,
        }
    )
    env.update(context.stage_environment(stage))
    env.update(expr_env)
    for key, value in step_spec.env:
        env[key] = context.render(value, stage)
    env = {k: v.replace("\x00", "") for k, v in env.items()}

    writer = LogWriter(step, secrets)
    lease = Lease(step)
    proc = launcher.start(script_file, workdir, env)
    writer.pid = lease.pid = proc.pid
    deadline = time.monotonic() + step_spec.timeout
    selector = selectors.DefaultSelector()
    fd = proc.stdout.fileno()
    os.set_blocking(fd, False)
    selector.register(fd, selectors.EVENT_READ)
    try:
        result = _supervise(
            proc, fd, selector, writer, lease, step_spec, deadline, output_file, secrets
        )
        result.pid = proc.pid
        return result
    finally:
        # Whatever the outcome (success, failure, timeout, abort, a database outage that outlived
        # its retries, a worker shutdown), no process of the step outlives its supervision.
        proc.end()
        selector.close()
        proc.stdout.close()
        if launcher.reuse:
            launcher.remove_workdir(workdir)  # the long-lived sandbox's /step: the next step's
        else:
            remove_later(workdir)  # off the critical path (runners.base)


def _supervise(
    proc: StepProcess | SandboxStep,
    fd,
    selector,
    writer,
    lease,
    step_spec,
    deadline,
    output_file,
    secrets,
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
        proc.stop()
    else:
        # Output closed; the process may still be exiting (or a background child holds on).
        while True:
            try:
                # returns within a millisecond of the exit, not at the next tick
                proc.wait(timeout=0.05)
                break
            except subprocess.TimeoutExpired:
                pass
            if time.monotonic() > deadline:
                outcome = Status.EXPIRED
                proc.stop()
                break
            if not lease.still_running():
                outcome = Status.ABORTED
                proc.stop()
                break
    # Leftover processes (daemons started by the script, detached or not) do not outlive the step.
    proc.end()
    try:
        while data := os.read(fd, READ_SIZE):
            writer.feed(data)
    except (BlockingIOError, OSError):
        pass
    if outcome == Status.EXPIRED:
        writer.note(f"timed out after {step_spec.timeout}s: the step's processes were killed")
    elif outcome == Status.ABORTED:
        writer.note("aborted: the step's processes were killed")
    outputs, problems = _read_outputs(output_file, secrets)
    for problem in problems:
        writer.note(problem)
    writer.flush(final=True)

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
