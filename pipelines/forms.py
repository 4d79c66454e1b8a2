"""The pipeline editor's form (the executions filter bar and the Run dialog's form are in
``executions.forms``: pipelines never imports executions).

The form only reads and renders what the user typed; ``pipelines.services.save_pipeline``
validates definitions. Its refusals are attached to the fields here so that the template shows
each message next to what it is about.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django import forms

from pipelines.spec.errors import SpecError
from stageline.numbers import NumberError, parse_int


class PipelineEditForm(forms.Form):
    """The editor: the YAML text and the version it was based on (to catch a concurrent save)."""

    yaml = forms.CharField(
        label="Definition (YAML)",
        strip=False,
        required=False,
        widget=forms.Textarea(
            attrs={"rows": 28, "spellcheck": "false", "autocapitalize": "off", "wrap": "off"}
        ),
    )
    base_version = forms.CharField(required=False, strip=False, widget=forms.HiddenInput)

    def clean_base_version(self) -> int | None:
        raw = self.cleaned_data["base_version"]
        if not raw:
            return None
        try:
            return parse_int(raw, "base_version", minimum=0)
        except NumberError as exc:
            raise forms.ValidationError(str(exc)) from None


def annotate_lines(text: str, errors: Iterable[SpecError]) -> tuple[list[dict], list[SpecError]]:
    """Split ``text`` into numbered lines, each with the messages of the errors found on it.

    Returns ``(lines, unplaced)``: errors without a line, or past the end, are ``unplaced``.
    """
    lines: list[dict[str, Any]] = [
        {"number": n, "text": line, "errors": []} for n, line in enumerate(text.splitlines(), 1)
    ]
    unplaced: list[SpecError] = []
    for error in errors:
        if 1 <= error.line <= len(lines):
            lines[error.line - 1]["errors"].append(error.message)
        else:
            unplaced.append(error)
    return lines, unplaced
