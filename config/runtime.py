"""Process start-up tuning shared by the web and worker processes."""

from __future__ import annotations

import gc


def freeze_startup_heap() -> None:
    """Move every object alive now (Django, the apps, settings: what lives as long as the
    process) to the garbage collector's permanent generation, so that full collections stop
    scanning it again and again. Measured on the retry submit (docs/performance.md): full
    collections over that heap added 20–50 ms to ~7 % of requests (p95 77 → 43 ms)."""
    gc.freeze()
