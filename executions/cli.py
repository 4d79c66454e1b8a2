"""What the execution commands share beyond ``pipelines.cli``: following an execution."""

from __future__ import annotations

import time
from collections.abc import Callable

from executions.models import Execution
from executions.states import TERMINAL


def follow(
    execution: Execution,
    write: Callable[[str], object],
    *,
    poll: float = 0.2,
    timeout: float | None = None,
) -> str:
    """Print each stage's status changes until ``execution`` ends; return its final status."""
    seen: dict[str, str] = {}
    started = time.monotonic()
    while True:
        current = Execution.objects.get(pk=execution.pk)
        for run in current.stage_runs.order_by("position"):
            if seen.get(run.identifier) != run.status:
                seen[run.identifier] = run.status
                extra = f" ({run.error})" if run.error and run.status in TERMINAL else ""
                carried = " [carried over]" if run.carried_from_id else ""
                write(f"  {run.identifier}: {run.status}{carried}{extra}")
        if current.status in TERMINAL:
            return current.status
        if timeout is not None and time.monotonic() - started > timeout:
            return current.status
        time.sleep(poll)
