"""What every tab of a pipeline's page shows in its head: the tabs, Run (or why not), Edit."""

from __future__ import annotations

from pipelines import permissions
from pipelines.models import Pipeline


def run_reason(user, pipeline: Pipeline) -> str:
    """Why Run is disabled for ``user`` ("" when it is not)."""
    reason = permissions.why_not(user, "execute", pipeline)
    if not reason and pipeline.current_version_id is None:
        reason = "This pipeline has no definition yet."
    return reason


def pipeline_context(user, pipeline: Pipeline, tab: str) -> dict:
    """The context of the pipeline page's head, for the tab ``tab``."""
    return {
        "pipeline": pipeline,
        "project": pipeline.project,
        "tab": tab,
        "run_reason": run_reason(user, pipeline),
        "can_change": permissions.can(user, "change", pipeline),
    }
