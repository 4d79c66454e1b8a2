"""Forms of the execution dialogs: the runtime inputs of Run, Retry and Rerun (one form),
Approve/Reject; and the filter bar of the executions lists.

They only parse what was posted and render the fields. Every rule (which stage may be picked,
which inputs may change, what a value must look like) belongs to ``executions.retry`` and
``executions.services``: the views pass the parsed values there and show the refusal.

Runtime inputs are posted as ``input-<key>`` (``input-version``, ``input-deploy.region``) so
that an input can never collide with the dialog's own fields. *Every* posted ``input-*`` value
is passed on, not only those of the rendered fields, so that a tampered post (a frozen input,
an unknown one) reaches the domain and is refused with its message.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping

from django import forms
from django.utils.datastructures import MultiValueDict

from executions.listing import EXECUTION_STATUSES, NEEDS, Filters
from executions.retry import InputField
from pipelines.spec.model import PipelineSpec
from stageline.errors import Invalid
from stageline.numbers import NumberError, parse_int

INPUT_PREFIX = "input-"
REASON_MAX_CHARS = 2000


def input_name(key: str) -> str:
    """The form field name of the runtime input ``key``."""
    return INPUT_PREFIX + key


def posted_inputs(data: Mapping[str, str]) -> dict[str, str]:
    """Every ``input-*`` value of a request, keyed by input key."""
    return {
        name[len(INPUT_PREFIX) :]: data.get(name, "")
        for name in data
        if name.startswith(INPUT_PREFIX)
    }


def run_entries(spec: PipelineSpec) -> list[InputField]:
    """The inputs of a first run: every runtime input, prefilled with its default."""
    return [
        InputField(var, "" if var.is_secret or var.default is None else str(var.default), True)
        for var in spec.inputs
    ]


def _input_form_field(entry: InputField) -> forms.Field:
    var = entry.variable
    help_parts = [var.description] if var.description else []
    if var.type == "Number":
        help_parts.append("A number.")
    if var.pattern:
        help_parts.append(f"Must match {var.pattern}.")
    attrs: dict[str, str] = {}
    if var.required and var.default is None:
        attrs["aria-required"] = "true"
    if var.is_secret:
        attrs["autocomplete"] = "new-password"
        if entry.has_value:
            attrs["placeholder"] = "unchanged (a value is set)"
        elif var.default is not None:
            help_parts.append("Blank keeps the pipeline's default secret.")
        widget: forms.Widget = forms.PasswordInput(attrs=attrs, render_value=False)
    elif var.allowed_values:
        blank = "— choose —" if var.default in (None, "") else f"(default: {var.default})"
        widget = forms.Select(
            attrs=attrs, choices=[("", blank), *[(v, v) for v in var.allowed_values]]
        )
    else:
        if var.default is not None:
            help_parts.append(f"Blank means the default, {var.default}.")
        if var.type == "Number":
            attrs["inputmode"] = "decimal"
        widget = (
            forms.Textarea(attrs={**attrs, "rows": "3"})
            if var.multiline
            else forms.TextInput(attrs=attrs)
        )
    widget.attrs["class"] = "runtime-input"  # the Retry dialog sends these with its previews
    # Nothing is checked here: the domain validates the value and names the problem.
    field = forms.CharField(
        label=var.name, required=False, strip=False, widget=widget, help_text=" ".join(help_parts)
    )
    field.show_required = var.required  # type: ignore[attr-defined]
    return field


class InputsForm(forms.Form):
    """The runtime inputs of Run, Retry and Rerun: one field per editable input, named
    ``input-<key>``, prefilled with the entry's value (the default for a run, the previous
    value for a retry or a rerun).

    ``values`` (what the operator typed so far, keyed by input key) wins over the prefill, so a
    re-rendered dialog keeps the operator's edits; secrets are never sent back.
    ``spec`` (the version the inputs belong to) names the groups of stage inputs.
    """

    def __init__(
        self,
        *args,
        entries: Iterable[InputField] = (),
        values: Mapping[str, str] | None = None,
        spec: PipelineSpec | None = None,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        values = values or {}
        self.stage_names = {s.identifier: s.name for s in spec.stages} if spec else {}
        self.entries = [e for e in entries if e.editable]
        for entry in self.entries:
            name = input_name(entry.key)
            self.fields[name] = _input_form_field(entry)
            if not entry.is_secret:
                self.initial[name] = values.get(entry.key, entry.value)

    def input_fields(self) -> list[tuple[InputField, forms.BoundField]]:
        return [(entry, self[input_name(entry.key)]) for entry in self.entries]

    def groups(self) -> list[dict]:
        """The fields in pipeline order: pipeline-level inputs, then each stage's."""
        result: list[dict] = []
        by_stage: dict[str | None, list[forms.BoundField]] = {}
        for entry, bound in self.input_fields():
            by_stage.setdefault(entry.variable.stage, []).append(bound)
        for stage, fields in by_stage.items():
            if stage is None:
                result.insert(0, {"title": "Pipeline inputs", "fields": fields})
            else:
                title = f"Stage: {self.stage_names.get(stage, stage)}"
                result.append({"title": title, "fields": fields})
        return result

    def posted_inputs(self) -> dict[str, str]:
        return posted_inputs(self.data)

    def show_field_errors(self, field_errors: Mapping[str, str]) -> None:
        """Attach the domain's per-input errors to the fields that are shown; the others (an
        input that is not one of this dialog's, say) to the form."""
        self.is_valid()  # builds cleaned_data so that add_error() may be used
        for key, message in field_errors.items():
            name = input_name(key)
            if name not in self.fields:
                self.add_error(None, message)
            elif not self.has_error(name):
                self.add_error(name, message)


