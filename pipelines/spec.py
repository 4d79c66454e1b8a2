"""Parse and validate pipeline YAML (SPEC §2) into an immutable ``PipelineSpec``.

Every problem is reported with the line it is on, so the editor and ``load_pipelines`` can
show "line 14: stage 'deploy' reads the output of 'smoke', which runs later". Parsing refuses
YAML features that only serve to attack a parser (anchors and aliases, deep nesting, huge
documents, tags that build objects) before building anything.

Scalars are read as text: only ``true``/``false`` (booleans) and ``null``/``~``/nothing are
interpreted, so ``1.10`` stays "1.10", ``12:30`` stays "12:30" and ``no`` stays "no" (the
YAML 1.1 surprises that turn a version into a float or Norway into false do not apply).

Expressions (``<+pipeline.variables.X>`` …) are checked here when they can be: unknown
variables, unknown stages, and a stage reading the output of a stage that does not run
strictly before it. Their values are filled in at run time by ``executions.context``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import yaml
from django.conf import settings

IDENTIFIER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
QUEUE_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
DURATION_RE = re.compile(
    r"^(?:([0-9]{1,9})d)?(?:([0-9]{1,9})h)?(?:([0-9]{1,9})m)?(?:([0-9]{1,9})s)?$"
)
NUMBER_RE = re.compile(r"^[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$")
EXPRESSION_RE = re.compile(r"<\+([^<>]*)>")
UNCLOSED_EXPRESSION_RE = re.compile(r"<\+\s*[A-Za-z]")
RUNTIME_INPUT = "<+input>"
VARIABLE_TYPES = ("String", "Number", "Secret")
STEP_TYPES = ("ShellScript", "Approval", "Wait")
MAX_DEPTH = 20
MAX_DURATION = 30 * 86400  # a timeout or a wait longer than 30 days is a typo
MAX_NAME_CHARS = 200  # the database columns that store pipeline, stage and step names
DEFAULT_TIMEOUTS = {"ShellScript": 3600, "Approval": 86400, "Wait": 86400}
RESERVED_ENV_PREFIXES = ("STAGELINE_", "SL_")
ALLOWED_TAGS = {
    "tag:yaml.org,2002:str",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:null",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:map",
    "tag:yaml.org,2002:seq",
}


class SpecError(ValueError):
    """One problem in a pipeline definition, at a line (1-based; 0 when unknown)."""

    def __init__(self, message: str, line: int = 0):
        super().__init__(message)
        self.message = message
        self.line = line

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}" if self.line else self.message


class SpecErrors(ValueError):
    """All the problems found in one definition, by line, each reported once."""

    def __init__(self, errors: list[SpecError]):
        unique: dict[tuple[int, str], SpecError] = {}
        for error in errors:
            unique.setdefault((error.line, error.message), error)
        self.errors = sorted(unique.values(), key=lambda e: e.line)
        super().__init__("; ".join(str(e) for e in self.errors))


# --- the model --------------------------------------------------------------------------


@dataclass(frozen=True)
class Variable:
    name: str
    type: str
    value: Any
    default: Any = None
    allowed_values: tuple[str, ...] = ()
    required: bool = False
    description: str = ""
    stage: str | None = None  # None: a pipeline-level variable
    line: int = 0

    @property
    def is_input(self) -> bool:
        return self.value == RUNTIME_INPUT

    @property
    def is_secret(self) -> bool:
        return self.type == "Secret"

    @property
    def key(self) -> str:
        """How the variable is named in forms, commands and ``Execution.inputs``."""
        return f"{self.stage}.{self.name}" if self.stage else self.name


@dataclass(frozen=True)
class Step:
    identifier: str
    name: str
    type: str
    timeout: int  # seconds
    script: str = ""
    env: tuple[tuple[str, str], ...] = ()
    message: str = ""
    duration: int = 0
    line: int = 0


@dataclass(frozen=True)
class Stage:
    identifier: str
    name: str
    steps: tuple[Step, ...]
    variables: tuple[Variable, ...] = ()
    when: str = ""
    runs_on: str = ""
    group_index: int = 0
    description: str = ""
    line: int = 0

    def output_references(self) -> set[str]:
        """Identifiers of the stages whose outputs this stage reads."""
        texts = [self.when] + [str(v.value) for v in self.variables]
        for step in self.steps:
            texts += [step.script, step.message] + [value for _, value in step.env]
        found: set[str] = set()
        for text in texts:
            for expr in EXPRESSION_RE.findall(text or ""):
                parts = expr.strip().split(".")
                if len(parts) == 5 and parts[:2] == ["pipeline", "stages"]:
                    found.add(parts[2])
        return found


@dataclass(frozen=True)
class Group:
    """A serial stage (one member) or a parallel group, at a position in the pipeline."""

    index: int
    parallel: bool
    stages: tuple[Stage, ...]

    @property
    def identifier(self) -> str:
        return self.stages[0].identifier if not self.parallel else f"parallel_{self.index + 1}"

    @property
    def name(self) -> str:
        if not self.parallel:
            return self.stages[0].name
        return "Parallel: " + ", ".join(stage.name for stage in self.stages)


@dataclass(frozen=True)
class PipelineSpec:
    name: str
    identifier: str
    groups: tuple[Group, ...]
    variables: tuple[Variable, ...] = ()
    allow_stage_selection: bool = False
    description: str = ""
    _stage_index: dict[str, Stage] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        for group in self.groups:
            for stage in group.stages:
                self._stage_index[stage.identifier] = stage

    @property
    def stages(self) -> list[Stage]:
        return [stage for group in self.groups for stage in group.stages]

    def stage(self, identifier: str) -> Stage | None:
        return self._stage_index.get(identifier)

    def group_of(self, stage_identifier: str) -> Group | None:
        stage = self.stage(stage_identifier)
        return self.groups[stage.group_index] if stage else None

    def group(self, identifier: str) -> Group | None:
        for group in self.groups:
            if group.identifier == identifier:
                return group
        return None

    @property
    def all_variables(self) -> list[Variable]:
        return list(self.variables) + [v for s in self.stages for v in s.variables]

    @property
    def inputs(self) -> list[Variable]:
        """Runtime inputs in pipeline order: pipeline-level first, then each stage's."""
        return [v for v in self.all_variables if v.is_input]

    @property
    def secret_variables(self) -> list[Variable]:
        return [v for v in self.all_variables if v.is_secret]


