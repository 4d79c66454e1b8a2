"""Validate a loaded definition into a ``PipelineSpec``, reporting every problem with its line.

Expressions (``<+pipeline.variables.X>`` …) are checked here when they can be: unknown
variables, unknown stages, and a stage reading the output of a stage that does not run
strictly before it. Their values are filled in at run time by ``executions.context``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

from django.conf import settings

from pipelines.conditions import parse_condition
from pipelines.spec.arithmetic import DESCRIPTION as ARITHMETIC_CONTEXTS
from pipelines.spec.arithmetic import arithmetic_spans, in_spans
from pipelines.spec.errors import SpecError, SpecErrors, as_text, short
from pipelines.spec.loader import LList, LMap, load_yaml
from pipelines.spec.model import (
    ACTION_TYPES,
    ALL_ERRORS,
    ERROR_CLASSES,
    EXPRESSION_RE,
    MAX_RETRY_COUNT,
    RUNTIME_INPUT,
    STEP_TYPES,
    VARIABLE_TYPES,
    Action,
    FailureRule,
    Group,
    PipelineSpec,
    Stage,
    Step,
    Variable,
)
from stageline.numbers import NumberError, parse_int, parse_number

IDENTIFIER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
QUEUE_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
DURATION_RE = re.compile(
    r"^(?:([0-9]{1,9})d)?(?:([0-9]{1,9})h)?(?:([0-9]{1,9})m)?(?:([0-9]{1,9})s)?$"
)
UNCLOSED_EXPRESSION_RE = re.compile(r"<\+\s*[A-Za-z]")
MAX_DURATION = 30 * 86400  # a timeout or a wait longer than 30 days is a typo
MAX_NAME_CHARS = 200  # the database columns that store pipeline, stage and step names
DEFAULT_TIMEOUTS = {"ShellScript": 3600, "Approval": 86400, "Wait": 86400}
RESERVED_ENV_PREFIXES = ("STAGELINE_", "SL_")
MAX_PATTERN_CHARS = 1000
SECRETS_PREFIX = "secrets."


def parse_duration(value: Any) -> int | None:
    """``30s``, ``10m``, ``1h30m``, ``2d`` or a whole number of seconds (``stageline.numbers``)
    → seconds; None when it is none of these, or not above zero."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value > 0 else None
    if not isinstance(value, str) or not value:
        return None
    text = value
    try:
        seconds = parse_int(text, "a duration", minimum=1, maximum=999_999_999)
    except NumberError:
        pass
    else:
        return seconds
    match = DURATION_RE.match(text)
    if not match or not any(match.groups()):
        return None
    days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
    total = days * 86400 + hours * 3600 + minutes * 60 + seconds
    return total if total > 0 else None


@dataclass
class _Text:
    """A text that may hold expressions, and where it is in the YAML."""

    text: str
    line: int
    literal: bool  # a ``|`` block: the n-th line of the text is on line ``line + n``
    stage: Stage | None
    where: str
    variable: Variable | None = None
    script: bool = False  # the script of a ShellScript step

    def line_at(self, offset: int) -> int:
        return self.line + self.text.count("\n", 0, offset) if self.literal else self.line


