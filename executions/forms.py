"""Forms of the execution dialogs: Retry, Rerun, Approve/Reject and Abort.

They only parse what was posted and render the fields. Every rule (which stage may be picked,
which inputs may change, what a value must look like) belongs to ``executions.retry`` and
``executions.services``: the views pass the parsed values there and show the refusal.

Runtime inputs are posted as ``input-<key>`` (``input-version``, ``input-deploy.region``) so
that an input can never collide with the dialog's own fields. *Every* posted ``input-*`` value
is passed on, not only those of the rendered fields, so that a tampered post (a frozen input,
an unknown one) reaches the domain and is refused with its message.
"""

from __future__ import annotations

from django import forms
from django.http import QueryDict

from executions.retry import InputField

INPUT_PREFIX = "input-"
REASON_MAX_CHARS = 2000


def input_name(key: str) -> str:
    """The form field name of the runtime input ``key``."""
    return INPUT_PREFIX + key


def posted_inputs(data: QueryDict) -> dict[str, str]:
    """Every ``input-*`` value of a request, keyed by input key."""
    return {
        name[len(INPUT_PREFIX) :]: data.get(name, "")
        for name in data
        if name.startswith(INPUT_PREFIX)
    }


def _input_form_field(entry: InputField) -> forms.Field:
    var = entry.variable
    label = f"{var.stage} › {var.name}" if var.stage else var.name
    attrs = {"class": "runtime-input"}
    if var.is_secret:
        if entry.has_value:
            attrs["placeholder"] = "unchanged (a value is set)"
        widget: forms.Widget = forms.PasswordInput(attrs=attrs, render_value=False)
    elif var.allowed_values:
        blank = f"(default: {var.default})" if var.default not in (None, "") else "(none)"
        widget = forms.Select(
            attrs=attrs, choices=[("", blank), *[(v, v) for v in var.allowed_values]]
        )
    else:
        if var.type == "Number":
            attrs["inputmode"] = "decimal"
        widget = forms.TextInput(attrs=attrs)
    # Nothing is checked here: the domain validates the value and names the problem.
    return forms.CharField(
        label=label, required=False, strip=False, widget=widget, help_text=var.description
    )


class InputsForm(forms.Form):
    """A form with one field per editable runtime input, prefilled from the previous run.

    ``values`` (what the operator typed so far, keyed by input key) wins over the prefill, so a
    re-rendered dialog keeps the operator's edits; secrets are never sent back.
    """

    def __init__(
        self, *args, entries: list[InputField] = (), values: dict[str, str] | None = None, **kwargs
    ):
        super().__init__(*args, **kwargs)
        values = values or {}
        self.entries = [e for e in entries if e.editable]
        for entry in self.entries:
            name = input_name(entry.key)
            self.fields[name] = _input_form_field(entry)
            if not entry.is_secret:
                self.initial[name] = values.get(entry.key, entry.value)

    def input_fields(self) -> list[tuple[InputField, forms.BoundField]]:
        return [(entry, self[input_name(entry.key)]) for entry in self.entries]

    def posted_inputs(self) -> dict[str, str]:
        return posted_inputs(self.data)

    def show_field_errors(self, field_errors: dict[str, str]) -> None:
        """Attach the domain's per-input errors to the fields that are shown."""
        for key, message in field_errors.items():
            name = input_name(key)
            if name in self.fields and not self.has_error(name):
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


class RerunForm(InputsForm):
    def posted_stages(self) -> list[str]:
        return [s for s in self.data.getlist("stages") if s]


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
