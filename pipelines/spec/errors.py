"""The problems a pipeline definition can have, each at a line, and how a value appears in them."""

from __future__ import annotations

from typing import Any


class SpecError(ValueError):
    """One problem in a pipeline definition, at a line (1-based; 0 when unknown)."""

    def __init__(self, message: str, line: int = 0):
        super().__init__(message)
        self.message = message
        self.line = line

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}" if self.line else self.message


class SpecErrors(ValueError):
    """All the problems found in one definition, by line, each reported once."""

    def __init__(self, errors: list[SpecError]):
        unique: dict[tuple[int, str], SpecError] = {}
        for error in errors:
            unique.setdefault((error.line, error.message), error)
        self.errors = sorted(unique.values(), key=lambda e: e.line)
        super().__init__("; ".join(str(e) for e in self.errors))


def short(value: Any, limit: int = 60) -> str:
    """A value as it may appear inside a message: one line, at most ``limit`` characters."""
    text = as_text(value).replace("\n", "\\n")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def as_text(value: Any) -> str:
    """A YAML scalar as the text the definition means (``true``/``false``; nothing for null)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
