"""Forms of the project and pipeline pages: the executions filter bar and the pipeline editor
(the Run dialog's form is ``executions.forms.RunForm``).

The forms only read and render what the user typed; the rules stay where they live:
``executions.listing`` filters, ``pipelines.services.save_pipeline`` validates definitions
and ``executions.services.run_pipeline`` validates runtime inputs. Their refusals are attached
to the fields here so that the templates show each message next to what it is about.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping

from django import forms

from executions.listing import EXECUTION_STATUSES, Filters
from pipelines.spec.errors import SpecError
from stageline.numbers import NumberError, parse_int

DATE_FORMAT = "%Y-%m-%d"


class ExecutionFilterForm(forms.Form):
    """The filter bar of an executions list. Every value arrives in the URL, so each one is
    checked here and refused with a message naming it, never with an error page."""

    pipeline = forms.CharField(required=False, label="Pipeline")
    status = forms.CharField(required=False, label="Status")
    who = forms.CharField(
        required=False,
        label="Started by",
        max_length=150,
        widget=forms.TextInput(
            attrs={"placeholder": "username", "autocomplete": "off", "spellcheck": "false"}
        ),
    )
    since = forms.CharField(
        required=False, label="From", widget=forms.DateInput(attrs={"type": "date"})
    )
    until = forms.CharField(
        required=False, label="To", widget=forms.DateInput(attrs={"type": "date"})
    )
    before = forms.CharField(required=False, label="Page link", widget=forms.HiddenInput)
    after = forms.CharField(required=False, label="Page link", widget=forms.HiddenInput)

    def __init__(
        self, data: Mapping[str, str] | None, *, pipelines: Iterable | None = None
    ) -> None:
        """``pipelines``: the pipelines the user may see in this project (a project-wide list);
        ``None`` for the list of one pipeline (no pipeline filter)."""
        super().__init__(data or {})
        self.pipelines = {p.identifier: p for p in pipelines} if pipelines is not None else None
        if self.pipelines is None:
            del self.fields["pipeline"]
        else:
            self.fields["pipeline"].widget = forms.Select(
                choices=[("", "All pipelines")]
                + [(key, p.name) for key, p in self.pipelines.items()]
            )
        self.fields["status"].widget = forms.Select(
            choices=[("", "Any status")] + [(value, label) for value, label in EXECUTION_STATUSES]
        )

    def clean_pipeline(self) -> str:
        value = self.cleaned_data["pipeline"].strip()
        if value and self.pipelines is not None and value not in self.pipelines:
            raise forms.ValidationError(f"There is no pipeline '{value[:64]}' in this project.")
        return value

    def clean_status(self) -> str:
        value = self.cleaned_data["status"].strip().upper()
        known = [code for code, _ in EXECUTION_STATUSES]
        if value and value not in known:
            raise forms.ValidationError(
                f"Unknown status '{self.data.get('status', '')[:40]}'. Use one of: "
                + ", ".join(code.lower() for code in known)
                + "."
            )
        return value

    def clean_who(self) -> str:
        return self.cleaned_data["who"].strip()

    def _date(self, name: str) -> datetime.date | None:
        raw = self.cleaned_data[name].strip()
        if not raw:
            return None
        try:
            return datetime.datetime.strptime(raw, DATE_FORMAT).date()
        except ValueError:
            raise forms.ValidationError(
                f"'{raw[:40]}' is not a date: write it as YYYY-MM-DD, for example 2025-03-31."
            ) from None

    def clean_since(self) -> datetime.date | None:
        return self._date("since")

    def clean_until(self) -> datetime.date | None:
        return self._date("until")

    def _cursor(self, name: str) -> int | None:
        raw = self.cleaned_data[name].strip()
        if not raw:
            return None
        try:
            return parse_int(raw, name, minimum=1, maximum=10**18 - 1)
        except NumberError:
            raise forms.ValidationError(
                f"The page link is broken: '{name}' must be an execution number, not '{raw[:40]}'. "
                "Start again from the newest executions."
            ) from None

    def clean_before(self) -> int | None:
        return self._cursor("before")

    def clean_after(self) -> int | None:
        return self._cursor("after")

    def clean(self) -> dict:
        data = super().clean()
        since, until = data.get("since"), data.get("until")
        if since and until and since > until:
            self.add_error("until", f"'To' ({until:%Y-%m-%d}) is before 'From' ({since:%Y-%m-%d}).")
        if data.get("before") and data.get("after"):
            raise forms.ValidationError(
                "A page link names both 'before' and 'after'; use one of them."
            )
        return data

    def filters(self, *, pipeline=None) -> Filters:
        """The valid filters (call after ``is_valid()``)."""
        data = self.cleaned_data
        if pipeline is None and self.pipelines is not None and data.get("pipeline"):
            pipeline = self.pipelines[data["pipeline"]]
        return Filters(
            pipeline=pipeline,
            status=data.get("status", ""),
            who=data.get("who", ""),
            since=data.get("since"),
            until=data.get("until"),
        )

    @property
    def is_filtered(self) -> bool:
        return any(self.data.get(name) for name in ("pipeline", "status", "who", "since", "until"))


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
    lines = [
        {"number": n, "text": line, "errors": []} for n, line in enumerate(text.splitlines(), 1)
    ]
    unplaced: list[SpecError] = []
    for error in errors:
        if 1 <= error.line <= len(lines):
            lines[error.line - 1]["errors"].append(error.message)
        else:
            unplaced.append(error)
    return lines, unplaced