# --- loading YAML with line numbers -------------------------------------------------------


class LMap(dict):
    """A mapping that remembers its line, the line of each key and where each value starts."""

    line: int = 0
    key_lines: dict
    value_marks: dict  # key -> (line of the value's first character, scalar style or None)


class LList(list):
    line: int = 0
    item_lines: list


class _Resolver(yaml.resolver.Resolver):
    """Reads every plain scalar as text except true/false and null (see the module docstring)."""

    yaml_implicit_resolvers: dict = {}


_Resolver.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_Resolver.add_implicit_resolver(
    "tag:yaml.org,2002:null", re.compile(r"^(?:~|null|Null|NULL|)$"), ["~", "n", "N", ""]
)

# libyaml parses ten times faster than the pure-Python parser: a definition at the size limit
# is read in well under a second instead of twenty, so saving one cannot tie up a web worker.
LIBYAML = bool(getattr(yaml, "__with_libyaml__", False))
if LIBYAML:

    class _Loader(yaml.cyaml.CParser, yaml.constructor.SafeConstructor, _Resolver):
        def __init__(self, stream: str):
            yaml.cyaml.CParser.__init__(self, stream)
            yaml.constructor.SafeConstructor.__init__(self)
            _Resolver.__init__(self)

else:  # pragma: no cover - PyYAML built without libyaml

    class _Loader(  # type: ignore[no-redef]
        yaml.reader.Reader,
        yaml.scanner.Scanner,
        yaml.parser.Parser,
        yaml.composer.Composer,
        yaml.constructor.SafeConstructor,
        _Resolver,
    ):
        def __init__(self, stream: str):
            yaml.reader.Reader.__init__(self, stream)
            yaml.scanner.Scanner.__init__(self)
            yaml.parser.Parser.__init__(self)
            yaml.composer.Composer.__init__(self)
            yaml.constructor.SafeConstructor.__init__(self)
            _Resolver.__init__(self)


