"""Floods of step output: 50 MB, a line with no newline, binary bytes, ANSI colours, multi-byte
characters and secrets cut by the runner's read boundaries. The log keeps its head and its
tail (the middle is left out past ``STAGELINE_LOG_LIMIT_BYTES`` with a marker), the page
shows both, and the worker's memory stays bounded."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client

from executions.models import Status, StepRun
from executions.runners.shell import TAIL_BYTES
from executions.services import run_pipeline
from tests.helpers.factories import make_pipeline, serial_pipeline, shell_stage
from tests.helpers.runs import log_of, step_of, wait_for, wait_for_status, worker_pid

pytestmark = pytest.mark.integration

FLOOD = r"""
sleep 1
echo "FIRST LINE OF THE LOG"
printf '\033[1;31mbold red\033[0m and \033[32mgreen\033[0m\n'
head -c 5000000 /dev/urandom
printf '\n'
yes "$(printf 'a line in \033[33myellow\033[0m and plain text')" | head -c 20000000
head -c 25000000 /dev/zero | tr '\0' 'x'
printf 'THE-END-OF-THE-LOG'
"""
FLOOD_BYTES = 50_000_000  # about: the exact count depends on the first lines


def rss_kib(pid: int) -> int:
    """Resident memory of a live process, from /proc/PID/status (KiB); 0 when it is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    found = re.search(r"^VmRSS:\s+(\d+) kB", text, re.M)
    return int(found.group(1)) if found else 0


class RssSampler(threading.Thread):
    """Samples a process's RSS ten times a second until stopped."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid = pid
        self.samples: list[int] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            value = rss_kib(self.pid)
            if value:
                self.samples.append(value)
            time.sleep(0.1)


def test_fifty_megabytes_of_output_keep_head_and_tail_and_the_worker_memory_stays_bounded(
    workers, personas
):
    pipeline = make_pipeline(
        personas.project, serial_pipeline("flood", [shell_stage("flood", FLOOD, timeout="5m")])
    )
    execution = run_pipeline(pipeline=pipeline, user=personas.executor, inputs={})
    step = wait_for(
        lambda: (
            StepRun.objects.filter(pk=step_of(execution, "flood").pk, status=Status.RUNNING)
            .exclude(worker="")
            .first()
        ),
        message="the flood step to start",
    )
    sampler = RssSampler(worker_pid(step))
    sampler.start()
    try:
        execution = wait_for_status(execution, Status.SUCCESS, timeout=240)
    finally:
        sampler.done.set()
        sampler.join()
    step.refresh_from_db()
    baseline, peak = sampler.samples[0], max(sampler.samples)
    took = (step.finished_at - step.started_at).total_seconds()
    print(
        f"flood: {took:.1f}s, worker RSS {baseline // 1024} MiB at the start, peak {peak // 1024} MiB "
        f"(+{(peak - baseline) / 1024:.1f} MiB), {step.log_bytes} bytes stored"
    )

    text = log_of(execution, "flood")
    assert step.log_truncated
    assert text.startswith("FIRST LINE OF THE LOG\n")
    assert "\x1b[1;31mbold red\x1b[0m and \x1b[32mgreen\x1b[0m" in text  # colours kept as they came
    assert "\x1b[33myellow\x1b[0m and plain text" in text
    assert "\x00" not in text  # PostgreSQL text cannot hold NUL: binary NULs are replaced
    assert text.endswith("x" * 1000 + "THE-END-OF-THE-LOG"), (
        "the tail of the log was lost or is out of order"
    )
    assert text.count("the log passed") == 1, "the truncation marker was written more than once"
    assert f"the log passed {settings.STAGELINE_LOG_LIMIT_BYTES} bytes" in text
    left_out = int(re.search(r"\[stageline: (\d+) bytes left out\]", text).group(1))
    assert FLOOD_BYTES - settings.STAGELINE_LOG_LIMIT_BYTES - TAIL_BYTES - left_out < 100_000
    # Each byte read gives at most one character (binary bytes become U+FFFD).
    assert len(text) < settings.STAGELINE_LOG_LIMIT_BYTES + TAIL_BYTES + 1000
    # 50 MB went through the worker; it never held more than a few MB of them.
    assert peak - baseline < 32 * 1024, (
        f"the worker's memory grew by {(peak - baseline) // 1024} MiB"
    )

    client = Client()
    client.force_login(personas.viewer)
    page = client.get(f"/executions/{execution.pk}/?step={step.pk}")
    html = page.content.decode()
    assert page.status_code == 200
    assert "FIRST LINE OF THE LOG" in html and "THE-END-OF-THE-LOG" in html
    assert "The middle was left out" in html


def test_multibyte_characters_cut_by_a_read_boundary_are_stored_whole(workers, personas):
    # 300 000 euro signs (3 bytes each) on one line: the runner reads 64 KiB at a time.
    script = "head -c 300000 /dev/zero | tr '\\0' 'x' | sed 's/x/€/g'\necho"
    pipeline = make_pipeline(
        personas.project, serial_pipeline("euros", [shell_stage("euros", script)])
    )
    execution = wait_for_status(
        run_pipeline(pipeline=pipeline, user=personas.executor, inputs={}), Status.SUCCESS
    )
    text = log_of(execution, "euros")
    assert "\ufffd" not in text, (
        f"{text.count(chr(0xFFFD))} characters were broken where a read ended"
    )
    assert text.count("€") == 300_000


def test_a_secret_cut_by_a_read_boundary_is_still_masked(workers, personas):
    secret = "S3cret-" + "k" * 33  # 40 characters, printed 20 000 times on one 2 MB line
    script = (
        'yes "' + "x" * 60 + '<+pipeline.variables.token>" | tr -d "\\n" | head -c 2000000\necho'
    )
    pipeline = make_pipeline(
        personas.project,
        serial_pipeline(
            "leaky",
            [shell_stage("leaky", script)],
            variables="- {name: token, type: Secret, value: <+input>}",
        ),
    )
    execution = run_pipeline(pipeline=pipeline, user=personas.executor, inputs={"token": secret})
    execution = wait_for_status(execution, Status.SUCCESS)
    text = log_of(execution, "leaky")
    assert text.count("***") == 20_000
    pieces = [piece for piece in (secret[:20], secret[20:]) if piece in text]
    assert not pieces, "parts of the secret are in the stored log: a chunk boundary cut it in two"
