"""``manage.py`` in a fresh process with a chosen environment: settings are read at start-up,
so that is where a setting's effect (or its refusal) shows."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    """Run ``manage.py ARGS`` with the test's environment plus ``env``."""
    dropped = {
        "DEBUG",
        "STAGELINE_HTTPS",
        "SECRET_KEY",
        "DJANGO_ALLOW_ASYNC_UNSAFE",
    }  # set by the browser tests
    full_env = {k: v for k, v in os.environ.items() if k not in dropped}
    full_env.update(env)
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