def _short(value: Any, limit: int = 60) -> str:
    """A value as it may appear inside a message: one line, at most ``limit`` characters."""
    text = _as_text(value).replace("\n", "\\n")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _tag_name(tag: str) -> str:
    return tag.replace("tag:yaml.org,2002:", "!!")


def _node_to_python(loader: Any, node: yaml.Node, depth: int) -> Any:
    line = node.start_mark.line + 1
    if depth > MAX_DEPTH:
        raise SpecError(f"the document nests deeper than {MAX_DEPTH} levels", line)
    if node.tag not in ALLOWED_TAGS:
        raise SpecError(f"the YAML tag '{_short(_tag_name(node.tag))}' is not allowed", line)
    if isinstance(node, yaml.MappingNode):
        result = LMap()
        result.line = line
        result.key_lines = {}
        result.value_marks = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag not in ALLOWED_TAGS:
                raise SpecError("mapping keys must be plain words", key_node.start_mark.line + 1)
            key = key_node.value
            if key in result:
                raise SpecError(f"duplicate key '{_short(key)}'", key_node.start_mark.line + 1)
            result[key] = _node_to_python(loader, value_node, depth + 1)
            result.key_lines[key] = key_node.start_mark.line + 1
            style = value_node.style if isinstance(value_node, yaml.ScalarNode) else None
            result.value_marks[key] = (value_node.start_mark.line + 1, style)
        return result
    if isinstance(node, yaml.SequenceNode):
        seq = LList()
        seq.line = line
        seq.item_lines = []
        for item in node.value:
            seq.append(_node_to_python(loader, item, depth + 1))
            seq.item_lines.append(item.start_mark.line + 1)
        return seq
    try:
        return loader.construct_object(node)
    except Exception:  # a bad !!int / !!float / !!bool value: its constructor raises anything
        raise SpecError(
            f"'{_short(node.value)}' is not a valid {_tag_name(node.tag)} value", line
        ) from None


def _check_events(text: str) -> None:
    """Refuse anchors, aliases, unknown tags and deep nesting from the event stream.

    PyYAML's parser is iterative; its composer is recursive. Checking events first means a
    hostile document is refused before anything recursive or expensive runs.
    """
    depth = 0
    for event in yaml.parse(text, Loader=_Loader):
        line = event.start_mark.line + 1
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise SpecError("YAML anchors and aliases are not allowed", line)
        tag = getattr(event, "tag", None)
        if tag is not None and tag not in ALLOWED_TAGS and tag != "!":
            raise SpecError(f"the YAML tag '{_short(_tag_name(tag))}' is not allowed", line)
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise SpecError(f"the document nests deeper than {MAX_DEPTH} levels", line)
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def _size(limit: int) -> str:
    return f"{limit // 1024} KiB" if limit >= 1024 and limit % 1024 == 0 else f"{limit} bytes"


def _yaml_reason(exc: yaml.MarkedYAMLError, text: str) -> str:
    problem, context = (exc.problem or "").strip(), (exc.context or "").strip()
    mark = exc.problem_mark
    if mark is not None and "cannot start any token" in problem:
        lines = re.split(r"\r\n|\r|\n", text)
        if mark.line < len(lines) and lines[mark.line][mark.column : mark.column + 1] == "\t":
            return "a tab cannot indent YAML: use spaces"
    if problem and context:
        return f"{context}, {problem}" if problem.startswith("but ") else f"{problem} ({context})"
    return problem or context or "it is not valid YAML"


