"""Looking at live processes through /proc: whether one lives, its parent, its process group,
its command line. ``stageline.workers`` uses them to end workers a crashed run left behind and
to tell which worker a process belongs to; the tests use them to prove that a killed step left
nothing behind."""

from __future__ import annotations

from pathlib import Path


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name: state, ppid, pgrp, ...; None if gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    # pid (comm) state ppid pgrp ... ; comm may contain spaces, so split after the last ')'
    return text[text.rfind(")") + 2 :].split()


def live_processes_in_group(pgid: int) -> list[int]:
    """Pids of processes in process group ``pgid`` that are not zombies."""
    found: list[int] = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        pid = int(stat.parent.name)
        rest = _stat(pid)
        if rest is None:
            continue
        state, pgrp = rest[0], int(rest[2])
        if pgrp == pgid and state != "Z":
            found.append(pid)
    return found


def is_alive(pid: int) -> bool:
    """Whether ``pid`` is a running (not zombie) process."""
    rest = _stat(pid)
    return rest is not None and rest[0] != "Z"


def parent_of(pid: int) -> int | None:
    rest = _stat(pid)
    return int(rest[1]) if rest is not None else None


def process_group_of(pid: int) -> int | None:
    rest = _stat(pid)
    return int(rest[2]) if rest is not None else None


def command_line(pid: int) -> str:
    """The process's command line, arguments joined by spaces ("" if it is gone)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()