class _Validator:
    def __init__(self) -> None:
        self.errors: list[SpecError] = []
        self.texts: list[_Text] = []
        self.stage_lines: list[tuple[str, int]] = []  # (identifier, line) of every stage
        self.save_errors: list[SpecError] = []  # refused at save only (see PipelineSpec)
        self.secret_references: list[tuple[str, int]] = []

    def error(self, message: str, line: int) -> None:
        self.errors.append(SpecError(message, line))

    def check_keys(self, mapping: LMap, allowed: set[str], where: str) -> None:
        for key in mapping:
            if key not in allowed:
                self.error(
                    f"unknown key '{short(key)}' in {where} (allowed: {', '.join(sorted(allowed))})",
                    mapping.key_lines.get(key, mapping.line),
                )

    def line_of(self, mapping: Any, key: str) -> int:
        if isinstance(mapping, LMap):
            return mapping.key_lines.get(key, mapping.line)
        return 0

    def locate(self, mapping: LMap, key: str, text: str, stage: Stage | None, where: str) -> _Text:
        line, style = getattr(mapping, "value_marks", {}).get(
            key, (self.line_of(mapping, key), None)
        )
        if style == "|":
            return _Text(text, line + 1, True, stage, where)
        return _Text(text, line, False, stage, where)

    def text(self, mapping: LMap, key: str, where: str, *, required: bool = False) -> str:
        value = mapping.get(key)
        if value is None:
            if required:
                self.error(f"{where} needs '{key}'", mapping.line)
            return ""
        if isinstance(value, (dict, list)):
            self.error(f"'{key}' in {where} must be text", self.line_of(mapping, key))
            return ""
        return as_text(value)

    def name(self, mapping: LMap, where: str, fallback: str) -> str:
        name = self.text(mapping, "name", where)
        if len(name) > MAX_NAME_CHARS:
            self.error(
                f"the name of {where} is longer than {MAX_NAME_CHARS} characters",
                self.line_of(mapping, "name"),
            )
            return name[:MAX_NAME_CHARS]
        if "\n" in name.strip():
            self.error(f"the name of {where} must be one line", self.line_of(mapping, "name"))
        return name.strip() or fallback

    def identifier(self, mapping: LMap, where: str) -> str:
        ident = self.text(mapping, "identifier", where, required=True)
        if ident and not IDENTIFIER_RE.match(ident):
            self.error(
                f"identifier '{short(ident)}' must start with a letter or _ and hold only letters, "
                "digits and _ (at most 64)",
                self.line_of(mapping, "identifier"),
            )
        return ident

    def variables(self, raw: Any, line: int, stage: str | None) -> tuple[Variable, ...]:
        where = f"stage '{stage}'" if stage else "the pipeline"
        if raw is None:
            return ()
        if not isinstance(raw, LList):
            self.error(f"'variables' of {where} must be a list", line)
            return ()
        result: list[Variable] = []
        seen: set[str] = set()
        for item, item_line in zip(raw, raw.item_lines, strict=True):
            if not isinstance(item, LMap):
                self.error(f"each variable of {where} must be a mapping", item_line)
                continue
            result.append(self.variable(item, where, stage, seen))
        return tuple(result)

    def variable(self, item: LMap, where: str, stage: str | None, seen: set[str]) -> Variable:
        self.check_keys(
            item,
            {
                "name",
                "type",
                "value",
                "default",
                "allowed_values",
                "required",
                "description",
                "pattern",
                "multiline",
            },
            f"a variable of {where}",
        )
        name = self.text(item, "name", f"a variable of {where}", required=True)
        if name and not IDENTIFIER_RE.match(name):
            self.error(
                f"variable name '{short(name)}' must be an identifier", self.line_of(item, "name")
            )
        if name and name in seen:
            self.error(f"duplicate variable '{name}' in {where}", self.line_of(item, "name"))
        seen.add(name)
        vtype = self.text(item, "type", f"variable '{name}'") or "String"
        if vtype not in VARIABLE_TYPES:
            self.error(
                f"variable '{name}' has unknown type '{short(vtype)}' (use String, Number or Secret)",
                self.line_of(item, "type"),
            )
        if "value" not in item:
            self.error(
                f"variable '{name}' needs a 'value' (use <+input> for a runtime input)", item.line
            )
        value = item.get("value")
        if isinstance(value, (dict, list)):
            self.error(f"'value' of variable '{name}' must be text", self.line_of(item, "value"))
            value = None
        value = as_text(value)
        default = item.get("default")
        if isinstance(default, (dict, list)):
            self.error(
                f"'default' of variable '{name}' must be text", self.line_of(item, "default")
            )
            default = None
        if default is not None:
            default = as_text(default)
        allowed = self.allowed_values(item, name)
        required = item.get("required", False)
        if not isinstance(required, bool):
            self.error(
                f"'required' of variable '{name}' must be true or false",
                self.line_of(item, "required"),
            )
            required = False
        is_input = value == RUNTIME_INPUT
        if not is_input and RUNTIME_INPUT in value:
            self.error(
                f"variable '{name}': <+input> must be the whole value", self.line_of(item, "value")
            )
        if default is not None:
            limit = settings.STAGELINE_MAX_INPUT_CHARS
            if len(default) > limit:
                self.error(
                    f"default of variable '{name}' is longer than {limit} characters",
                    self.line_of(item, "default"),
                )
            if "\x00" in default:
                self.error(
                    f"default of variable '{name}' contains a NUL character",
                    self.line_of(item, "default"),
                )
        if default is not None and allowed and default not in allowed:
            self.error(
                f"default '{short(default)}' of variable '{name}' is not one of its allowed values "
                f"({short(', '.join(allowed), 200)})",
                self.line_of(item, "default"),
            )
        if not is_input and allowed and not EXPRESSION_RE.search(value) and value not in allowed:
            self.error(
                f"value '{short(value)}' of variable '{name}' is not one of its allowed values "
                f"({short(', '.join(allowed), 200)})",
                self.line_of(item, "value"),
            )
        if default is not None and EXPRESSION_RE.search(default):
            self.error(
                f"default of variable '{name}' cannot hold an expression (defaults are used as written)",
                self.line_of(item, "default"),
            )
        if vtype == "Number":
            for label, candidate in (("default", default), ("value", value)):
                if candidate and _is_fixed(candidate):
                    self.number(candidate, f"{label} of Number variable '{name}'", item, label)
            for candidate in allowed:
                self.number(
                    candidate,
                    f"allowed value of Number variable '{name}'",
                    item,
                    "allowed_values",
                )
        if vtype == "Secret":
            self.literal_secrets(item, name, value, default, allowed)
        pattern = self.pattern(item, name, vtype)
        multiline = item.get("multiline", False)
        if not isinstance(multiline, bool):
            self.error(
                f"'multiline' of variable '{name}' must be true or false",
                self.line_of(item, "multiline"),
            )
            multiline = False
        if multiline and vtype == "Number":
            self.error(
                f"'multiline' applies to String and Secret variables, not to Number '{name}'",
                self.line_of(item, "multiline"),
            )
        variable = Variable(
            name=name,
            type=vtype,
            value=value,
            default=default,
            allowed_values=allowed,
            required=required,
            description=self.text(item, "description", f"variable '{name}'"),
            stage=stage,
            line=item.line,
            pattern=pattern,
            multiline=multiline,
        )
        candidates = [("default", default)] if default is not None else []
        candidates += [("allowed_values", a) for a in allowed]
        if not is_input and not EXPRESSION_RE.search(value):
            candidates.append(("value", value))
        for label, candidate in candidates:
            problem = variable.value_problem(candidate) if candidate else ""
            if problem:
                what = "allowed value" if label == "allowed_values" else label
                shown = "***" if vtype == "Secret" else f"'{short(candidate)}'"
                self.error(
                    f"{what} {shown} of variable '{name}' {problem}",
                    self.line_of(item, label),
                )
        if not is_input and value:
            located = self.locate(item, "value", value, None, f"variable '{name}'")
            located.variable = variable
            self.texts.append(located)
        return variable

    def literal_secrets(
        self, item: LMap, name: str, value: str, default: str | None, allowed: tuple[str, ...]
    ) -> None:
        """A secret written in the YAML is refused at save: it belongs in the project's store."""
        store = (
            "keep it in the project's secret store (the project's Secrets page) and refer to it "
            f"as <+secrets.NAME>, e.g. value: <+secrets.{name}>"
        )
        literal_value = value != RUNTIME_INPUT and EXPRESSION_RE.sub("", value).strip()
        for label, present in (
            ("value", bool(literal_value)),
            ("default", bool(default)),
            ("allowed_values", bool(allowed)),
        ):
            if present:
                what = "are literal secrets" if label == "allowed_values" else "is a literal secret"
                self.save_errors.append(
                    SpecError(
                        f"the {label} of Secret variable '{name}' {what} in the YAML (readable by "
                        f"everyone who can see the definition): {store}",
                        self.line_of(item, label),
                    )
                )

    def pattern(self, item: LMap, name: str, vtype: str) -> str:
        if item.get("pattern") is None:
            return ""
        pattern = self.text(item, "pattern", f"variable '{name}'")
        line = self.line_of(item, "pattern")
        if vtype != "String":
            self.error(f"'pattern' applies to String variables, not to {vtype} '{name}'", line)
            return ""
        if len(pattern) > MAX_PATTERN_CHARS:
            self.error(
                f"the pattern of variable '{name}' is longer than {MAX_PATTERN_CHARS} characters",
                line,
            )
            return ""
        try:
            re.compile(pattern)
        except re.error as exc:
            self.error(
                f"the pattern of variable '{name}' is not a valid regular expression: {exc.msg}",
                line,
            )
            return ""
        return pattern

    def number(self, text: str, field: str, item: LMap, key: str) -> None:
        """Refuse ``text`` unless it is a number by the one grammar (``stageline.numbers``)."""
        try:
            parse_number(text, field)
        except NumberError as exc:
            self.error(str(exc), self.line_of(item, key))

    def allowed_values(self, item: LMap, name: str) -> tuple[str, ...]:
        raw = item.get("allowed_values")
        if raw is None:
            return ()
        if not isinstance(raw, list) or any(isinstance(a, (dict, list)) or a is None for a in raw):
            self.error(
                f"'allowed_values' of variable '{name}' must be a list of values",
                self.line_of(item, "allowed_values"),
            )
            return ()
        return tuple(as_text(a) for a in raw)

    # --- failure strategies (SPEC §9) -----------------------------------------------------------

    def failure_strategies(self, body: LMap, where: str) -> tuple[FailureRule, ...]:
        """The ``failure_strategies`` list of ``body`` (a pipeline, stage or step), each rule
        checked as SPEC §9's save-time validation says."""
        raw = body.get("failure_strategies")
        line = self.line_of(body, "failure_strategies")
        if raw is None:
            return ()
        if not isinstance(raw, LList):
            self.error(
                f"'failure_strategies' of {where} must be a list of '- on_failure: {{…}}'", line
            )
            return ()
        rules: list[FailureRule] = []
        for item, item_line in zip(raw, raw.item_lines, strict=True):
            if not isinstance(item, LMap) or set(item) != {"on_failure"}:
                self.error(
                    f"each item of 'failure_strategies' of {where} must be '- on_failure: {{…}}'",
                    item_line,
                )
                continue
            rule = self.failure_rule(item["on_failure"], self.line_of(item, "on_failure"), where)
            if rule is not None:
                rules.append(rule)
        return tuple(rules)

    def failure_rule(self, raw: Any, line: int, where: str) -> FailureRule | None:
        if not isinstance(raw, LMap):
            self.error(
                f"'on_failure' of {where} must be a mapping with 'errors' and 'action'", line
            )
            return None
        what = f"a failure strategy of {where}"
        self.check_keys(raw, {"errors", "exit_codes", "action"}, what)
        errors = self.error_classes(raw, what)
        exit_codes = self.exit_codes(raw, errors, what)
        if "action" not in raw:
            self.error(f"{what} needs an 'action'", raw.line)
            return None
        action = self.action(raw["action"], self.line_of(raw, "action"), what)
        if errors is None or exit_codes is None or action is None:
            return None
        return FailureRule(errors=errors, action=action, exit_codes=exit_codes, line=raw.line)

    def error_classes(self, raw: LMap, what: str) -> frozenset[str] | None:
        line = self.line_of(raw, "errors")
        value = raw.get("errors")
        known = ", ".join(ERROR_CLASSES) + f" or {ALL_ERRORS}"
        if not isinstance(value, LList) or not value:
            self.error(f"{what} needs 'errors': a list of error classes ({known})", line)
            return None
        found: set[str] = set()
        ok = True
        for item, item_line in zip(value, value.item_lines, strict=True):
            name = as_text(item) if not isinstance(item, (dict, list)) else ""
            if name == ALL_ERRORS:
                found.update(ERROR_CLASSES)
            elif name in ERROR_CLASSES:
                found.add(name)
            else:
                shown = short(name) if name else "a list or mapping"
                self.error(f"unknown error class '{shown}' in {what} (use {known})", item_line)
                ok = False
        return frozenset(found) if ok else None

    def exit_codes(
        self, raw: LMap, errors: frozenset[str] | None, what: str
    ) -> tuple[int, ...] | None:
        if "exit_codes" not in raw:
            return ()
        line = self.line_of(raw, "exit_codes")
        value = raw.get("exit_codes")
        if not isinstance(value, LList) or not value:
            self.error(f"'exit_codes' of {what} must be a list of exit codes (1 to 255)", line)
            return None
        if errors is not None and "script" not in errors:
            self.error(
                f"'exit_codes' of {what} narrows the 'script' class, which its 'errors' do not name",
                line,
            )
            return None
        codes: list[int] = []
        for item, item_line in zip(value, value.item_lines, strict=True):
            code = self.literal_int(item, "an exit code", item_line, minimum=1, maximum=255)
            if code is None:
                return None
            codes.append(code)
        return tuple(codes)

    def literal_int(
        self, value: Any, field: str, line: int, *, minimum: int, maximum: int
    ) -> int | None:
        """A whole number written as such (``stageline.numbers``): no expression, no input."""
        text = as_text(value) if not isinstance(value, (dict, list)) else ""
        if isinstance(value, str) and "<+" in value:
            self.error(
                f"{field} must be written as a number: expressions and inputs are not allowed here",
                line,
            )
            return None
        try:
            return parse_int(text, field, minimum=minimum, maximum=maximum)
        except NumberError as exc:
            self.error(str(exc), line)
            return None

    def literal_duration(self, value: Any, field: str, line: int) -> int | None:
        """A duration written as such (``parse_duration``): no expression, no input."""
        if isinstance(value, str) and "<+" in value:
            self.error(
                f"{field} must be written as a duration: expressions and inputs are not allowed here",
                line,
            )
            return None
        seconds = parse_duration(value)
        if seconds is None:
            self.error(
                f"{field} '{short(as_text(value))}' is not a duration like 30s, 10m, 1h or 1h30m",
                line,
            )
            return None
        if seconds > MAX_DURATION:
            self.error(f"{field} is longer than the maximum of {MAX_DURATION // 86400}d", line)
            return None
        return seconds

    def action(
        self, raw: Any, line: int, what: str, *, forbidden: tuple[str, ...] = (), role: str = ""
    ) -> Action | None:
        """An action mapping (``{type: …}`` and its settings); ``forbidden``: the types that may
        not stand here (``role`` says where: "on_exhausted", "on_timeout")."""
        label = f"'{role}' of {what}" if role else f"the action of {what}"
        if not isinstance(raw, LMap):
            self.error(f"{label} must be a mapping like {{type: retry, …}}", line)
            return None
        kind = self.text(raw, "type", label, required=True)
        if not kind:
            return None
        if kind not in ACTION_TYPES:
            self.error(
                f"unknown action '{short(kind)}' in {label} (use {', '.join(ACTION_TYPES)})",
                self.line_of(raw, "type"),
            )
            return None
        if kind in forbidden:
            allowed = ", ".join(t for t in ACTION_TYPES if t not in forbidden)
            self.error(f"{label} cannot be '{kind}' (use {allowed})", self.line_of(raw, "type"))
            return None
        if kind == "retry":
            self.check_keys(raw, {"type", "retry"}, label)
            return self.retry_action(raw, label)
        if kind == "manual_intervention":
            self.check_keys(raw, {"type", "timeout", "on_timeout"}, label)
            if "timeout" not in raw:
                self.error(
                    f"the manual intervention of {label} needs a 'timeout' (like 1h)", raw.line
                )
                return None
            timeout = self.literal_duration(
                raw["timeout"],
                "the timeout of the manual intervention",
                self.line_of(raw, "timeout"),
            )
            on_timeout = Action("mark_as_failure", line=raw.line)
            if "on_timeout" in raw:
                found = self.action(
                    raw["on_timeout"],
                    self.line_of(raw, "on_timeout"),
                    what,
                    forbidden=("retry", "manual_intervention"),
                    role="on_timeout",
                )
                if found is None:
                    return None
                on_timeout = found
            if timeout is None:
                return None
            return Action(kind, timeout=timeout, on_timeout=on_timeout, line=raw.line)
        self.check_keys(raw, {"type"}, label)
        return Action(kind, line=raw.line)

    def retry_action(self, raw: LMap, label: str) -> Action | None:
        settings_raw = raw.get("retry")
        if not isinstance(settings_raw, LMap):
            self.error(
                f"{label} needs 'retry: {{count: N}}' (1 to {MAX_RETRY_COUNT} further attempts)",
                self.line_of(raw, "retry"),
            )
            return None
        where = f"the retry of {label.removeprefix('the action of ')}"
        self.check_keys(settings_raw, {"count", "intervals", "on_exhausted"}, where)
        ok = True
        if "count" not in settings_raw:
            self.error(f"{where} needs a 'count' (1 to {MAX_RETRY_COUNT})", settings_raw.line)
            count = None
        else:
            count = self.literal_int(
                settings_raw["count"],
                "the retry count",
                self.line_of(settings_raw, "count"),
                minimum=1,
                maximum=MAX_RETRY_COUNT,
            )
        intervals: list[int] = []
        raw_intervals = settings_raw.get("intervals")
        if raw_intervals is not None:
            if not isinstance(raw_intervals, LList):
                self.error(
                    f"'intervals' of {where} must be a list of durations (like [10s, 30s])",
                    self.line_of(settings_raw, "intervals"),
                )
                ok = False
            else:
                for item, item_line in zip(raw_intervals, raw_intervals.item_lines, strict=True):
                    seconds = self.literal_duration(item, "a retry interval", item_line)
                    if seconds is None:
                        ok = False
                    else:
                        intervals.append(seconds)
                if count is not None and len(raw_intervals) > count:
                    self.error(
                        f"{where} has {len(raw_intervals)} intervals for {count} "
                        f"attempt{'s' if count != 1 else ''}: the extra ones would never apply",
                        self.line_of(settings_raw, "intervals"),
                    )
                    ok = False
        on_exhausted = Action("mark_as_failure", line=settings_raw.line)
        if "on_exhausted" in settings_raw:
            found = self.action(
                settings_raw["on_exhausted"],
                self.line_of(settings_raw, "on_exhausted"),
                label.removeprefix("the action of "),
                forbidden=("retry",),
                role="on_exhausted",
            )
            if found is None:
                ok = False
            else:
                on_exhausted = found
        if count is None or not ok:
            return None
        return Action(
            "retry",
            count=count,
            intervals=tuple(intervals),
            on_exhausted=on_exhausted,
            line=raw.line,
        )

    def step(self, raw: Any, line: int, stage: str, texts: list[_Text]) -> Step | None:
        if not isinstance(raw, LMap) or set(raw) != {"step"} or not isinstance(raw["step"], LMap):
            self.error(f"each item of 'steps' in stage '{stage}' must be '- step: {{…}}'", line)
            return None
        body = raw["step"]
        where = f"a step of stage '{stage}'"
        self.check_keys(
            body,
            {"identifier", "name", "type", "timeout", "spec", "description", "failure_strategies"},
            where,
        )
        ident = self.identifier(body, where)
        stype = self.text(body, "type", f"step '{ident}'", required=True)
        if stype and stype not in STEP_TYPES:
            self.error(
                f"step '{ident}' has unknown type '{short(stype)}' (use ShellScript, Approval or Wait)",
                self.line_of(body, "type"),
            )
        timeout = DEFAULT_TIMEOUTS.get(stype, 3600)
        if "timeout" in body:
            parsed = parse_duration(body["timeout"])
            if parsed is None:
                self.error(
                    f"timeout '{short(body['timeout'])}' of step '{ident}' is not a duration "
                    "like 30s, 10m, 1h or 1h30m",
                    self.line_of(body, "timeout"),
                )
            elif parsed > MAX_DURATION:
                self.error(
                    f"timeout '{short(body['timeout'])}' of step '{ident}' is longer than "
                    f"the maximum of {MAX_DURATION // 86400}d",
                    self.line_of(body, "timeout"),
                )
            else:
                timeout = parsed
        spec = body.get("spec")
        if spec is not None and not isinstance(spec, LMap):
            self.error(f"'spec' of step '{ident}' must be a mapping", self.line_of(body, "spec"))
            spec = None
        if spec is None:
            spec = LMap()
            spec.line, spec.key_lines, spec.value_marks = self.line_of(body, "spec"), {}, {}
        step_where = f"step '{ident}' of stage '{stage}'"
        script, message, duration = "", "", 0
        env: tuple[tuple[str, str], ...] = ()
        if stype == "ShellScript":
            self.check_keys(spec, {"script", "env"}, f"the spec of step '{ident}'")
            script = self.text(
                spec, "script", f"the spec of ShellScript step '{ident}'", required=True
            )
            if "script" in spec and spec.get("script") is not None and not script.strip():
                self.error(f"the script of step '{ident}' is empty", self.line_of(spec, "script"))
            located = self.locate(spec, "script", script, None, step_where)
            located.script = True
            texts.append(located)
            env = self.env(spec, ident, step_where, texts)
        elif stype == "Approval":
            self.check_keys(spec, {"message"}, f"the spec of step '{ident}'")
            message = (
                self.text(spec, "message", f"the spec of Approval step '{ident}'") or "Approve?"
            )
            texts.append(self.locate(spec, "message", message, None, step_where))
        elif stype == "Wait":
            self.check_keys(spec, {"duration"}, f"the spec of step '{ident}'")
            parsed = parse_duration(spec.get("duration"))
            if parsed is None:
                self.error(
                    f"Wait step '{ident}' needs a 'duration' like 30s or 5m",
                    self.line_of(spec, "duration")
                    if "duration" in spec
                    else self.line_of(body, "spec"),
                )
            elif parsed > MAX_DURATION:
                self.error(
                    f"duration of Wait step '{ident}' is longer than the maximum of {MAX_DURATION // 86400}d",
                    self.line_of(spec, "duration"),
                )
            else:
                duration = parsed
        return Step(
            identifier=ident,
            name=self.name(body, f"step '{ident}'", ident),
            type=stype,
            timeout=timeout,
            script=script,
            env=env,
            message=message,
            duration=duration,
            line=body.line,
            failure_strategies=self.failure_strategies(body, f"step '{ident}' of stage '{stage}'"),
        )

    def env(
        self, spec: LMap, ident: str, where: str, texts: list[_Text]
    ) -> tuple[tuple[str, str], ...]:
        raw_env = spec.get("env")
        if raw_env is None:
            return ()
        if not isinstance(raw_env, LMap) or any(
            isinstance(v, (dict, list)) for v in raw_env.values()
        ):
            self.error(
                f"'env' of step '{ident}' must map names to values", self.line_of(spec, "env")
            )
            return ()
        for key in raw_env:
            if not ENV_NAME_RE.match(key):
                self.error(
                    f"env name '{short(key)}' of step '{ident}' is not a valid variable name",
                    raw_env.key_lines[key],
                )
            elif key.upper().startswith(RESERVED_ENV_PREFIXES):
                self.error(
                    f"env name '{key}' of step '{ident}' is reserved (Stageline sets the names "
                    "starting with STAGELINE_ and SL_)",
                    raw_env.key_lines[key],
                )
            elif "\x00" in as_text(raw_env[key]):
                self.error(
                    f"env value '{key}' of step '{ident}' contains a NUL character",
                    raw_env.key_lines[key],
                )
        env = tuple((key, as_text(value)) for key, value in raw_env.items())
        for key, value in env:
            texts.append(self.locate(raw_env, key, value, None, f"env '{key}' of {where}"))
        return env

    def stage(self, raw: Any, line: int, group_index: int) -> Stage | None:
        if not isinstance(raw, LMap):
            self.error("a stage must be a mapping", line)
            return None
        self.check_keys(
            raw,
            {
                "identifier",
                "name",
                "description",
                "variables",
                "when",
                "steps",
                "runs_on",
                "failure_strategies",
            },
            "a stage",
        )
        ident = self.identifier(raw, "a stage")
        runs_on = self.text(raw, "runs_on", f"stage '{ident}'")
        if runs_on and not QUEUE_RE.match(runs_on):
            self.error(
                f"runs_on '{short(runs_on)}' of stage '{ident}' is not a valid queue name "
                "(letters, digits, _ . - ; at most 64)",
                self.line_of(raw, "runs_on"),
            )
        steps_raw = raw.get("steps")
        steps: list[Step] = []
        texts: list[_Text] = []
        if not isinstance(steps_raw, LList) or not steps_raw:
            self.error(
                f"stage '{ident}' needs a non-empty list of 'steps'", self.line_of(raw, "steps")
            )
        else:
            seen: set[str] = set()
            for item, item_line in zip(steps_raw, steps_raw.item_lines, strict=True):
                step = self.step(item, item_line, ident, texts)
                if step is None:
                    continue
                if step.identifier and step.identifier in seen:
                    self.error(
                        f"duplicate step identifier '{step.identifier}' in stage '{ident}'",
                        self.line_of(item["step"], "identifier"),
                    )
                seen.add(step.identifier)
                steps.append(step)
        first_variable = len(self.texts)
        variables = self.variables(raw.get("variables"), self.line_of(raw, "variables"), ident)
        variable_texts = self.texts[first_variable:]
        del self.texts[first_variable:]
        when = self.text(raw, "when", f"stage '{ident}'").strip()  # blank: no condition
        stage = Stage(
            identifier=ident,
            name=self.name(raw, f"stage '{ident}'", ident),
            description=self.text(raw, "description", f"stage '{ident}'"),
            steps=tuple(steps),
            variables=variables,
            when=when,
            runs_on=runs_on,
            group_index=group_index,
            line=raw.line,
            failure_strategies=self.failure_strategies(raw, f"stage '{ident}'"),
        )
        for located in variable_texts:
            located.where = f"{located.where} of stage '{ident}'"
        if when:
            located = self.locate(raw, "when", when, None, f"'when' of stage '{ident}'")
            self.condition(located)
            texts.append(located)
        for located in [*variable_texts, *texts]:
            located.stage = stage
            self.texts.append(located)
        self.stage_lines.append((ident, self.line_of(raw, "identifier")))
        return stage

    def condition(self, located: _Text) -> None:
        try:
            parse_condition(located.text)
        except ValueError as exc:
            self.error(f"{located.where}: {exc}", located.line)

    def pipeline(self, document: Any) -> PipelineSpec | None:
        if not isinstance(document, LMap) or "pipeline" not in document:
            self.error("the definition must start with 'pipeline:'", getattr(document, "line", 1))
            return None
        self.check_keys(document, {"pipeline"}, "the top level")
        body = document["pipeline"]
        if not isinstance(body, LMap):
            self.error("'pipeline' must be a mapping", self.line_of(document, "pipeline"))
            return None
        self.check_keys(
            body,
            {
                "name",
                "identifier",
                "description",
                "allow_stage_selection",
                "variables",
                "stages",
                "failure_strategies",
            },
            "the pipeline",
        )
        ident = self.identifier(body, "the pipeline")
        name = self.name(body, "the pipeline", "")
        if not name and not isinstance(body.get("name"), (dict, list)):
            self.error("the pipeline needs a 'name'", self.line_of(body, "name"))
        allow = body.get("allow_stage_selection", False)
        if not isinstance(allow, bool):
            self.error(
                "'allow_stage_selection' must be true or false",
                self.line_of(body, "allow_stage_selection"),
            )
            allow = False
        variables = self.variables(body.get("variables"), self.line_of(body, "variables"), None)
        groups = self.groups(body)
        self.duplicates(groups)
        spec = PipelineSpec(
            name=name,
            identifier=ident,
            description=self.text(body, "description", "the pipeline"),
            allow_stage_selection=allow,
            variables=variables,
            groups=tuple(groups),
            failure_strategies=self.failure_strategies(body, "the pipeline"),
        )
        self.references(spec)
        spec = replace(
            spec,
            warnings=tuple(self.arithmetic_warnings(spec)),
            save_errors=tuple(self.save_errors),
            secret_references=tuple(self.secret_references),
        )
        self.cycles(spec)
        return spec

    def groups(self, body: LMap) -> list[Group]:
        stages_raw = body.get("stages")
        groups: list[Group] = []
        if not isinstance(stages_raw, LList) or not stages_raw:
            self.error(
                "the pipeline needs a non-empty list of 'stages'", self.line_of(body, "stages")
            )
            return groups
        for item, item_line in zip(stages_raw, stages_raw.item_lines, strict=True):
            index = len(groups)
            if isinstance(item, LMap) and set(item) == {"stage"}:
                stage = self.stage(item["stage"], item_line, index)
                if stage:
                    groups.append(Group(index=index, parallel=False, stages=(stage,)))
            elif isinstance(item, LMap) and set(item) == {"parallel"}:
                members = item["parallel"]
                if not isinstance(members, LList) or not members:
                    self.error("'parallel' needs a list of '- stage: {…}' items", item_line)
                    continue
                stages: list[Stage] = []
                for member, member_line in zip(members, members.item_lines, strict=True):
                    if not isinstance(member, LMap) or set(member) != {"stage"}:
                        self.error("each item of 'parallel' must be '- stage: {…}'", member_line)
                        continue
                    stage = self.stage(member["stage"], member_line, index)
                    if stage:
                        stages.append(stage)
                if stages:
                    groups.append(Group(index=index, parallel=True, stages=tuple(stages)))
            else:
                self.error(
                    "each item of 'stages' must be '- stage: {…}' or '- parallel: […]'", item_line
                )
        return groups

    def duplicates(self, groups: list[Group]) -> None:
        seen: set[str] = set()
        for ident, line in self.stage_lines:
            if ident and ident in seen:
                self.error(f"duplicate stage identifier '{ident}'", line)
            seen.add(ident)
        parallel_ids = {group.identifier: group for group in groups if group.parallel}
        for ident, line in self.stage_lines:
            group = parallel_ids.get(ident)
            if group is not None:
                self.error(
                    f"stage identifier '{ident}' is the name of the parallel group at position "
                    f"{group.index + 1}; choose another",
                    line,
                )

    def references(self, spec: PipelineSpec) -> None:
        pipeline_vars = {v.name for v in spec.variables}
        group_of = {s.identifier: s.group_index for s in spec.stages}
        for located in self.texts:
            for match in EXPRESSION_RE.finditer(located.text):
                expr = match.group(1).strip()
                problem = reference_problem(expr, spec, pipeline_vars, group_of, located.stage)
                if problem:
                    self.error(f"{located.where}: {problem}", located.line_at(match.start()))
                elif expr.startswith(SECRETS_PREFIX):
                    self.secret_references.append(
                        (expr[len(SECRETS_PREFIX) :], located.line_at(match.start()))
                    )
            for match in UNCLOSED_EXPRESSION_RE.finditer(located.text):
                if not EXPRESSION_RE.match(located.text, match.start()):
                    fragment = short(located.text[match.start() :].split("\n", 1)[0], 30)
                    self.error(
                        f"{located.where}: the expression '{fragment}' is not closed with '>' "
                        "(expressions cannot be nested)",
                        located.line_at(match.start()),
                    )

    def arithmetic_warnings(self, spec: PipelineSpec) -> list[SpecError]:
        """A free-text input used where bash evaluates arithmetic (``pipelines.spec.arithmetic``)."""
        warnings: list[SpecError] = []
        for located in self.texts:
            if not located.script:
                continue
            spans = arithmetic_spans(located.text)
            for match in EXPRESSION_RE.finditer(located.text):
                if not in_spans(match.start(), spans):
                    continue
                for var in free_text_inputs(match.group(1).strip(), spec, located.stage):
                    warnings.append(
                        SpecError(
                            f"{located.where}: input '{var.key}' takes any text and bash "
                            f"evaluates it as arithmetic here ({ARITHMETIC_CONTEXTS}), where a "
                            "value like a[$(cmd)] runs cmd: give the input a 'pattern' "
                            "(e.g. '[0-9]+') or 'allowed_values', or make it a Number",
                            located.line_at(match.start()),
                        )
                    )
        return warnings

    def cycles(self, spec: PipelineSpec) -> None:
        """Refuse variables whose values refer to each other in a circle (they would resolve to "")."""
        edges: dict[tuple[str | None, str], list[tuple[str | None, str]]] = {}
        where: dict[tuple[str | None, str], _Text] = {}
        for located in self.texts:
            if located.variable is None:
                continue
            node = (located.stage.identifier if located.stage else None, located.variable.name)
            where.setdefault(node, located)
            for expr in EXPRESSION_RE.findall(located.text):
                parts = expr.strip().split(".")
                if len(parts) == 3 and parts[:2] == ["pipeline", "variables"]:
                    edges.setdefault(node, []).append((None, parts[2]))
                elif (
                    len(parts) == 3 and parts[:2] == ["stage", "variables"] and node[0] is not None
                ):
                    edges.setdefault(node, []).append((node[0], parts[2]))
        reported: set[tuple[str | None, str]] = set()
        state: dict[tuple[str | None, str], int] = {}  # 1: on the current path, 2: done
        for root in list(edges):
            if root in state:
                continue
            path = [root]
            pending = [iter(edges[root])]
            state[root] = 1
            while pending:
                target = next(pending[-1], None)
                if target is None:
                    state[path.pop()] = 2
                    pending.pop()
                elif state.get(target) == 1:
                    loop = path[path.index(target) :]
                    if not reported.intersection(loop):
                        reported.update(loop)
                        names = " → ".join(name for _, name in [*loop, target])
                        located = where[target]
                        self.error(f"{located.where} refers to itself ({names})", located.line)
                elif target not in state and target in edges:
                    state[target] = 1
                    path.append(target)
                    pending.append(iter(edges[target]))


