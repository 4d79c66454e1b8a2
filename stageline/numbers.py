"""The one number grammar: every number Stageline reads from a person is read here.

    number   -?[0-9]+(\\.[0-9]+)?      12, -3, 0.5, -12.25
    integer  -?[0-9]+                  12, -3

The whole text must match: no surrounding spaces, no ``+``, no underscores (``1_000``), no
exponent (``1e3``), no other digit sets (``١٢``), no ``.5`` or ``5.``, no ``inf`` or ``nan``.
It applies to YAML values (Number variables, a timeout or duration in whole seconds), runtime
inputs (forms and ``--input``), ``when:`` conditions, command-line numbers and page
parameters. A refusal is a ``NumberError`` (a ``ValueError``) whose message names the field
and the value: ``replicas must be a number (like 12 or -3.5), not '1_000'``.
"""

from __future__ import annotations

import argparse
import re
from decimal import Decimal

NUMBER_RE = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")
INTEGER_RE = re.compile(r"-?[0-9]+")
NUMBER_HINT = "a number (like 12 or -3.5)"
INTEGER_HINT = "a whole number (like 12)"
MAX_DIGITS = 4000  # Python refuses to convert longer digit strings to int; no count is that long


class NumberError(ValueError):
    """A value that is not a number by the grammar (or out of its field's range)."""

    def __init__(self, value: str, field: str, expected: str):
        shown = value if len(value) <= 40 else value[:39] + "…"
        self.value = value
        self.field = field
        self.reason = f"must be {expected}, not '{shown}'"
        super().__init__(f"{field} {self.reason}")


def is_number(text: object) -> bool:
    """True when ``text`` is a string that matches the number grammar."""
    return isinstance(text, str) and NUMBER_RE.fullmatch(text) is not None


def parse_number(text: str, field: str) -> Decimal:
    """``text`` as an exact ``Decimal`` (so ``3`` equals ``3.0``); ``NumberError`` when it is
    not a number by the grammar."""
    if not is_number(text):
        raise NumberError(str(text), field, NUMBER_HINT)
    return Decimal(text)


def parse_int(
    text: str, field: str, *, minimum: int | None = None, maximum: int | None = None
) -> int:
    """``text`` as an ``int``; ``NumberError`` when it is not a whole number by the grammar or
    lies outside ``minimum`` … ``maximum``."""
    if not isinstance(text, str) or INTEGER_RE.fullmatch(text) is None or len(text) > MAX_DIGITS:
        raise NumberError(str(text), field, INTEGER_HINT)
    value = int(text)
    if minimum is not None and value < minimum:
        raise NumberError(text, field, f"a whole number of at least {minimum}")
    if maximum is not None and value > maximum:
        raise NumberError(text, field, f"a whole number of at most {maximum}")
    return value


def id_argument(text: str) -> int:
    """``argparse`` ``type=`` for an id on the command line (a whole number of at least 1).
    A refusal names the argument and the value and exits with status 2, as argparse does."""
    try:
        return parse_int(text, "the value", minimum=1)
    except NumberError as exc:
        raise argparse.ArgumentTypeError(exc.reason) from None


def int_argument(text: str) -> int:
    """``argparse`` ``type=`` for a whole number on the command line."""
    try:
        return parse_int(text, "the value")
    except NumberError as exc:
        raise argparse.ArgumentTypeError(exc.reason) from None


def float_argument(text: str) -> float:
    """``argparse`` ``type=`` for a number on the command line (seconds and the like)."""
    try:
        return float(parse_number(text, "the value"))
    except NumberError as exc:
        raise argparse.ArgumentTypeError(exc.reason) from None
