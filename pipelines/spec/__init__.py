"""Parse and validate pipeline YAML (SPEC §2) into an immutable ``PipelineSpec``.

Every problem is reported with the line it is on, so the editor and ``load_pipelines`` can
show "line 14: stage 'deploy' reads the output of 'smoke', which runs later".

- ``model``: the frozen dataclasses (``PipelineSpec``, ``Group``, ``Stage``, ``Step``,
  ``Variable``) and what can be read from them;
- ``loader``: safe YAML loading that keeps line numbers (``load_yaml``);
- ``validate``: the rules of a definition (``parse_pipeline``, ``parse_cached``);
- ``errors``: ``SpecError`` (one problem at a line) and ``SpecErrors`` (all of them).

The names below are the package's public surface.
"""

from pipelines.spec.errors import SpecError, SpecErrors
from pipelines.spec.loader import load_yaml
from pipelines.spec.model import (
    EXPRESSION_RE,
    RUNTIME_INPUT,
    Group,
    PipelineSpec,
    Stage,
    Step,
    Variable,
)
from pipelines.spec.redact import mask_secrets
from pipelines.spec.validate import parse_cached, parse_duration, parse_pipeline

__all__ = [
    "EXPRESSION_RE",
    "RUNTIME_INPUT",
    "Group",
    "PipelineSpec",
    "SpecError",
    "SpecErrors",
    "Stage",
    "Step",
    "Variable",
    "load_yaml",
    "mask_secrets",
    "parse_cached",
    "parse_duration",
    "parse_pipeline",
]
