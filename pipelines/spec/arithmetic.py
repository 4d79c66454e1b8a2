"""Where a bash script evaluates text as arithmetic (issue 15, finding 2).

An expression's value reaches a script as ``${SL_…}``, never spliced into its text, so it cannot
add shell syntax. But bash *evaluates* a value used in an arithmetic context, and evaluating
``a[$(id >&2)]`` runs ``id``: the array subscript is expanded like a command line. The contexts
are ``(( … ))``, ``$(( … ))``, ``[[ … ]]`` with ``-eq -ne -lt -le -gt -ge``, an array subscript
``name[…]`` and ``let …``. ``arithmetic_spans`` finds them, so that saving a pipeline can warn
when a free-text input lands in one. It reads the script as text (no full bash parser): a
context built at run time (``eval``, a variable holding the operator) is not seen.
"""

from __future__ import annotations

import re

ARITHMETIC_TEST_RE = re.compile(r"(?<![\w-])-(?:eq|ne|lt|le|gt|ge)(?![\w-])")
SUBSCRIPT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\[")
LET_RE = re.compile(r"(?:^|(?<=[\s;&|(]))let\s[^\n;]*", re.MULTILINE)
DESCRIPTION = "(( )), $(( )), [[ -gt/-lt/-eq … ]], an array index a[…] or let"


def _closing(text: str, start: int, opening: str, closing: str) -> int:
    """The offset just past the ``closing`` that balances ``opening`` from ``start`` (or the end)."""
    depth = 0
    index = start
    while index < len(text):
        if text.startswith(opening, index):
            depth += 1
            index += len(opening)
            continue
        if text.startswith(closing, index):
            depth -= 1
            index += len(closing)
            if depth == 0:
                return index
            continue
        index += 1
    return len(text)


def arithmetic_spans(script: str) -> list[tuple[int, int]]:
    """(start, end) offsets of the parts of ``script`` that bash evaluates as arithmetic."""
    spans: list[tuple[int, int]] = []
    for match in re.finditer(r"\(\(", script):
        spans.append((match.start(), _closing(script, match.start(), "(", ")")))
    for match in re.finditer(r"\[\[", script):
        end = script.find("]]", match.end())
        end = len(script) if end < 0 else end + 2
        if ARITHMETIC_TEST_RE.search(script, match.end(), end):
            spans.append((match.start(), end))
    for match in SUBSCRIPT_RE.finditer(script):
        spans.append((match.end() - 1, _closing(script, match.end() - 1, "[", "]")))
    for match in LET_RE.finditer(script):
        spans.append((match.start(), match.end()))
    return spans


def in_spans(offset: int, spans: list[tuple[int, int]]) -> bool:
    return any(start <= offset < end for start, end in spans)
