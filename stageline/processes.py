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


# What the step launcher (executions/launcher.py) puts between the worker and a step's script
# in the sandbox: bubblewrap (twice: the sandbox and its init) and, in a long-lived sandbox,
# its helper, whose command line carries this mark.
SANDBOX_HELPER_MARK = "stageline sandbox helper"


def step_processes(pid: int) -> list[int]:
    """The live processes of the step whose first process is ``pid`` (``StepRun.pid``): in a
    sandbox (``pid`` is bubblewrap), its descendants but bubblewrap and the sandbox's helper;
    otherwise the process group ``pid`` leads."""
    if not command_line(pid).split(" ", 1)[0].endswith("bwrap"):
        return live_processes_in_group(pid)
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        rest = _stat(int(stat.parent.name))
        if rest is not None and rest[0] != "Z":
            children.setdefault(int(rest[1]), []).append(int(stat.parent.name))
    found: list[int] = []
    stack = list(children.get(pid, []))
    while stack:
        child = stack.pop()
        stack += children.get(child, [])
        line = command_line(child)
        if not line.split(" ", 1)[0].endswith("bwrap") and SANDBOX_HELPER_MARK not in line:
            found.append(child)
    return found
