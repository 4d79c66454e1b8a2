"""Percentiles, figures and the table the benchmark prints (it prints; it asserts nothing)."""

from __future__ import annotations

import math
import os
import platform
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field


def percentile(values: Iterable[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ``values``, interpolated between the closest ranks
    (numpy's default); NaN for no values."""
    data = sorted(values)
    if not data:
        return math.nan
    if len(data) == 1:
        return data[0]
    rank = (len(data) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(data) - 1)
    return data[low] + (data[high] - data[low]) * (rank - low)


def median(values: Iterable[float]) -> float:
    return percentile(values, 50)


def ms(seconds: float) -> str:
    """``12.3 ms`` (``—`` for NaN)."""
    if seconds is None or math.isnan(seconds):
        return "—"
    value = seconds * 1000
    return f"{value:.1f} ms" if value < 1000 else f"{value:,.0f} ms"


def spread(values: Sequence[float], points: Sequence[int] = (50, 95, 99)) -> str:
    """``p50 3.1 ms · p95 9.0 ms · p99 12.4 ms (n=147)``."""
    if not values:
        return "no samples"
    parts = [f"p{p} {ms(percentile(values, p))}" for p in points]
    return " · ".join(parts) + f" (n={len(values)})"


@dataclass
class Figure:
    """One row of the table: a measured value and, when there is one, the target it answers."""

    section: str
    name: str
    value: str
    target: str = ""
    met: bool | None = None  # None: no target

    @property
    def verdict(self) -> str:
        if self.met is None:
            return ""
        return "met" if self.met else "MISSED"


@dataclass
class Report:
    """Figures in the order they were measured, printed as one table at the end."""

    title: str
    context: dict[str, str] = field(default_factory=dict)
    figures: list[Figure] = field(default_factory=list)

    def add(
        self, section: str, name: str, value: str, target: str = "", met: bool | None = None
    ) -> Figure:
        figure = Figure(section, name, value, target, met)
        self.figures.append(figure)
        return figure

    def missed(self) -> list[Figure]:
        return [f for f in self.figures if f.met is False]

    def as_text(self) -> str:
        headers = ("section", "figure", "value", "target", "")
        rows = [(f.section, f.name, f.value, f.target, f.verdict) for f in self.figures]
        widths = [
            max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
            for i, h in enumerate(headers)
        ]
        lines = [self.title, ""]
        lines += [f"  {key}: {value}" for key, value in self.context.items()]
        lines.append("")
        lines.append("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
        lines.append("  ".join("-" * w for w in widths))
        section = None
        for row in rows:
            shown = row if row[0] != section else ("", *row[1:])
            section = row[0]
            lines.append("  ".join(c.ljust(w) for c, w in zip(shown, widths, strict=True)).rstrip())
        missed = self.missed()
        lines.append("")
        lines.append(
            f"targets: {sum(1 for f in self.figures if f.met)} met, {len(missed)} missed"
            + (": " + "; ".join(f"{f.section} / {f.name}" for f in missed) if missed else "")
        )
        return "\n".join(lines)

    def as_markdown(self) -> str:
        lines = ["| section | figure | value | target | |", "|---|---|---|---|---|"]
        for f in self.figures:
            lines.append(f"| {f.section} | {f.name} | {f.value} | {f.target} | {f.verdict} |")
        return "\n".join(lines)


def machine_description() -> str:
    """``2 cores (Intel Xeon …), 24 GiB, Linux 6.1`` — where the figures come from."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    memory = ""
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        memory = f", {pages * size / 2**30:.0f} GiB"
    except (ValueError, OSError, AttributeError):
        pass
    load = ""
    try:
        one, five, fifteen = os.getloadavg()
        load = f", load average {one:.1f} {five:.1f} {fifteen:.1f} at start"
    except OSError:
        pass
    return f"{os.cpu_count()} cores ({cpu}){memory}, {platform.system()} {platform.release()}{load}"
