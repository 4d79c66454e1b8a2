"""Parse and validate pipeline YAML (SPEC §2) into an immutable ``PipelineSpec``.

Every problem is reported with the line it is on, so the editor and ``load_pipelines`` can
show "line 14: stage 'deploy' reads the output of 'smoke', which runs later". Parsing refuses
YAML features that only serve to attack a parser (anchors and aliases, deep nesting, huge
documents) before building anything.

Expressions (``<+pipeline.variables.X>`` …) are checked here when they can be: unknown
variables, unknown stages, and a stage reading the output of a stage that does not run
strictly before it. Their values are filled in at run time by ``pipelines.expressions``.
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
DURATION_RE = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
EXPRESSION_RE = re.compile(r"<\+([^<>]*)>")
RUNTIME_INPUT = "<+input>"
VARIABLE_TYPES = ("String", "Number", "Secret")
STEP_TYPES = ("ShellScript", "Approval", "Wait")
MAX_DEPTH = 20
DEFAULT_TIMEOUTS = {"ShellScript": 3600, "Approval": 86400, "Wait": 86400}


class SpecError(ValueError):
    """One problem in a pipeline definition, at a line (1-based; 0 when unknown)."""

    def __init__(self, message: str, line: int = 0):
        super().__init__(message)
        self.message = message
        self.line = line

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}" if self.line else self.message


class SpecErrors(ValueError):
    """All the problems found in one definition."""

    def __init__(self, errors: list[SpecError]):
        self.errors = sorted(errors, key=lambda e: e.line)
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
    line: int = 0
    key_lines: dict


class LList(list):
    line: int = 0
    item_lines: list


def _node_to_python(loader: yaml.SafeLoader, node: yaml.Node, depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise SpecError(f"the document nests deeper than {MAX_DEPTH} levels", node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        result = LMap()
        result.line = node.start_mark.line + 1
        result.key_lines = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise SpecError("mapping keys must be plain words", key_node.start_mark.line + 1)
            key = str(loader.construct_object(key_node))
            if key in result:
                raise SpecError(f"duplicate key '{key}'", key_node.start_mark.line + 1)
            result[key] = _node_to_python(loader, value_node, depth + 1)
            result.key_lines[key] = key_node.start_mark.line + 1
        return result
    if isinstance(node, yaml.SequenceNode):
        seq = LList()
        seq.line = node.start_mark.line + 1
        seq.item_lines = []
        for item in node.value:
            seq.append(_node_to_python(loader, item, depth + 1))
            seq.item_lines.append(item.start_mark.line + 1)
        return seq
    return loader.construct_object(node)


def load_yaml(text: str) -> Any:
    """Load YAML safely, with line numbers, refusing aliases, deep nesting and huge input."""
    limit = settings.STAGELINE_MAX_YAML_BYTES
    if len(text.encode("utf-8", "surrogatepass")) > limit:
        raise SpecErrors([SpecError(f"the definition is larger than {limit // 1024} KiB")])
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                raise SpecErrors(
                    [SpecError("YAML anchors and aliases are not allowed", event.start_mark.line + 1)]
                )
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            if node is None:
                raise SpecErrors([SpecError("the definition is empty", 1)])
            return _node_to_python(loader, node, 0)
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 0
        reason = exc.problem or exc.context or "it is not valid YAML"
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
    match = DURATION_RE.match(value.strip())
    if not match or not any(match.groups()):
        return None
    days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
    total = days * 86400 + hours * 3600 + minutes * 60 + seconds
    return total if total > 0 else None


class _Validator:
    def __init__(self) -> None:
        self.errors: list[SpecError] = []

    def error(self, message: str, line: int) -> None:
        self.errors.append(SpecError(message, line))

    def check_keys(self, mapping: LMap, allowed: set[str], where: str) -> None:
        for key in mapping:
            if key not in allowed:
                self.error(
                    f"unknown key '{key}' in {where} (allowed: {', '.join(sorted(allowed))})",
                    mapping.key_lines.get(key, mapping.line),
                )

    def line_of(self, mapping: Any, key: str) -> int:
        if isinstance(mapping, LMap):
            return mapping.key_lines.get(key, mapping.line)
        return 0

    def text(self, mapping: LMap, key: str, where: str, *, required: bool = False) -> str:
        value = mapping.get(key)
        if value is None:
            if required:
                self.error(f"{where} needs '{key}'", mapping.line)
            return ""
        if isinstance(value, (dict, list)):
            self.error(f"'{key}' in {where} must be text", self.line_of(mapping, key))
            return ""
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)

    def identifier(self, mapping: LMap, where: str) -> str:
        ident = self.text(mapping, "identifier", where, required=True)
        if ident and not IDENTIFIER_RE.match(ident):
            self.error(
                f"identifier '{ident}' must start with a letter or _ and hold only letters, "
                "digits and _ (at most 64)",
                self.line_of(mapping, "identifier"),
            )
        return ident

    def variables(self, raw: Any, line: int, stage: str | None) -> tuple[Variable, ...]:
        where = f"stage '{stage}'" if stage else "the pipeline"
        if raw is None:
            return ()
        if not isinstance(raw, list):
            self.error(f"'variables' of {where} must be a list", line)
            return ()
        result: list[Variable] = []
        seen: set[str] = set()
        for item, item_line in zip(raw, raw.item_lines, strict=True):
            if not isinstance(item, LMap):
                self.error(f"each variable of {where} must be a mapping", item_line)
                continue
            self.check_keys(
                item,
                {"name", "type", "value", "default", "allowed_values", "required", "description"},
                f"a variable of {where}",
            )
            name = self.text(item, "name", f"a variable of {where}", required=True)
            if name and not IDENTIFIER_RE.match(name):
                self.error(f"variable name '{name}' must be an identifier", item.line)
            if name in seen:
                self.error(f"duplicate variable '{name}' in {where}", item.line)
            seen.add(name)
            vtype = self.text(item, "type", f"variable '{name}'") or "String"
            if vtype not in VARIABLE_TYPES:
                self.error(
                    f"variable '{name}' has unknown type '{vtype}' (use String, Number or Secret)",
                    self.line_of(item, "type"),
                )
            if "value" not in item:
                self.error(
                    f"variable '{name}' needs a 'value' (use <+input> for a runtime input)",
                    item.line,
                )
            value = item.get("value")
            if isinstance(value, (dict, list)):
                self.error(f"'value' of variable '{name}' must be text", self.line_of(item, "value"))
                value = ""
            value = "" if value is None else (str(value).lower() if isinstance(value, bool) else str(value))
            default = item.get("default")
            if isinstance(default, (dict, list)):
                self.error(f"'default' of variable '{name}' must be text", self.line_of(item, "default"))
                default = None
            if default is not None:
                default = str(default).lower() if isinstance(default, bool) else str(default)
            allowed_raw = item.get("allowed_values")
            allowed: tuple[str, ...] = ()
            if allowed_raw is not None:
                if not isinstance(allowed_raw, list) or any(isinstance(a, (dict, list)) for a in allowed_raw):
                    self.error(
                        f"'allowed_values' of variable '{name}' must be a list of values",
                        self.line_of(item, "allowed_values"),
                    )
                else:
                    allowed = tuple(str(a) for a in allowed_raw)
            required = item.get("required", False)
            if not isinstance(required, bool):
                self.error(f"'required' of variable '{name}' must be true or false", self.line_of(item, "required"))
                required = False
            if default is not None and allowed and default not in allowed:
                self.error(
                    f"default '{default}' of variable '{name}' is not one of its allowed values "
                    f"({', '.join(allowed)})",
                    self.line_of(item, "default"),
                )
            if vtype == "Number":
                for label, candidate in (("default", default), ("value", value)):
                    if candidate and candidate != RUNTIME_INPUT and not EXPRESSION_RE.search(candidate) and not _is_number(candidate):
                        self.error(
                            f"{label} '{candidate}' of Number variable '{name}' is not a number",
                            self.line_of(item, label),
                        )
                for candidate in allowed:
                    if not _is_number(candidate):
                        self.error(
                            f"allowed value '{candidate}' of Number variable '{name}' is not a number",
                            self.line_of(item, "allowed_values"),
                        )
            if value != RUNTIME_INPUT and "<+input>" in value:
                self.error(
                    f"variable '{name}': <+input> must be the whole value", self.line_of(item, "value")
                )
            result.append(
                Variable(
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
            )
        return tuple(result)

    def step(self, raw: Any, line: int, stage: str) -> Step | None:
        if not isinstance(raw, LMap) or set(raw) != {"step"} or not isinstance(raw["step"], LMap):
            self.error(f"each item of 'steps' in stage '{stage}' must be '- step: {{…}}'", line)
            return None
        body = raw["step"]
        where = f"a step of stage '{stage}'"
        self.check_keys(body, {"identifier", "name", "type", "timeout", "spec", "description"}, where)
        ident = self.identifier(body, where)
        stype = self.text(body, "type", f"step '{ident}'", required=True)
        if stype and stype not in STEP_TYPES:
            self.error(
                f"step '{ident}' has unknown type '{stype}' (use ShellScript, Approval or Wait)",
                self.line_of(body, "type"),
            )
        timeout = DEFAULT_TIMEOUTS.get(stype, 3600)
        if "timeout" in body:
            parsed = parse_duration(body["timeout"])
            if parsed is None:
                self.error(
                    f"timeout '{body['timeout']}' of step '{ident}' is not a duration like 30s, 10m, 1h or 1h30m",
                    self.line_of(body, "timeout"),
                )
            else:
                timeout = parsed
        spec = body.get("spec", LMap())
        if not isinstance(spec, LMap):
            self.error(f"'spec' of step '{ident}' must be a mapping", self.line_of(body, "spec"))
            spec = LMap()
            spec.line, spec.key_lines = line, {}
        if not hasattr(spec, "key_lines"):
            spec.line, spec.key_lines = self.line_of(body, "spec") or line, {}
        script, message, duration, env = "", "", 0, ()
        if stype == "ShellScript":
            self.check_keys(spec, {"script", "env"}, f"the spec of step '{ident}'")
            script = self.text(spec, "script", f"the spec of ShellScript step '{ident}'", required=True)
            raw_env = spec.get("env")
            if raw_env is not None:
                if not isinstance(raw_env, LMap) or any(isinstance(v, (dict, list)) for v in raw_env.values()):
                    self.error(f"'env' of step '{ident}' must map names to values", self.line_of(spec, "env"))
                else:
                    for key in raw_env:
                        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", key):
                            self.error(f"env name '{key}' of step '{ident}' is not a valid variable name", raw_env.key_lines[key])
                    env = tuple((str(k), "" if v is None else str(v)) for k, v in raw_env.items())
        elif stype == "Approval":
            self.check_keys(spec, {"message"}, f"the spec of step '{ident}'")
            message = self.text(spec, "message", f"the spec of Approval step '{ident}'") or "Approve?"
        elif stype == "Wait":
            self.check_keys(spec, {"duration"}, f"the spec of step '{ident}'")
            parsed = parse_duration(spec.get("duration"))
            if parsed is None:
                self.error(
                    f"Wait step '{ident}' needs a 'duration' like 30s or 5m",
                    self.line_of(spec, "duration") or spec.line,
                )
            else:
                duration = parsed
        return Step(
            identifier=ident,
            name=self.text(body, "name", f"step '{ident}'") or ident,
            type=stype,
            timeout=timeout,
            script=script,
            env=env,
            message=message,
            duration=duration,
            line=body.line,
        )

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
            self.error(f"runs_on '{runs_on}' of stage '{ident}' is not a valid queue name", self.line_of(raw, "runs_on"))
        steps_raw = raw.get("steps")
        steps: list[Step] = []
        if not isinstance(steps_raw, list) or not steps_raw:
            self.error(f"stage '{ident}' needs a non-empty list of 'steps'", self.line_of(raw, "steps"))
        else:
            seen: set[str] = set()
            for item, item_line in zip(steps_raw, steps_raw.item_lines, strict=True):
                step = self.step(item, item_line, ident)
                if step is None:
                    continue
                if step.identifier in seen:
                    self.error(f"duplicate step identifier '{step.identifier}' in stage '{ident}'", step.line)
                seen.add(step.identifier)
                steps.append(step)
        return Stage(
            identifier=ident,
            name=self.text(raw, "name", f"stage '{ident}'") or ident,
            description=self.text(raw, "description", f"stage '{ident}'"),
            steps=tuple(steps),
            variables=self.variables(raw.get("variables"), self.line_of(raw, "variables"), ident),
            when=self.text(raw, "when", f"stage '{ident}'"),
            runs_on=runs_on,
            group_index=group_index,
            line=raw.line,
        )

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
        allow = body.get("allow_stage_selection", False)
        if not isinstance(allow, bool):
            self.error("'allow_stage_selection' must be true or false", self.line_of(body, "allow_stage_selection"))
            allow = False
        variables = self.variables(body.get("variables"), self.line_of(body, "variables"), None)
        stages_raw = body.get("stages")
        groups: list[Group] = []
        if not isinstance(stages_raw, list) or not stages_raw:
            self.error("the pipeline needs a non-empty list of 'stages'", self.line_of(body, "stages"))
        else:
            for item, item_line in zip(stages_raw, stages_raw.item_lines, strict=True):
                index = len(groups)
                if isinstance(item, LMap) and set(item) == {"stage"}:
                    stage = self.stage(item["stage"], item_line, index)
                    if stage:
                        groups.append(Group(index=index, parallel=False, stages=(stage,)))
                elif isinstance(item, LMap) and set(item) == {"parallel"}:
                    members = item["parallel"]
                    if not isinstance(members, list) or not members:
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
                    self.error("each item of 'stages' must be '- stage: {…}' or '- parallel: […]'", item_line)
        seen: dict[str, int] = {}
        for group in groups:
            for stage in group.stages:
                if stage.identifier in seen:
                    self.error(f"duplicate stage identifier '{stage.identifier}'", stage.line)
                seen[stage.identifier] = group.index
        spec = PipelineSpec(
            name=self.text(body, "name", "the pipeline", required=True),
            identifier=ident,
            description=self.text(body, "description", "the pipeline"),
            allow_stage_selection=allow,
            variables=variables,
            groups=tuple(groups),
        )
        self.expressions(spec)
        return spec

    def expressions(self, spec: PipelineSpec) -> None:
        pipeline_vars = {v.name for v in spec.variables}
        group_of = {s.identifier: s.group_index for s in spec.stages}

        def check(text: str, line: int, stage: Stage | None, where: str) -> None:
            for expr in EXPRESSION_RE.findall(text or ""):
                problem = reference_problem(expr.strip(), spec, pipeline_vars, group_of, stage)
                if problem:
                    self.error(f"{where}: {problem}", line)

        for var in spec.variables:
            if not var.is_input:
                check(str(var.value), var.line, None, f"variable '{var.name}'")
        for stage in spec.stages:
            for var in stage.variables:
                if not var.is_input:
                    check(str(var.value), var.line, stage, f"variable '{var.name}' of stage '{stage.identifier}'")
            if stage.when:
                check(stage.when, stage.line, stage, f"'when' of stage '{stage.identifier}'")
                try:
                    from pipelines.conditions import parse_condition

                    parse_condition(stage.when)
                except ValueError as exc:
                    self.error(f"'when' of stage '{stage.identifier}': {exc}", stage.line)
            for step in stage.steps:
                for text in (step.script, step.message, *(v for _, v in step.env)):
                    check(text, step.line, stage, f"step '{step.identifier}' of stage '{stage.identifier}'")


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
    if expr in ("pipeline.sequenceId", "pipeline.executionId", "pipeline.name", "pipeline.identifier"):
        return ""
    if len(parts) == 3 and parts[:2] == ["pipeline", "variables"]:
        if parts[2] not in pipeline_vars:
            return f"unknown pipeline variable '{parts[2]}' in <+{expr}>"
        return ""
    if len(parts) == 3 and parts[:2] == ["stage", "variables"]:
        if stage is None:
            return f"<+{expr}> can only be used inside a stage"
        if parts[2] not in {v.name for v in stage.variables}:
            return f"unknown variable '{parts[2]}' of stage '{stage.identifier}' in <+{expr}>"
        return ""
    if expr == "stage.identifier" or expr == "stage.name":
        return "" if stage is not None else f"<+{expr}> can only be used inside a stage"
    if len(parts) == 5 and parts[:2] == ["pipeline", "stages"] and parts[3] == "output":
        target = parts[2]
        if target not in group_of:
            return f"unknown stage '{target}' in <+{expr}>"
        if stage is None:
            return f"a pipeline variable cannot read the output of stage '{target}'"
        if target == stage.identifier:
            return f"stage '{stage.identifier}' cannot read its own output in <+{expr}>"
        if group_of[target] == stage.group_index:
            return f"stage '{stage.identifier}' reads the output of '{target}', which runs in parallel with it"
        if group_of[target] > stage.group_index:
            return f"stage '{stage.identifier}' reads the output of '{target}', which runs later"
        return ""
    return f"unknown expression <+{expr}>"


def _is_number(text: str) -> bool:
    try:
        float(text)
    except (TypeError, ValueError):
        return False
    return True


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