def load_yaml(text: str) -> Any:
    """Load YAML safely, with line numbers, refusing aliases, deep nesting and huge input."""
    limit = settings.STAGELINE_MAX_YAML_BYTES
    if len(text.encode("utf-8", "surrogatepass")) > limit:
        raise SpecErrors([SpecError(f"the definition is larger than {_size(limit)}")])
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        line = text.count("\n", 0, exc.start) + 1
        raise SpecErrors(
            [SpecError("invalid YAML: the text holds a character that is not valid Unicode", line)]
        ) from None
    try:
        _check_events(text)
        loader = _Loader(text)
        try:
            node = loader.get_single_node()
            if node is None:
                raise SpecError("the definition is empty", 1)
            return _node_to_python(loader, node, 0)
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 0
        if "nesting depth" in (exc.problem or ""):  # libyaml's own limit, met while reading ahead
            raise SpecErrors(
                [SpecError(f"the document nests deeper than {MAX_DEPTH} levels", line)]
            ) from None
        raise SpecErrors([SpecError(f"invalid YAML: {_yaml_reason(exc, text)}", line)]) from None
    except yaml.reader.ReaderError as exc:
        # libyaml counts the position in UTF-8 bytes, the Python reader in characters
        before = (
            text.encode("utf-8")[: max(exc.position, 0)]
            if LIBYAML
            else text[: max(exc.position, 0)]
        )
        line = before.count(b"\n" if LIBYAML else "\n") + 1
        if isinstance(exc.character, int):
            reason = f"the character #x{exc.character:04x} is not allowed"
        else:
            reason = "the text is not valid UTF-8"
        raise SpecErrors([SpecError(f"invalid YAML: {reason}", line)]) from None
    except yaml.YAMLError as exc:
        raise SpecErrors([SpecError(f"invalid YAML: {exc}")]) from None
    except SpecError as exc:
        raise SpecErrors([exc]) from None
    except RecursionError:
        raise SpecErrors([SpecError("the document nests too deeply")]) from None


# --- validation -----------------------------------------------------------------------


