"""How times and durations read, everywhere (pages, dialogs, commands): one format each.

- A duration: ``3.2 s``, ``4 min 05 s``, ``2 h 07 min`` (``format_duration``); a time left
  (a countdown, in whole seconds): ``25 s``, ``4 min 05 s`` (``format_countdown``; the page
  counts it down as format_countdown does: static/stageline/execution.js).
- A moment: relative to now (``3 min ago``, ``in 25 min``), with the exact time and its zone
  named on hover (``2026-12-02 11:13:16 UTC``); the browser rewrites the exact time into the
  viewer's own time zone, naming it (static/stageline/app.js, ``localizeTimes``).
"""

from __future__ import annotations

import datetime

from django.utils import timezone


def format_duration(seconds: float | None) -> str:
    """``3.2 s``, ``4 min 05 s``, ``2 h 07 min``; an em dash when the run has not started."""
    if seconds is None:
        return "—"
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = int(round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min {secs:02d} s"


def format_countdown(seconds: float) -> str:
    """``25 s``, ``4 min 05 s``, ``2 h 07 min``: a time left, in whole seconds (never negative)."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} s"
    return format_duration(seconds)


def format_relative(moment: datetime.datetime, now: datetime.datetime | None = None) -> str:
    """``just now``, ``3 min ago``, ``in 25 min``, ``2 h ago``, ``4 d ago``; a date after 30 days."""
    now = now or timezone.now()
    seconds = (now - moment).total_seconds()
    ahead = seconds < 0
    seconds = abs(seconds)
    if seconds < 45:
        return "in a few seconds" if ahead else "just now"
    if seconds < 3600:
        amount = f"{max(1, round(seconds / 60))} min"
    elif seconds < 86_400:
        amount = f"{round(seconds / 3600)} h"
    elif seconds < 30 * 86_400:
        amount = f"{round(seconds / 86_400)} d"
    else:
        return f"on {timezone.localtime(moment):%Y-%m-%d}"
    return f"in {amount}" if ahead else f"{amount} ago"


def format_exact(moment: datetime.datetime) -> str:
    """``2026-12-02 11:13:16 UTC``: the server's time zone, named."""
    local = timezone.localtime(moment)
    return f"{local:%Y-%m-%d %H:%M:%S} {local.tzname()}"
