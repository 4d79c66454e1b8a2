"""Looking at live processes (to prove that a killed step left nothing behind)."""

from __future__ import annotations

from pathlib import Path


def live_processes_in_group(pgid: int) -> list[int]:
    """Pids of processes in process group ``pgid`` that are not zombies."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ... ; comm may contain spaces, so split after the last ')'
        rest = text[text.rfind(")") + 2 :].split()
        state, pgrp = rest[0], int(rest[2])
        if pgrp == pgid and state != "Z":
            found.append(int(text.split(" ", 1)[0]))
    return found
