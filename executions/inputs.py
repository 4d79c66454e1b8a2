"""Validation of runtime input values: the same rules for a run, a retry and a rerun.

Inputs are keyed ``name`` (pipeline level) or ``stage.name`` (stage level). A blank value
takes the variable's default; then ``required``, the type (a Number by the one grammar of
``stageline.numbers``: ``1_000``, ``1e3``, ``" 3"`` or ``١٢`` are refused, naming the input and
the value), line breaks (refused unless the variable says ``multiline: true``), ``pattern``
and ``allowed_values`` are checked. Secret values are returned apart so that they are never
stored with the rest.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from django.conf import settings

from pipelines.spec.model import PipelineSpec, Variable
from stageline.numbers import NumberError, parse_number


class InputErrors(ValueError):
    """Input problems, keyed by input (``""`` for problems not tied to one input)."""

    def __init__(self, errors: dict[str, str]):
        self.errors = errors
        super().__init__("; ".join(f"{k}: {v}" if k else v for k, v in errors.items()))


def check_value(var: Variable, raw: object) -> tuple[str, str]:
    """Return (value, error) for one input; ``error`` is empty when the value is good."""
    if raw is None:
        raw = ""
    if not isinstance(raw, str):
        raw = str(raw)
    value = raw
    if value == "" and var.default is not None:
        value = str(var.default)
    limit = settings.STAGELINE_MAX_INPUT_CHARS
    if len(value) > limit:
        return value, f"is longer than {limit} characters"
    if "\x00" in value:
        return value, "contains a NUL character"
    if value == "":
        return value, "is required" if var.required else ""
    if var.type == "Number":
        try:
            parse_number(value, var.key)
        except NumberError as exc:
            return value, exc.reason
    problem = var.value_problem(value)
    if problem:
        return value, problem
    if var.allowed_values and value not in var.allowed_values:
        if var.is_secret:  # a secret's allowed values are secrets too
            return value, "is not one of its allowed values"
        return value, f"must be one of {', '.join(var.allowed_values)} (got '{value[:40]}')"
    return value, ""


def validate_inputs(
    spec: PipelineSpec,
    submitted: Mapping[str, object],
    *,
    editable: Iterable[Variable] | None = None,
) -> tuple[dict[str, str], dict[str, str]]:
    """Validate values for ``editable`` inputs (all of the spec's by default).

    Returns ``(values, secret_values)``; raises ``InputErrors`` naming every bad input,
    including keys that are not inputs of this pipeline.
    """
    variables = list(spec.inputs if editable is None else editable)
    known = {var.key for var in spec.inputs}
    errors: dict[str, str] = {}
    for key in submitted:
        if key not in known:
            errors[key] = f"'{key}' is not a runtime input of pipeline {spec.identifier}"
    values: dict[str, str] = {}
    secrets: dict[str, str] = {}
    for var in variables:
        value, error = check_value(var, submitted.get(var.key))
        if error:
            errors[var.key] = f"{var.key} {error}"
            continue
        (secrets if var.is_secret else values)[var.key] = value
    if errors:
        raise InputErrors(errors)
    return values, secrets


def parse_assignments(pairs: Iterable[str]) -> dict[str, str]:
    """``["version=1.5", "build.target=arm"]`` → a dict; a pair without ``=`` is an error."""
    result: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise InputErrors({pair: f"'{pair}' is not name=value"})
        result[key.strip()] = value
    return result
