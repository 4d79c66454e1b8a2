"""Unified diffs of pipeline definitions, as rows the templates colour (version history, the
retry dialog's "changed since" warning, ``retry_execution``'s plan). Callers pass the texts as
readers may see them (``pipelines.spec.redact.mask_secrets``): Secret literals are masked before
diffing, by their positions in the YAML."""

from __future__ import annotations

import difflib


def unified_diff(old: str, new: str, old_label: str, new_label: str) -> str:
    """The unified diff of two texts (3 lines of context)."""
    diff = difflib.unified_diff(
        old.splitlines(), new.splitlines(), fromfile=old_label, tofile=new_label, lineterm="", n=3
    )
    return "\n".join(diff)


def diff_rows(diff_text: str) -> list[tuple[str, str]]:
    """(css class, text) for each line of a unified diff."""
    rows = []
    for line in diff_text.splitlines():
        if line.startswith(("---", "+++")):
            css = "diff-meta"
        elif line.startswith("@@"):
            css = "diff-hunk"
        elif line.startswith("+"):
            css = "diff-add"
        elif line.startswith("-"):
            css = "diff-del"
        else:
            css = "diff-ctx"
        rows.append((css, line))
    return rows


def unified_rows(old: str, new: str, old_label: str, new_label: str) -> list[tuple[str, str]]:
    """``unified_diff`` as ``diff_rows``."""
    return diff_rows(unified_diff(old, new, old_label, new_label))
