"""Failure strategies in the YAML (SPEC §9): what a valid definition becomes, every save-time
rule refusing a bad one with its line, and resolution (nearest level, first matching rule)."""

from __future__ import annotations

import io
import textwrap

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse
from django.utils.html import escape

from pipelines.models import PipelineVersion
from pipelines.spec import SpecErrors, parse_pipeline
from pipelines.spec.model import ERROR_CLASSES, Action
from pipelines.spec.strategies import decide, resolve
from tests.helpers import factories

SPEC_EXAMPLE = textwrap.dedent(
    """\
    pipeline:
      name: Deploy
      identifier: deploy_web
      failure_strategies:
        - on_failure: {errors: [all], action: {type: abort}}
      stages:
        - stage:
            identifier: deploy
            failure_strategies:
              - on_failure:
                  errors: [worker_lost, timeout]
                  action:
                    type: retry
                    retry:
                      count: 3
                      intervals: [10s, 30s]
                      on_exhausted: {type: manual_intervention, timeout: 1h, on_timeout: {type: abort}}
              - on_failure: {errors: [all], action: {type: mark_as_failure}}
            steps:
              - step:
                  identifier: smoke
                  type: ShellScript
                  spec: {script: ./smoke}
                  failure_strategies:
                    - on_failure: {errors: [script], exit_codes: [75], action: {type: retry, retry: {count: 2}}}
                    - on_failure: {errors: [all], action: {type: ignore}}
              - step:
                  identifier: roll
                  type: ShellScript
                  spec: {script: ./roll}
        - stage:
            identifier: verify
            steps:
              - step: {identifier: check, type: ShellScript, spec: {script: ./check}}
    """
)


def with_rule(rule: str, level: str = "step") -> str:
    """A one-stage pipeline with ``rule`` (YAML flow text of one ``on_failure``) at ``level``."""

    def block(indent: str) -> str:
        return f"\n{indent}failure_strategies:\n{indent}  - on_failure: {rule}"

    pipeline = block("  ") if level == "pipeline" else ""
    stage = block("        ") if level == "stage" else ""
    step = block("              ") if level == "step" else ""
    return (
        "pipeline:\n  name: P\n  identifier: p"
        + pipeline
        + "\n  stages:\n    - stage:\n        identifier: s"
        + stage
        + "\n        steps:\n          - step:\n              identifier: t\n"
        "              type: ShellScript\n              spec: {script: echo}" + step + "\n"
    )


def refused(text: str) -> list[str]:
    with pytest.raises(SpecErrors) as caught:
        parse_pipeline(text)
    return [str(error) for error in caught.value.errors]


def test_the_spec_example_parses_into_rules_at_each_level():
    spec = parse_pipeline(SPEC_EXAMPLE)
    assert spec.has_failure_strategies
    (pipeline_rule,) = spec.failure_strategies
    assert pipeline_rule.errors == frozenset(ERROR_CLASSES)
    assert pipeline_rule.action == Action("abort", line=5)
    retry, fallback = spec.stages[0].failure_strategies
    assert retry.errors == {"worker_lost", "timeout"}
    assert (retry.action.type, retry.action.count, retry.action.intervals) == ("retry", 3, (10, 30))
    exhausted = retry.action.on_exhausted
    assert exhausted is not None and exhausted.type == "manual_intervention"
    assert exhausted.timeout == 3600
    assert exhausted.on_timeout is not None and exhausted.on_timeout.type == "abort"
    assert fallback.action.type == "mark_as_failure"
    smoke = spec.stages[0].steps[0]
    assert smoke.failure_strategies[0].exit_codes == (75,)
    assert smoke.failure_strategies[0].action.on_exhausted == Action("mark_as_failure", line=25)


def test_a_pipeline_without_rules_says_so():
    text = with_rule("{errors: [all], action: {type: ignore}}")
    text = text.split("\n              failure_strategies")[0] + "\n"
    assert not parse_pipeline(text).has_failure_strategies


