"""Which stages a run runs: the one stage-selection rule (SPEC §5, issue 12 rule 3).

Run, Rerun, ``run_pipeline --stages`` and ``rerun_execution --stages`` all decide it here
(``executions.services.run_pipeline`` calls ``select_stages``):

- no selection given (``None``: the pipeline offers no picker, or the command got no
  ``--stages``) runs every stage;
- the picker starts with every stage ticked, and every ticked stage runs; every stage
  ticked is a full run, stored as no selection;
- an empty selection is refused: "pick at least one stage" (400 on a page, exit 2 in a command);
- a selection for a pipeline without ``allow_stage_selection``, an unknown stage, or a picked
  stage that needs the output of an unpicked one is refused with its reason.

The stages left out are created SKIPPED ("not selected for this run").
"""

from __future__ import annotations

from collections.abc import Sequence

from pipelines.spec.model import PipelineSpec
from stageline.errors import Invalid

EMPTY_SELECTION = "pick at least one stage"


def select_stages(spec: PipelineSpec, picked: Sequence[str] | None) -> list[str] | None:
    """The stages to run: ``None`` for every stage, else the picked ones in pipeline order.

    Raises ``Invalid`` for a selection that cannot run."""
    if picked is None:
        return None
    if not spec.allow_stage_selection:
        raise Invalid(f"Pipeline {spec.identifier} does not allow running selected stages.")
    if not picked:
        raise Invalid(EMPTY_SELECTION)
    unknown = [identifier for identifier in picked if spec.stage(identifier) is None]
    if unknown:
        raise Invalid(f"Unknown stage(s): {', '.join(unknown)}.")
    chosen = set(picked)
    for stage in spec.stages:
        needs = stage.output_references() - chosen if stage.identifier in chosen else set()
        if needs:
            raise Invalid(
                f"Stage '{stage.identifier}' needs the output of {', '.join(sorted(needs))}, "
                "which is not selected."
            )
    ordered = [stage.identifier for stage in spec.stages if stage.identifier in chosen]
    return None if len(ordered) == len(spec.stages) else ordered


def parse_stage_list(text: str | None) -> list[str] | None:
    """A command's ``--stages a,b``: ``None`` when the option is absent; ``""`` is an empty
    selection (refused by ``select_stages``)."""
    if text is None:
        return None
    return [part.strip() for part in text.split(",") if part.strip()]


def picker_rows(spec: PipelineSpec, picked: Sequence[str] | None) -> list[tuple[str, str, bool]]:
    """The picker: (identifier, name, ticked) per stage of ``spec``, in pipeline order. It starts
    with every stage ticked (``picked`` is ``None``); shown again after a refusal, it keeps what
    was posted."""
    return [
        (stage.identifier, stage.name, picked is None or stage.identifier in picked)
        for stage in spec.stages
    ]