class RetryForm(InputsForm):
    from_stage = forms.CharField(required=False, max_length=200)
    mode = forms.CharField(required=False, max_length=20)
    reason = forms.CharField(
        label="Reason (optional)",
        required=False,
        max_length=REASON_MAX_CHARS,
        widget=forms.Textarea(
            attrs={"rows": 2, "placeholder": "Why retry? Shown in the retry history."}
        ),
    )


class RunForm(InputsForm):
    """The Run and Rerun dialogs: the runtime inputs and, when the pipeline allows it, the stage
    picker (``executions.selection`` decides what a pick means)."""

    def picked_stages(self, *, offered: bool) -> list[str] | None:
        """The ticked stages when the picker is ``offered`` (possibly none); otherwise ``None``
        unless stages were posted anyway (then they are refused, not ignored)."""
        data = self.data
        posted = (
            [s for s in data.getlist("stages") if s] if isinstance(data, MultiValueDict) else []
        )
        return posted if offered or posted else None


class ApprovalForm(forms.Form):
    stage = forms.CharField(
        max_length=200, error_messages={"required": "Say which stage's approval to answer."}
    )
    decision = forms.ChoiceField(
        choices=[("approve", "Approve"), ("reject", "Reject")],
        error_messages={
            "required": "Choose Approve or Reject.",
            "invalid_choice": "Choose Approve or Reject, not '%(value)s'.",
        },
    )
    comment = forms.CharField(
        label="Comment (optional)",
        required=False,
        max_length=REASON_MAX_CHARS,
        widget=forms.Textarea(attrs={"rows": 3}),
    )


class InterventionForm(forms.Form):
    """The answer to a step waiting for intervention. Which answers there are, and whether the
    step waits, is ``services.answer_intervention``'s to say (a tampered value reaches it)."""

    step = forms.CharField(
        max_length=200, error_messages={"required": "Say which step to answer (STAGE.STEP)."}
    )
    action = forms.CharField(required=False, strip=False)
    comment = forms.CharField(
        label="Comment (optional)",
        required=False,
        max_length=REASON_MAX_CHARS,
        widget=forms.Textarea(
            attrs={"rows": 3, "placeholder": "Why? Kept on the step and in its history."}
        ),
    )


# --- the executions list's filter bar (project and pipeline pages) ---------------------------

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
    needs = forms.CharField(
        required=False,
        label="Needs",
        widget=forms.Select(choices=[("", "Anything"), *NEEDS]),
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

    def clean_needs(self) -> str:
        value = self.cleaned_data["needs"].strip().lower()
        known = [code for code, _ in NEEDS]
        if value and value not in known:
            raise forms.ValidationError(
                f"Unknown need '{self.data.get('needs', '')[:40]}'. Use: {', '.join(known)}."
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
        data = super().clean() or {}
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
            needs=data.get("needs", ""),
        )

    @property
    def is_filtered(self) -> bool:
        return any(
            self.data.get(name) for name in ("pipeline", "status", "who", "since", "until", "needs")
        )


def parse_filters(data: Mapping[str, str], *, pipelines: Iterable | None) -> ExecutionFilterForm:
    """The valid filter form for ``data`` (as ``ExecutionFilterForm``), or ``Invalid`` with each
    field's message (for the API and commands, which have no form to show them in)."""
    form = ExecutionFilterForm(data, pipelines=pipelines)
    if not form.is_valid():
        errors = {name: " ".join(str(e) for e in errs) for name, errs in form.errors.items()}
        raise Invalid(" ".join(errors.values()), field_errors=errors)
    return form