# Every save-time rule of SPEC §9, refused with the line it is on (lines of ``with_rule``:
# the on_failure item of the step is line 13, of the stage line 8, of the pipeline line 5).
@pytest.mark.parametrize(
    ("rule", "level", "expected"),
    [
        (
            "{errors: [network], action: {type: abort}}",
            "step",
            "line 13: unknown error class 'network'",
        ),
        (
            "{errors: [], action: {type: abort}}",
            "step",
            "line 13: a failure strategy of step 't' of stage 's' needs 'errors'",
        ),
        (
            "{action: {type: abort}}",
            "stage",
            "line 8: a failure strategy of stage 's' needs 'errors'",
        ),
        (
            "{errors: [all]}",
            "pipeline",
            "line 5: a failure strategy of the pipeline needs an 'action'",
        ),
        ("{errors: [all], action: {type: explode}}", "step", "line 13: unknown action 'explode'"),
        (
            "{errors: [all], action: abort}",
            "step",
            "line 13: the action of a failure strategy of step 't' of stage 's' must be a mapping",
        ),
        ("{errors: [all], when: x, action: {type: abort}}", "step", "line 13: unknown key 'when'"),
        (
            "{errors: [all], action: {type: abort, retry: {count: 2}}}",
            "step",
            "line 13: unknown key 'retry'",
        ),
        ("{errors: [all], action: {type: retry}}", "step", "needs 'retry: {count: N}'"),
        (
            "{errors: [all], action: {type: retry, retry: {intervals: [1s]}}}",
            "step",
            "needs a 'count' (1 to 10)",
        ),
        (
            "{errors: [all], action: {type: retry, retry: {count: 0}}}",
            "step",
            "the retry count must be a whole number of at least 1, not '0'",
        ),
        (
            "{errors: [all], action: {type: retry, retry: {count: 11}}}",
            "step",
            "the retry count must be a whole number of at most 10, not '11'",
        ),
        (
            "{errors: [all], action: {type: retry, retry: {count: 1_0}}}",
            "step",
            "the retry count must be a whole number (like 12), not '1_0'",
        ),
        (
            "{errors: [all], action: {type: retry, retry: {count: '<+input>'}}}",
            "step",
            "line 13: the retry count must be written as a number: expressions and inputs are not allowed here",
        ),
        (
            "{errors: [all], action: {type: retry, retry: {count: '<+pipeline.variables.n>'}}}",
            "stage",
            "line 8: the retry count must be written as a number: expressions",
        ),
        (
            "{errors: [all], action: {type: retry, retry: {count: 2, intervals: [soon]}}}",
            "step",
            "a retry interval 'soon' is not a duration",
        ),
        (
            "{errors: [all], action: {type: retry, retry: {count: 2, intervals: ['<+input>']}}}",
            "step",
            "a retry interval must be written as a duration: expressions and inputs are not allowed here",
        ),
        (
            "{errors: [all], action: {type: retry, retry: {count: 2, intervals: 10s}}}",
            "step",
            "must be a list of durations",
        ),
        (
            "{errors: [all], action: {type: retry, retry: {count: 1, intervals: [1s, 2s]}}}",
            "step",
            "has 2 intervals for 1 attempt: the extra ones would never apply",
        ),
        (
            "{errors: [all], action: {type: retry, retry: {count: 2, intervals: [31d]}}}",
            "step",
            "a retry interval is longer than the maximum of 30d",
        ),
        (
            "{errors: [all], action: {type: retry, retry: {count: 2, on_exhausted: {type: retry}}}}",
            "step",
            "line 13: 'on_exhausted' of a failure strategy of step 't' of stage 's' cannot be 'retry'",
        ),
        (
            "{errors: [all], action: {type: manual_intervention}}",
            "step",
            "line 13: the manual intervention of the action of a failure strategy of step 't' of stage 's' needs a 'timeout'",
        ),
        (
            "{errors: [all], action: {type: retry, retry: {count: 2, on_exhausted: {type: manual_intervention}}}}",
            "step",
            "needs a 'timeout' (like 1h)",
        ),
        (
            "{errors: [all], action: {type: manual_intervention, timeout: '<+input>'}}",
            "step",
            "the timeout of the manual intervention must be written as a duration: expressions",
        ),
        (
            "{errors: [all], action: {type: manual_intervention, timeout: 0s}}",
            "step",
            "the timeout of the manual intervention '0s' is not a duration",
        ),
        (
            "{errors: [all], action: {type: manual_intervention, timeout: 1h, on_timeout: {type: retry}}}",
            "step",
            "'on_timeout' of a failure strategy of step 't' of stage 's' cannot be 'retry'",
        ),
        (
            "{errors: [all], action: {type: manual_intervention, timeout: 1h, on_timeout: {type: manual_intervention, timeout: 1h}}}",
            "pipeline",
            "line 5: 'on_timeout' of a failure strategy of the pipeline cannot be 'manual_intervention'",
        ),
        (
            "{errors: [timeout], exit_codes: [1], action: {type: retry, retry: {count: 1}}}",
            "step",
            "narrows the 'script' class, which its 'errors' do not name",
        ),
        (
            "{errors: [script], exit_codes: [256], action: {type: ignore}}",
            "step",
            "an exit code must be a whole number of at most 255, not '256'",
        ),
        (
            "{errors: [script], exit_codes: 1, action: {type: ignore}}",
            "step",
            "must be a list of exit codes",
        ),
    ],
)
def test_a_bad_rule_is_refused_with_its_line_and_the_reason(rule, level, expected):
    errors = refused(with_rule(rule, level))
    assert any(expected in error for error in errors), errors


