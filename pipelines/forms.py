"""Forms of the project and pipeline pages: the executions filter bar, the pipeline editor and
the Run dialog's runtime inputs.

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
from pipelines.spec.model import PipelineSpec, Variable

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
        if not raw.isascii() or not raw.isdigit() or int(raw) < 1 or len(raw) > 18:
            raise forms.ValidationError(
                f"The page link is broken: '{name}' must be an execution number, not '{raw[:40]}'. "
                "Start again from the newest executions."
            )
        return int(raw)

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
    base_version = forms.IntegerField(required=False, min_value=0, widget=forms.HiddenInput)


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


INPUT_PREFIX = "input"  # fields are posted as input-<key>, as in the Retry/Rerun dialogs


class RunInputsForm(forms.Form):
    """The runtime inputs of a pipeline, one field per ``spec.inputs`` variable, posted as
    ``input-<key>`` (``input-version``, ``input-build.target``) so that no input can collide
    with another field. Fields are optional here: ``run_pipeline`` validates (defaults,
    required, type, allowed values) and its ``field_errors`` are attached with
    ``add_service_errors``. Secret values are never sent back to the browser."""

    def __init__(self, spec: PipelineSpec, data: Mapping[str, str] | None = None) -> None:
        super().__init__(data, prefix=INPUT_PREFIX)
        self.spec = spec
        self.variables: dict[str, Variable] = {}
        for var in spec.inputs:
            self.variables[var.key] = var
            self.fields[var.key] = self._field_for(var)

    @staticmethod
    def _field_for(var: Variable) -> forms.Field:
        help_parts = []
        if var.description:
            help_parts.append(var.description)
        if var.type == "Number":
            help_parts.append("A number.")
        if var.default is not None and not var.is_secret and not var.allowed_values:
            help_parts.append(f"Blank means the default, {var.default}.")
        attrs: dict[str, str] = {}
        if var.required and var.default is None:
            attrs["aria-required"] = "true"
        if var.allowed_values:
            choices = [(value, value) for value in var.allowed_values]
            if var.default is None:
                choices = [("", "— choose —"), *choices]
            field: forms.Field = forms.CharField(
                required=False, widget=forms.Select(attrs=attrs, choices=choices)
            )
        elif var.is_secret:
            attrs["autocomplete"] = "new-password"
            if var.default is not None:
                help_parts.append("Blank keeps the pipeline's default secret.")
            field = forms.CharField(
                required=False,
                strip=False,
                widget=forms.PasswordInput(attrs=attrs, render_value=False),
            )
        else:
            if var.type == "Number":
                attrs["inputmode"] = "decimal"
            field = forms.CharField(
                required=False, strip=False, widget=forms.TextInput(attrs=attrs)
            )
        field.label = var.name
        field.help_text = " ".join(help_parts)
        field.initial = None if var.is_secret else var.default
        field.show_required = var.required  # type: ignore[attr-defined]
        return field

    def groups(self) -> list[dict]:
        """The fields in pipeline order: pipeline-level inputs, then each stage's."""
        result: list[dict] = []
        pipeline_level = [self[key] for key, var in self.variables.items() if var.stage is None]
        if pipeline_level:
            result.append({"title": "Pipeline inputs", "fields": pipeline_level})
        for stage in self.spec.stages:
            fields = [self[var.key] for var in stage.variables if var.is_input]
            if fields:
                result.append({"title": f"Stage: {stage.name}", "fields": fields})
        return result

    def submitted_inputs(self) -> dict[str, str]:
        """Every posted ``input-*`` value by input key, including keys that are not inputs of
        this pipeline (so that ``run_pipeline`` refuses them by name); blank for a field left
        empty."""
        prefix = INPUT_PREFIX + "-"
        values = {key: "" for key in self.variables}
        for name in self.data:
            if name.startswith(prefix):
                values[name[len(prefix) :]] = self.data.get(name, "")
        return values

    def add_service_errors(self, field_errors: Mapping[str, str], message: str) -> None:
        """Attach ``run_pipeline``'s refusal: each message to its input, the rest to the form."""
        self.is_valid()  # builds cleaned_data so that add_error() may be used
        for key, text in field_errors.items():
            self.add_error(key if key in self.fields else None, text)
        if not field_errors:
            self.add_error(None, message)


class StageSelectionForm(forms.Form):
    """Which stages a run runs, for pipelines with ``allow_stage_selection`` (none ticked: all).
    ``run_pipeline`` checks the choice (a picked stage may not need an unpicked one's output)."""

    stages = forms.MultipleChoiceField(
        required=False,
        label="Stages to run",
        help_text="Leave all unticked to run every stage; unticked stages are skipped.",
        widget=forms.CheckboxSelectMultiple,
    )

    def __init__(self, spec: PipelineSpec, data: Mapping[str, str] | None = None) -> None:
        super().__init__(data)
        self.fields["stages"].choices = [(stage.identifier, stage.name) for stage in spec.stages]

    def submitted(self) -> list[str]:
        if not hasattr(self.data, "getlist"):
            return []
        return [value for value in self.data.getlist("stages") if value]
