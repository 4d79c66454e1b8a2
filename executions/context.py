"""Runtime values of expressions (``<+pipeline.variables.X>`` …) for one execution.

Expressions inside a ShellScript are never spliced into the script: each becomes a reference
to an environment variable (``${SL_PIPELINE_VARIABLES_VERSION}``) whose value is passed in the
step's environment, so a runtime input cannot inject shell syntax. Inside double quotes the
reference expands as one word; inside single quotes it is not expanded (as in any shell).
Everywhere else (approval messages, ``env`` values, variable values, conditions) the value is
substituted as text or compared as a value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from executions.models import Execution, StageRun
from executions.states import Status
from pipelines.secrets import pipeline_secret_values
from pipelines.spec.model import EXPRESSION_RE, PipelineSpec, Stage

MAX_NESTING = 8


def env_name(expr: str) -> str:
    """``pipeline.variables.version`` → ``SL_PIPELINE_VARIABLES_VERSION``."""
    cleaned = re.sub(r"[^A-Za-z0-9]+", "_", expr).strip("_").upper()
    return f"SL_{cleaned}"


@dataclass
class RunContext:
    spec: PipelineSpec
    execution_id: int
    sequence: int
    inputs: dict[str, str]  # all runtime input values, secrets included
    outputs: Mapping[str, dict[str, str]] = field(default_factory=dict)  # stage id → outputs
    project_secrets: Mapping[str, str] = field(default_factory=dict)  # <+secrets.NAME> values

    def variable_value(self, name: str, stage: Stage | None = None, depth: int = 0) -> str:
        variables = stage.variables if stage else self.spec.variables
        for var in variables:
            if var.name == name:
                if var.is_input:
                    value = self.inputs.get(var.key)
                    if value is None:
                        value = var.default if var.default is not None else ""
                    return str(value)
                return self.render(str(var.value), stage, depth + 1)
        return ""

    def resolve(self, expr: str, stage: Stage | None = None, depth: int = 0) -> str:
        if depth > MAX_NESTING:
            return ""
        expr = expr.strip()
        parts = expr.split(".")
        if expr == "pipeline.sequenceId":
            return str(self.sequence)
        if expr == "pipeline.executionId":
            return str(self.execution_id)
        if expr == "pipeline.name":
            return self.spec.name
        if expr == "pipeline.identifier":
            return self.spec.identifier
        if expr == "stage.identifier" and stage:
            return stage.identifier
        if expr == "stage.name" and stage:
            return stage.name
        if len(parts) == 3 and parts[:2] == ["pipeline", "variables"]:
            return self.variable_value(parts[2], None, depth)
        if len(parts) == 3 and parts[:2] == ["stage", "variables"] and stage:
            return self.variable_value(parts[2], stage, depth)
        if len(parts) == 5 and parts[:2] == ["pipeline", "stages"] and parts[3] == "output":
            return str(self.outputs.get(parts[2], {}).get(parts[4], ""))
        if len(parts) == 2 and parts[0] == "secrets":
            if parts[1] not in self.project_secrets:
                raise MissingSecret(
                    f"the project has no secret '{parts[1]}' any more (deleted since the "
                    "pipeline was saved): add it again on the project's Secrets page"
                )
            return self.project_secrets[parts[1]]
        return ""

    def render(self, text: str, stage: Stage | None = None, depth: int = 0) -> str:
        """Substitute every expression in ``text`` by its value (not for shell scripts)."""
        return EXPRESSION_RE.sub(lambda m: self.resolve(m.group(1), stage, depth), text or "")

    def render_script(self, script: str, stage: Stage) -> tuple[str, dict[str, str]]:
        """The script with expressions turned into ``${SL_…}`` references, and their values."""
        env: dict[str, str] = {}

        def replace(match: re.Match) -> str:
            expr = match.group(1).strip()
            name = env_name(expr)
            env[name] = self.resolve(expr, stage)
            return "${" + name + "}"

        return EXPRESSION_RE.sub(replace, script or ""), env

    def stage_environment(self, stage: Stage) -> dict[str, str]:
        """Every variable the stage can see, as ``SL_PIPELINE_VARIABLES_X`` / ``SL_STAGE_VARIABLES_X``."""
        env = {
            env_name(f"pipeline.variables.{v.name}"): self.variable_value(v.name)
            for v in self.spec.variables
        }
        env.update(
            {
                env_name(f"stage.variables.{v.name}"): self.variable_value(v.name, stage)
                for v in stage.variables
            }
        )
        return env

    def secret_values(self) -> list[str]:
        """The values of the Secret variables and of the project secrets the pipeline refers
        to, to mask (``stageline.masking``) wherever output is stored or shown."""
        values = [self.project_secrets[name] for name in self.project_secrets]
        for var in self.spec.secret_variables:
            stage = self.spec.stage(var.stage) if var.stage else None
            value = self.variable_value(var.name, stage)
            if value:
                values.append(value)
        # Longest first, so that a secret containing another is masked whole.
        return sorted(set(values), key=len, reverse=True)


class StageOutputs(Mapping):
    """Stage id → outputs of the execution's succeeded stages, read on first use: most steps
    never refer to another stage's output, and then the query is never made."""

    def __init__(self, execution_id: int):
        self.execution_id = execution_id
        self._loaded: dict[str, dict[str, str]] | None = None

    def _data(self) -> dict[str, dict[str, str]]:
        if self._loaded is None:
            rows = StageRun.objects.filter(execution_id=self.execution_id, status=Status.SUCCESS)
            self._loaded = {
                identifier: outputs or {}
                for identifier, outputs in rows.values_list("identifier", "outputs")
            }
        return self._loaded

    def __getitem__(self, key):
        return self._data()[key]

    def __iter__(self):
        return iter(self._data())

    def __len__(self) -> int:
        return len(self._data())


class ProjectSecrets(Mapping):
    """Name → value of the project secrets a pipeline refers to, decrypted on first use (a
    pipeline without ``<+secrets.…>`` never reads the store)."""

    def __init__(self, pipeline_id: int, names: set[str]):
        self.pipeline_id = pipeline_id
        self.names = names
        self._loaded: dict[str, str] | None = None

    def _data(self) -> dict[str, str]:
        if self._loaded is None:
            self._loaded = (
                pipeline_secret_values(self.pipeline_id, self.names) if self.names else {}
            )
        return self._loaded

    def __getitem__(self, key: str) -> str:
        return self._data()[key]

    def __iter__(self):
        return iter(self._data())

    def __len__(self) -> int:
        return len(self._data())


class MissingSecret(ValueError):
    """A ``<+secrets.NAME>`` whose secret was deleted after the pipeline was saved."""


def build_context(execution: Execution) -> RunContext:
    spec = execution.version.spec
    return RunContext(
        spec=spec,
        execution_id=execution.pk,
        sequence=execution.sequence,
        inputs={**(execution.inputs or {}), **(execution.secret_inputs or {})},
        outputs=StageOutputs(execution.pk),
        project_secrets=ProjectSecrets(
            execution.pipeline_id, {name for name, _ in spec.secret_references}
        ),
    )