def test_failure_strategies_must_be_a_list_of_on_failure_items():
    text = with_rule("{errors: [all], action: {type: ignore}}").replace(
        "    - on_failure:", "    - on_error:"
    )
    assert (
        "line 13: each item of 'failure_strategies' of step 't' of stage 's' must be "
        in (refused(text)[0])
    )


def test_the_spec_example_as_written_in_a_block_refuses_on_the_right_lines():
    text = SPEC_EXAMPLE.replace("count: 3", "count: many").replace("timeout: 1h", "timeout: later")
    errors = refused(text)
    assert "line 15: the retry count must be a whole number (like 12), not 'many'" in errors
    assert any(
        e.startswith("line 17: the timeout of the manual intervention 'later'") for e in errors
    )


# --- resolution ------------------------------------------------------------------------------

SPEC = parse_pipeline(SPEC_EXAMPLE)
DEPLOY = SPEC.stages[0]
SMOKE, ROLL = DEPLOY.steps
VERIFY = SPEC.stages[1]
CHECK = VERIFY.steps[0]


@pytest.mark.parametrize(
    ("step", "stage", "error_class", "exit_code", "expected"),
    [
        # the step's own rules decide first, in written order
        (SMOKE, DEPLOY, "script", 75, "retry"),
        (SMOKE, DEPLOY, "script", 1, "ignore"),  # exit_codes narrows the first rule
        (SMOKE, DEPLOY, "timeout", None, "ignore"),  # the step has a match: the stage's is not read
        # no step rules: the stage's, first match in written order
        (ROLL, DEPLOY, "timeout", None, "retry"),
        (ROLL, DEPLOY, "worker_lost", None, "retry"),
        (ROLL, DEPLOY, "script", 1, "mark_as_failure"),
        # no step or stage rules: the pipeline's
        (CHECK, VERIFY, "script", 2, "abort"),
        (CHECK, VERIFY, "approval_rejected", None, "abort"),
    ],
)
def test_resolution_takes_the_nearest_level_then_the_first_matching_rule(
    step, stage, error_class, exit_code, expected
):
    assert resolve(step, stage, SPEC, error_class, exit_code).type == expected


