"""Which failure strategy applies to a failure (SPEC §9): the one home of resolution.

Step rules, then stage rules, then pipeline rules: the nearest level that has a matching rule
decides, and there the first matching rule in written order. No match: ``mark_as_failure``
(what a failure did before strategies existed). ``decide`` adds the retry budget: a ``retry``
whose attempts are spent hands over to its ``on_exhausted``.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipelines.spec.model import Action, FailureRule, PipelineSpec, Stage, Step

MARK_AS_FAILURE = Action("mark_as_failure")
LEVELS = ("step", "stage", "pipeline")


@dataclass(frozen=True)
class Decision:
    """What to do with one failure: the ``action`` to apply now (never ``retry`` once its
    budget is spent), the ``rule`` and ``level`` it comes from (None, "": no rule matched),
    and for a retry the seconds to wait before the next attempt."""

    action: Action
    rule: FailureRule | None = None
    level: str = ""
    delay: int = 0
    exhausted: bool = False  # a retry rule matched but its attempts are spent

    @property
    def reason(self) -> str:
        """How the event history names what decided (SPEC §9 audit: "which rule")."""
        if self.rule is None:
            return "no failure strategy matched"
        return f"{self.level} failure strategy at line {self.rule.line}"


def matching_rule(
    step: Step, stage: Stage, pipeline: PipelineSpec, error_class: str, exit_code: int | None
) -> tuple[str, FailureRule] | None:
    """The rule that decides a failure of ``error_class`` (with ``exit_code``), and its level."""
    for level, rules in zip(
        LEVELS,
        (step.failure_strategies, stage.failure_strategies, pipeline.failure_strategies),
        strict=True,
    ):
        for rule in rules:
            if rule.matches(error_class, exit_code):
                return level, rule
    return None


def resolve(
    step: Step, stage: Stage, pipeline: PipelineSpec, error_class: str, exit_code: int | None
) -> Action:
    """The action a failure of ``error_class`` (with ``exit_code``) of ``step`` calls for."""
    found = matching_rule(step, stage, pipeline, error_class, exit_code)
    return found[1].action if found else MARK_AS_FAILURE


def decide(
    step: Step,
    stage: Stage,
    pipeline: PipelineSpec,
    error_class: str,
    exit_code: int | None,
    attempts: int,
) -> Decision:
    """``resolve`` for the failure of attempt number ``attempts`` (1: the first run): a retry
    rule allows ``count`` further attempts, after which its ``on_exhausted`` applies. A
    failure of a class the retry rule does not match resolves to another rule (or none),
    which ends the retries."""
    found = matching_rule(step, stage, pipeline, error_class, exit_code)
    if found is None:
        return Decision(MARK_AS_FAILURE)
    level, rule = found
    action = rule.action
    if action.type != "retry":
        return Decision(action, rule, level)
    if attempts <= action.count:
        return Decision(action, rule, level, delay=action.interval_before(attempts))
    return Decision(action.on_exhausted or MARK_AS_FAILURE, rule, level, exhausted=True)
