"""The immutable model of a parsed pipeline: ``PipelineSpec`` of ``Group``s of ``Stage``s of
``Step``s, with ``Variable``s at pipeline and stage level (SPEC §2)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from pipelines.spec.errors import SpecError

EXPRESSION_RE = re.compile(r"<\+([^<>]*)>")
RUNTIME_INPUT = "<+input>"
VARIABLE_TYPES = ("String", "Number", "Secret")
# Every character that ``str.splitlines`` (and so many a reader of a value) breaks a line at.
LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
LINE_BREAK_RE = re.compile(f"[{re.escape(LINE_BREAKS)}]")
STEP_TYPES = ("ShellScript", "Approval", "Wait")

# Failure strategies (SPEC §9): the classes of failure a rule may name, and its actions.
ERROR_CLASSES = ("script", "timeout", "worker_lost", "approval_rejected", "approval_expired")
ALL_ERRORS = "all"  # every class above (never a user's abort: that is no failure)
ACTION_TYPES = (
    "mark_as_failure",
    "abort",
    "retry",
    "ignore",
    "mark_as_success",
    "manual_intervention",
)
MAX_RETRY_COUNT = 10


@dataclass(frozen=True)
class Action:
    """What a failure strategy does. ``retry``: ``count`` further attempts, waiting
    ``intervals[k]`` seconds before attempt k+1 (the last interval repeats; none: at once), then
    ``on_exhausted``. ``manual_intervention``: a person answers within ``timeout`` seconds, or
    ``on_timeout`` applies."""

    type: str
    count: int = 0
    intervals: tuple[int, ...] = ()
    on_exhausted: Action | None = None
    timeout: int = 0
    on_timeout: Action | None = None
    line: int = 0

    def interval_before(self, retry: int) -> int:
        """Seconds to wait before the ``retry``-th retry (1-based): its interval, the last one
        repeated when there are fewer, 0 when there are none."""
        if not self.intervals:
            return 0
        return self.intervals[min(retry, len(self.intervals)) - 1]


@dataclass(frozen=True)
class FailureRule:
    """One ``- on_failure:`` item: the error classes it matches (``all`` expanded), the exit
    codes that narrow its ``script`` class (none: every code), and its action."""

    errors: frozenset[str]
    action: Action
    exit_codes: tuple[int, ...] = ()
    line: int = 0

    def matches(self, error_class: str, exit_code: int | None) -> bool:
        if error_class not in self.errors:
            return False
        if error_class == "script" and self.exit_codes:
            return exit_code in self.exit_codes
        return True


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
    pattern: str = ""  # a full-match regular expression (String variables)
    multiline: bool = False  # without it, a value holding any line break is refused

    @property
    def is_free_text(self) -> bool:
        """A String input that takes any text: no ``pattern``, no ``allowed_values``."""
        return self.type == "String" and not self.pattern and not self.allowed_values

    def value_problem(self, value: str) -> str:
        """Why ``value`` breaks this variable's ``multiline``/``pattern`` rules ("" if it does not)."""
        if not self.multiline and LINE_BREAK_RE.search(value):
            return "must be one line (it holds a line break; the variable may say multiline: true)"
        if self.pattern and not re.fullmatch(self.pattern, value):
            return f"does not match the pattern {self.pattern}"
        return ""

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
    failure_strategies: tuple[FailureRule, ...] = ()


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
    failure_strategies: tuple[FailureRule, ...] = ()

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
    failure_strategies: tuple[FailureRule, ...] = ()
    # What saving should point out without refusing (each with its line): a free-text input
    # in a bash arithmetic context (``pipelines.spec.arithmetic``).
    warnings: tuple[SpecError, ...] = field(default=(), compare=False)
    # What refuses a *new* save but not a stored version (which must stay readable and
    # runnable): a literal secret written in the YAML. Checked by ``pipelines.services``.
    save_errors: tuple[SpecError, ...] = field(default=(), compare=False)
    # ``<+secrets.NAME>`` references, (name, line): the project's store must hold each name.
    secret_references: tuple[tuple[str, int], ...] = field(default=(), compare=False)
    _stage_index: dict[str, Stage] = field(default_factory=dict, compare=False, repr=False)
    # Whether any level declares a failure rule (none: every failure is mark_as_failure, and
    # the engine takes its plain path without looking further).
    has_failure_strategies: bool = field(default=False, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        found = bool(self.failure_strategies)
        for group in self.groups:
            for stage in group.stages:
                self._stage_index[stage.identifier] = stage
                found = (
                    found
                    or bool(stage.failure_strategies)
                    or any(step.failure_strategies for step in stage.steps)
                )
        object.__setattr__(self, "has_failure_strategies", found)

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