def test_no_rule_at_any_level_is_mark_as_failure():
    spec = parse_pipeline(with_rule("{errors: [timeout], action: {type: ignore}}", "stage"))
    stage = spec.stages[0]
    assert resolve(stage.steps[0], stage, spec, "script", 1).type == "mark_as_failure"
    assert resolve(stage.steps[0], stage, spec, "timeout", None).type == "ignore"


@pytest.mark.parametrize(
    ("attempts", "action", "delay", "exhausted"),
    [
        (1, "retry", 10, False),  # before the 2nd attempt: intervals[0]
        (2, "retry", 30, False),  # before the 3rd: intervals[1]
        (3, "retry", 30, False),  # before the 4th: the last interval repeats
        (4, "manual_intervention", 0, True),  # 3 retries spent: on_exhausted
    ],
)
def test_a_retry_waits_its_intervals_then_hands_over_to_on_exhausted(
    attempts, action, delay, exhausted
):
    decision = decide(ROLL, DEPLOY, SPEC, "timeout", None, attempts)
    assert (decision.action.type, decision.delay, decision.exhausted) == (action, delay, exhausted)
    assert decision.reason == "stage failure strategy at line 11"


def test_a_failure_the_retry_rule_does_not_match_ends_the_retries():
    # attempt 2 of ``roll`` fails with a non-zero exit: the timeout rule does not match it
    decision = decide(ROLL, DEPLOY, SPEC, "script", 1, 2)
    assert decision.action.type == "mark_as_failure"
    assert decide(SMOKE, DEPLOY, SPEC, "script", 75, 3).action.type == "mark_as_failure"
    assert (
        decide(CHECK, VERIFY, SPEC, "script", 75, 1).reason == "pipeline failure strategy at line 5"
    )


# --- where a definition is saved ---------------------------------------------------------------

# Two of §9's save-time refusals, each with its line wherever a definition is saved.
BAD_RULES = [
    pytest.param(
        "{errors: [all], action: {type: retry, retry: {count: 2, on_exhausted: {type: retry}}}}",
        "'on_exhausted' of a failure strategy of step 't' of stage 's' cannot be 'retry'",
        id="on_exhausted_retry",
    ),
    pytest.param(
        "{errors: [all], action: {type: manual_intervention, on_timeout: {type: ignore}}}",
        "the manual intervention of the action of a failure strategy of step 't' of stage 's' "
        "needs a 'timeout' (like 1h)",
        id="intervention_without_timeout",
    ),
]


@pytest.mark.django_db
@pytest.mark.parametrize(("rule", "problem"), BAD_RULES)
def test_load_pipelines_reports_a_bad_rule_as_file_line_problem(tmp_path, rule, problem):
    (tmp_path / "flaky.yaml").write_text(with_rule(rule))
    err = io.StringIO()
    with pytest.raises(CommandError):
        call_command("load_pipelines", "acme/web", str(tmp_path), stdout=io.StringIO(), stderr=err)
    assert f"  flaky.yaml:13: {problem}" in err.getvalue()


@pytest.mark.django_db
@pytest.mark.parametrize(("rule", "problem"), BAD_RULES)
def test_the_editor_refuses_a_bad_rule_with_its_line(client, personas, rule, problem):
    good = with_rule("{errors: [all], action: {type: ignore}}")
    pipeline = factories.make_pipeline(personas.project, good, user=personas.admin)
    client.force_login(personas.admin)
    response = client.post(
        reverse("pipeline_edit", args=["acme", "web", pipeline.identifier]),
        {"yaml": with_rule(rule), "base_version": "1"},
    )
    assert response.status_code == 400
    page = response.content.decode()
    assert f"line 13: {escape(problem)}" in page
    assert PipelineVersion.objects.filter(pipeline=pipeline).count() == 1