def free_text_inputs(
    expr: str, spec: PipelineSpec, stage: Stage | None, depth: int = 0
) -> list[Variable]:
    """The free-text String inputs whose value ``<+expr>`` may carry (through fixed variables)."""
    parts = expr.split(".")
    if depth > 8 or len(parts) != 3 or parts[1] != "variables":
        return []
    if parts[0] == "pipeline":
        variables, scope = spec.variables, None
    elif parts[0] == "stage" and stage is not None:
        variables, scope = stage.variables, stage
    else:
        return []
    found: list[Variable] = []
    for var in variables:
        if var.name != parts[2]:
            continue
        if var.is_input:
            found += [var] if var.is_free_text else []
        else:
            for inner in EXPRESSION_RE.findall(str(var.value)):
                found += free_text_inputs(inner.strip(), spec, scope, depth + 1)
    return found


def _is_fixed(text: str) -> bool:
    """True for a fixed value (an input or a value holding an expression is not fixed)."""
    return text != RUNTIME_INPUT and not EXPRESSION_RE.search(text)


def reference_problem(
    expr: str,
    spec: PipelineSpec,
    pipeline_vars: set[str],
    group_of: dict[str, int],
    stage: Stage | None,
) -> str:
    """Why ``<+expr>`` cannot be resolved where it stands, or "" when it can."""
    parts = expr.split(".")
    if expr == "input":
        return "<+input> may only be the whole value of a variable"
    if parts[0] == "secrets":
        if len(parts) != 2 or not IDENTIFIER_RE.match(parts[1]):
            return f"<+{short(expr)}> is not a secret reference (write <+secrets.NAME>)"
        return ""
    if expr in (
        "pipeline.sequenceId",
        "pipeline.executionId",
        "pipeline.name",
        "pipeline.identifier",
    ):
        return ""
    if len(parts) == 3 and parts[:2] == ["pipeline", "variables"]:
        if parts[2] not in pipeline_vars:
            return f"unknown pipeline variable '{short(parts[2])}' in <+{short(expr)}>"
        return ""
    if len(parts) == 3 and parts[:2] == ["stage", "variables"]:
        if stage is None:
            return f"<+{short(expr)}> can only be used inside a stage"
        if parts[2] not in {v.name for v in stage.variables}:
            return f"unknown variable '{short(parts[2])}' of stage '{stage.identifier}' in <+{short(expr)}>"
        return ""
    if expr == "stage.identifier" or expr == "stage.name":
        return "" if stage is not None else f"<+{expr}> can only be used inside a stage"
    if len(parts) == 5 and parts[:2] == ["pipeline", "stages"] and parts[3] == "output":
        target = parts[2]
        if target not in group_of:
            return f"unknown stage '{short(target)}' in <+{short(expr)}>"
        if not parts[4].strip():
            return f"<+{short(expr)}> names no output"
        if stage is None:
            return f"a pipeline variable cannot read the output of stage '{target}'"
        if target == stage.identifier:
            return f"stage '{stage.identifier}' cannot read its own output in <+{short(expr)}>"
        if group_of[target] == stage.group_index:
            return f"stage '{stage.identifier}' reads the output of '{target}', which runs in parallel with it"
        if group_of[target] > stage.group_index:
            return f"stage '{stage.identifier}' reads the output of '{target}', which runs later"
        return ""
    return f"unknown expression <+{short(expr)}>"


def parse_pipeline(text: str) -> PipelineSpec:
    """Parse and validate a definition; raise ``SpecErrors`` listing every problem found."""
    if not isinstance(text, str):
        raise SpecErrors([SpecError("the definition must be text")])
    document = load_yaml(text)
    validator = _Validator()
    spec = validator.pipeline(document)
    if validator.errors or spec is None:
        raise SpecErrors(validator.errors or [SpecError("the definition is not a pipeline")])
    return spec


@lru_cache(maxsize=512)
def parse_cached(text: str) -> PipelineSpec:
    """``parse_pipeline`` for stored, already validated versions (immutable, so cacheable)."""
    return parse_pipeline(text)
