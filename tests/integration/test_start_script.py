"""`bash scripts/start` (the README's first command) on a fresh embedded default: it prints one
clear block (URL, users, how to stop) and no per-request access lines, the product answers, and
Ctrl-C stops every process it started within 3 seconds."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVER_ENV = (
    "DATABASE_URL",
    "CELERY_BROKER_URL",
    "STAGELINE_TEST_WORKERS",
    "DJANGO_SETTINGS_MODULE",
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _group_alive(pgid: int) -> list[str]:
    alive = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            alive.append(f"{entry.name}: {cmdline[:80]}")
    return alive


@pytest.mark.integration
def test_start_prints_one_block_answers_and_stops_within_3_seconds(tmp_path):
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in SERVER_ENV}
    env.update(STAGELINE_VAR_DIR=str(tmp_path / "var"), STAGELINE_PORT=str(port), CI="")
    out = tmp_path / "start.log"
    with out.open("w") as log:
        proc = subprocess.Popen(
            ["bash", "scripts/start"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 240
        while "Stageline is running at" not in out.read_text():
            assert proc.poll() is None, f"scripts/start ended early:\n{out.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"not running after 240 s:\n{out.read_text()}"
            time.sleep(0.5)
        time.sleep(1)  # the block has been printed: the product answers
        page = urllib.request.urlopen(f"http://127.0.0.1:{port}/login/", timeout=10)
        assert page.status == 200
        urllib.request.urlopen(f"http://127.0.0.1:{port}/login/?again=1", timeout=10)
        time.sleep(0.5)
        text = out.read_text()
        assert f"http://127.0.0.1:{port}/" in text and "Ctrl-C" in text
        assert "admin, executor, viewer or approver" in text
        assert "GET /login/" not in text, "per-request access lines are printed"

        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in the terminal sends
        signalled = time.monotonic()
        while _group_alive(proc.pid) and time.monotonic() - signalled < 10:
            time.sleep(0.05)
        took = time.monotonic() - signalled
        assert not _group_alive(proc.pid), (
            f"still running 10 s after Ctrl-C: {_group_alive(proc.pid)}"
        )
        assert took <= 3.0, f"Ctrl-C took {took:.1f} s to stop everything"
        assert "== stopping" in out.read_text()
    finally:
        if _group_alive(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