def parse_duration(value: Any) -> int | None:
    """``30s``, ``10m``, ``1h30m``, ``2d`` or a whole number of seconds → seconds."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value > 0 else None
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    if text.isascii() and text.isdigit() and len(text) <= 9:
        return int(text) or None
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

    def line_at(self, offset: int) -> int:
        return self.line + self.text.count("\n", 0, offset) if self.literal else self.line


class _Validator:
    def __init__(self) -> None:
        self.errors: list[SpecError] = []
        self.texts: list[_Text] = []
        self.stage_lines: list[tuple[str, int]] = []  # (identifier, line) of every stage

    def error(self, message: str, line: int) -> None:
        self.errors.append(SpecError(message, line))

    def check_keys(self, mapping: LMap, allowed: set[str], where: str) -> None:
        for key in mapping:
            if key not in allowed:
                self.error(
                    f"unknown key '{_short(key)}' in {where} (allowed: {', '.join(sorted(allowed))})",
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
        return _as_text(value)

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
                f"identifier '{_short(ident)}' must start with a letter or _ and hold only letters, "
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
            {"name", "type", "value", "default", "allowed_values", "required", "description"},
            f"a variable of {where}",
        )
        name = self.text(item, "name", f"a variable of {where}", required=True)
        if name and not IDENTIFIER_RE.match(name):
            self.error(
                f"variable name '{_short(name)}' must be an identifier", self.line_of(item, "name")
            )
        if name and name in seen:
            self.error(f"duplicate variable '{name}' in {where}", self.line_of(item, "name"))
        seen.add(name)
        vtype = self.text(item, "type", f"variable '{name}'") or "String"
        if vtype not in VARIABLE_TYPES:
            self.error(
                f"variable '{name}' has unknown type '{_short(vtype)}' (use String, Number or Secret)",
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
        value = _as_text(value)
        default = item.get("default")
        if isinstance(default, (dict, list)):
            self.error(
                f"'default' of variable '{name}' must be text", self.line_of(item, "default")
            )
            default = None
        if default is not None:
            default = _as_text(default)
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
                f"default '{_short(default)}' of variable '{name}' is not one of its allowed values "
                f"({_short(', '.join(allowed), 200)})",
                self.line_of(item, "default"),
            )
        if not is_input and allowed and not EXPRESSION_RE.search(value) and value not in allowed:
            self.error(
                f"value '{_short(value)}' of variable '{name}' is not one of its allowed values "
                f"({_short(', '.join(allowed), 200)})",
                self.line_of(item, "value"),
            )
        if default is not None and EXPRESSION_RE.search(default):
            self.error(
                f"default of variable '{name}' cannot hold an expression (defaults are used as written)",
                self.line_of(item, "default"),
            )
        if vtype == "Number":
            for label, candidate in (("default", default), ("value", value)):
                if candidate and _is_fixed_non_number(candidate):
                    self.error(
                        f"{label} '{_short(candidate)}' of Number variable '{name}' is not a number",
                        self.line_of(item, label),
                    )
            for candidate in allowed:
                if not _is_number(candidate):
                    self.error(
                        f"allowed value '{_short(candidate)}' of Number variable '{name}' is not a number",
                        self.line_of(item, "allowed_values"),
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
        )
        if not is_input and value:
            located = self.locate(item, "value", value, None, f"variable '{name}'")
            located.variable = variable
            self.texts.append(located)
        return variable

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
        return tuple(_as_text(a) for a in raw)

    def step(self, raw: Any, line: int, stage: str, texts: list[_Text]) -> Step | None:
        if not isinstance(raw, LMap) or set(raw) != {"step"} or not isinstance(raw["step"], LMap):
            self.error(f"each item of 'steps' in stage '{stage}' must be '- step: {{…}}'", line)
            return None
        body = raw["step"]
        where = f"a step of stage '{stage}'"
        self.check_keys(
            body, {"identifier", "name", "type", "timeout", "spec", "description"}, where
        )
        ident = self.identifier(body, where)
        stype = self.text(body, "type", f"step '{ident}'", required=True)
        if stype and stype not in STEP_TYPES:
            self.error(
                f"step '{ident}' has unknown type '{_short(stype)}' (use ShellScript, Approval or Wait)",
                self.line_of(body, "type"),
            )
        timeout = DEFAULT_TIMEOUTS.get(stype, 3600)
        if "timeout" in body:
            parsed = parse_duration(body["timeout"])
            if parsed is None:
                self.error(
                    f"timeout '{_short(body['timeout'])}' of step '{ident}' is not a duration "
                    "like 30s, 10m, 1h or 1h30m",
                    self.line_of(body, "timeout"),
                )
            elif parsed > MAX_DURATION:
                self.error(
                    f"timeout '{_short(body['timeout'])}' of step '{ident}' is longer than "
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
        script, message, duration, env = "", "", 0, ()
        if stype == "ShellScript":
            self.check_keys(spec, {"script", "env"}, f"the spec of step '{ident}'")
            script = self.text(
                spec, "script", f"the spec of ShellScript step '{ident}'", required=True
            )
            if "script" in spec and spec.get("script") is not None and not script.strip():
                self.error(f"the script of step '{ident}' is empty", self.line_of(spec, "script"))
            texts.append(self.locate(spec, "script", script, None, step_where))
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
                    f"env name '{_short(key)}' of step '{ident}' is not a valid variable name",
                    raw_env.key_lines[key],
                )
            elif key.upper().startswith(RESERVED_ENV_PREFIXES):
                self.error(
                    f"env name '{key}' of step '{ident}' is reserved (Stageline sets the names "
                    "starting with STAGELINE_ and SL_)",
                    raw_env.key_lines[key],
                )
            elif "\x00" in _as_text(raw_env[key]):
                self.error(
                    f"env value '{key}' of step '{ident}' contains a NUL character",
                    raw_env.key_lines[key],
                )
        env = tuple((key, _as_text(value)) for key, value in raw_env.items())
        for key, value in env:
            texts.append(self.locate(raw_env, key, value, None, f"env '{key}' of {where}"))
        return env

    def stage(self, raw: Any, line: int, group_index: int) -> Stage | None:
        if not isinstance(raw, LMap):
            self.error("a stage must be a mapping", line)
            return None
        self.check_keys(
            raw,
            {"identifier", "name", "description", "variables", "when", "steps", "runs_on"},
            "a stage",
        )
        ident = self.identifier(raw, "a stage")
        runs_on = self.text(raw, "runs_on", f"stage '{ident}'")
        if runs_on and not QUEUE_RE.match(runs_on):
            self.error(
                f"runs_on '{_short(runs_on)}' of stage '{ident}' is not a valid queue name "
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
        from pipelines.conditions import parse_condition

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
            {"name", "identifier", "description", "allow_stage_selection", "variables", "stages"},
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
        )
        self.references(spec)
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
                problem = reference_problem(
                    match.group(1).strip(), spec, pipeline_vars, group_of, located.stage
                )
                if problem:
                    self.error(f"{located.where}: {problem}", located.line_at(match.start()))
            for match in UNCLOSED_EXPRESSION_RE.finditer(located.text):
                if not EXPRESSION_RE.match(located.text, match.start()):
                    fragment = _short(located.text[match.start() :].split("\n", 1)[0], 30)
                    self.error(
                        f"{located.where}: the expression '{fragment}' is not closed with '>' "
                        "(expressions cannot be nested)",
                        located.line_at(match.start()),
                    )

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


def _is_fixed_non_number(text: str) -> bool:
    """True for a fixed value that is not a number (an input or an expression is not fixed)."""
    return text != RUNTIME_INPUT and not EXPRESSION_RE.search(text) and not _is_number(text)


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
    if expr in (
        "pipeline.sequenceId",
        "pipeline.executionId",
        "pipeline.name",
        "pipeline.identifier",
    ):
        return ""
    if len(parts) == 3 and parts[:2] == ["pipeline", "variables"]:
        if parts[2] not in pipeline_vars:
            return f"unknown pipeline variable '{_short(parts[2])}' in <+{_short(expr)}>"
        return ""
    if len(parts) == 3 and parts[:2] == ["stage", "variables"]:
        if stage is None:
            return f"<+{_short(expr)}> can only be used inside a stage"
        if parts[2] not in {v.name for v in stage.variables}:
            return f"unknown variable '{_short(parts[2])}' of stage '{stage.identifier}' in <+{_short(expr)}>"
        return ""
    if expr == "stage.identifier" or expr == "stage.name":
        return "" if stage is not None else f"<+{expr}> can only be used inside a stage"
    if len(parts) == 5 and parts[:2] == ["pipeline", "stages"] and parts[3] == "output":
        target = parts[2]
        if target not in group_of:
            return f"unknown stage '{_short(target)}' in <+{_short(expr)}>"
        if not parts[4].strip():
            return f"<+{_short(expr)}> names no output"
        if stage is None:
            return f"a pipeline variable cannot read the output of stage '{target}'"
        if target == stage.identifier:
            return f"stage '{stage.identifier}' cannot read its own output in <+{_short(expr)}>"
        if group_of[target] == stage.group_index:
            return f"stage '{stage.identifier}' reads the output of '{target}', which runs in parallel with it"
        if group_of[target] > stage.group_index:
            return f"stage '{stage.identifier}' reads the output of '{target}', which runs later"
        return ""
    return f"unknown expression <+{_short(expr)}>"


def _is_number(text: str) -> bool:
    """A decimal number, as ``executions.inputs`` accepts it (no NaN, no infinity)."""
    return bool(NUMBER_RE.match(text.strip())) if isinstance(text, str) else False


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


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def mask_secrets(text: str, spec: PipelineSpec | None) -> str:
    """``text`` with the fixed values and defaults of Secret variables replaced by ``***``.

    Only the lines of each secret variable's own mapping are touched (from its first line up to
    the next line indented no deeper than it), so the rest of the definition reads unchanged.
    """
    if spec is None:
        return text
    lines = text.split("\n")
    for var in spec.secret_variables:
        literals = {str(v) for v in (var.value, var.default) if v not in (None, "", RUNTIME_INPUT)}
        if not literals or not 1 <= var.line <= len(lines):
            continue
        first = var.line - 1
        base = _indent(lines[first])  # the column of the item's "- " (or of its first key)
        end = first + 1
        while end < len(lines) and (not lines[end].strip() or _indent(lines[end]) > base):
            end += 1
        pattern = re.compile(
            "|".join(re.escape(lit) for lit in sorted(literals, key=len, reverse=True))
        )
        for index in range(first, end):
            lines[index] = pattern.sub("***", lines[index])
    return "\n".join(lines)


def secret_literals(spec: PipelineSpec) -> list[str]:
    """The fixed values and defaults of the Secret variables written in the definition."""
    return sorted(
        {
            str(value)
            for var in spec.secret_variables
            for value in (var.value, var.default)
            if value not in (None, "", RUNTIME_INPUT)
        },
        key=len,
        reverse=True,
    )
