"""Parsing and validating pipeline YAML: what a valid definition becomes, and how every
mistake is refused with the line it is on and a message that names the problem."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from pipelines.spec import (
    Group,
    PipelineSpec,
    SpecError,
    SpecErrors,
    Stage,
    Step,
    Variable,
    load_yaml,
    parse_cached,
    parse_duration,
    parse_pipeline,
)

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples" / "pipelines").glob("*.yaml"))


def doc(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def line_with(text: str, fragment: str, occurrence: int = 1) -> int:
    """The 1-based line of the ``occurrence``-th line of ``text`` containing ``fragment``."""
    found = [n for n, line in enumerate(text.splitlines(), start=1) if fragment in line]
    assert len(found) >= occurrence, f"{fragment!r} is not in the YAML"
    return found[occurrence - 1]


def refusal(text: str) -> list[SpecError]:
    with pytest.raises(SpecErrors) as caught:
        parse_pipeline(text)
    return caught.value.errors


def assert_refused(text: str, message: str, line: int) -> SpecError:
    """``text`` is refused with an error at ``line`` whose message contains ``message``."""
    errors = refusal(text)
    matching = [e for e in errors if message in e.message]
    assert matching, f"no error says {message!r}; got {[str(e) for e in errors]}"
    assert line in [e.line for e in matching], (
        f"{message!r} is not on line {line}: {[str(e) for e in matching]}"
    )
    return next(e for e in matching if e.line == line)


def one_stage(stage_body: str = "", *, variables: str = "", steps: str | None = None) -> str:
    """A pipeline with one stage ``s``; ``stage_body`` and ``steps`` are YAML at stage indent."""
    if steps is None:
        steps = """\
            steps:
              - step:
                  identifier: run
                  type: ShellScript
                  spec:
                    script: echo hi
        """
    text = "pipeline:\n  name: P\n  identifier: p\n"
    if variables:
        text += (
            "  variables:\n"
            + textwrap.indent(textwrap.dedent(variables).strip("\n"), "    ")
            + "\n"
        )
    text += "  stages:\n    - stage:\n        identifier: s\n"
    if stage_body:
        text += textwrap.indent(textwrap.dedent(stage_body).strip("\n"), "        ") + "\n"
    text += textwrap.indent(textwrap.dedent(steps).strip("\n"), "        ") + "\n"
    return text


FULL = doc(
    """
    pipeline:
      name: Web deploy
      identifier: web_deploy
      description: Build then deploy.
      allow_stage_selection: true
      variables:
        - name: version
          type: String
          value: <+input>
          default: "1.4.0"
          allowed_values: ["1.4.0", "1.5.0"]
          required: true
          description: What to ship
        - name: registry
          value: registry.example/web
        - {name: token, type: Secret, value: <+input>}
        - {name: replicas, type: Number, value: <+input>, default: 3, allowed_values: [1, 3, 5]}
      stages:
        - stage:
            identifier: build
            name: Build
            runs_on: builders-x86.linux
            variables:
              - {name: target, type: String, value: <+input>, default: linux}
              - {name: image, value: "<+pipeline.variables.registry>:<+pipeline.variables.version>"}
            when: <+pipeline.variables.version> != ""
            steps:
              - step:
                  identifier: compile
                  name: Compile
                  type: ShellScript
                  timeout: 1h30m
                  spec:
                    script: |
                      echo "building <+stage.variables.image> for <+stage.variables.target>"
                      echo "image=<+stage.variables.image>" >> "$STAGELINE_OUTPUT"
                    env:
                      GOOS: <+stage.variables.target>
                      VERBOSE: true
              - step: {identifier: pause, type: Wait, spec: {duration: 30s}}
        - parallel:
            - stage:
                identifier: deploy_eu
                name: Deploy EU
                steps:
                  - step: {identifier: roll, type: ShellScript, timeout: 90, spec: {script: "echo <+pipeline.stages.build.output.image>"}}
            - stage:
                identifier: deploy_us
                steps:
                  - step: {identifier: roll, type: ShellScript, spec: {script: echo us}}
        - stage:
            identifier: approve
            name: Approve production
            when: <+pipeline.stages.deploy_eu.output.ok> == "yes" && <+pipeline.stages.deploy_us.output.ok> == "yes"
            steps:
              - step: {identifier: gate, type: Approval, timeout: 2d, spec: {message: "Ship <+pipeline.stages.build.output.image>?"}}
              - step: {identifier: gate2, type: Approval}
    """
)


# --- what a valid definition becomes ---------------------------------------------------------


def test_a_full_pipeline_parses_into_groups_in_order():
    spec = parse_pipeline(FULL)
    assert isinstance(spec, PipelineSpec)
    assert (spec.name, spec.identifier, spec.description) == (
        "Web deploy",
        "web_deploy",
        "Build then deploy.",
    )
    assert spec.allow_stage_selection is True
    assert [(g.index, g.parallel, g.identifier) for g in spec.groups] == [
        (0, False, "build"),
        (1, True, "parallel_2"),
        (2, False, "approve"),
    ]
    assert spec.groups[1].name == "Parallel: Deploy EU, deploy_us"
    assert [s.identifier for s in spec.stages] == ["build", "deploy_eu", "deploy_us", "approve"]
    assert [s.group_index for s in spec.stages] == [0, 1, 1, 2]
    assert spec.group_of("deploy_us") is spec.groups[1]
    assert spec.group("parallel_2") is spec.groups[1]
    assert spec.stage("approve").name == "Approve production"
    assert (
        spec.stage("deploy_us").name == "deploy_us"
    )  # a stage without a name shows its identifier
    assert (
        spec.stage("nope") is None and spec.group("nope") is None and spec.group_of("nope") is None
    )


def test_a_full_pipeline_parses_its_variables_and_runtime_inputs():
    spec = parse_pipeline(FULL)
    version, registry, token, replicas = spec.variables
    assert version == Variable(
        name="version",
        type="String",
        value="<+input>",
        default="1.4.0",
        allowed_values=("1.4.0", "1.5.0"),
        required=True,
        description="What to ship",
        stage=None,
        line=line_with(FULL, "- name: version"),
    )
    assert version.is_input and not registry.is_input
    assert (registry.type, registry.value, registry.default) == (
        "String",
        "registry.example/web",
        None,
    )
    assert token.is_secret and spec.secret_variables == [token]
    assert (replicas.type, replicas.default, replicas.allowed_values) == (
        "Number",
        "3",
        ("1", "3", "5"),
    )
    assert [v.key for v in spec.inputs] == ["version", "token", "replicas", "build.target"]
    assert [v.key for v in spec.all_variables] == [
        "version",
        "registry",
        "token",
        "replicas",
        "build.target",
        "build.image",
    ]
    assert spec.stage("build").variables[0].stage == "build"


def test_a_full_pipeline_parses_steps_with_timeouts_in_seconds_env_and_defaults():
    spec = parse_pipeline(FULL)
    build = spec.stage("build")
    assert build.runs_on == "builders-x86.linux"
    assert build.when == '<+pipeline.variables.version> != ""'
    compile_step, pause = build.steps
    assert isinstance(compile_step, Step)
    assert (compile_step.identifier, compile_step.name, compile_step.type) == (
        "compile",
        "Compile",
        "ShellScript",
    )
    assert compile_step.timeout == 5400
    assert (
        compile_step.script.splitlines()[0]
        == 'echo "building <+stage.variables.image> for <+stage.variables.target>"'
    )
    assert compile_step.env == (("GOOS", "<+stage.variables.target>"), ("VERBOSE", "true"))
    assert compile_step.line == line_with(FULL, "identifier: compile")
    assert (pause.type, pause.duration, pause.timeout, pause.name) == ("Wait", 30, 86400, "pause")
    assert spec.stage("deploy_eu").steps[0].timeout == 90  # a plain number is seconds
    assert spec.stage("deploy_us").steps[0].timeout == 3600  # ShellScript default
    gate, gate2 = spec.stage("approve").steps
    assert (gate.timeout, gate.message) == (172800, "Ship <+pipeline.stages.build.output.image>?")
    assert (gate2.timeout, gate2.message) == (86400, "Approve?")
    assert spec.stage("deploy_us").runs_on == "" and spec.stage("deploy_us").when == ""


def test_output_references_name_the_stages_a_stage_reads():
    spec = parse_pipeline(FULL)
    assert spec.stage("build").output_references() == set()
    assert spec.stage("deploy_eu").output_references() == {"build"}
    assert spec.stage("approve").output_references() == {"build", "deploy_eu", "deploy_us"}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_the_example_pipelines_parse(path):
    spec = parse_pipeline(path.read_text())
    assert spec.identifier == path.stem
    assert spec.stages


def test_the_examples_exist_so_the_test_above_checks_something():
    assert {p.name for p in EXAMPLES} >= {"web_deploy.yaml", "data_refresh.yaml"}


def test_parse_cached_returns_the_same_spec_for_the_same_text():
    assert parse_cached(FULL) is parse_cached(FULL)
    assert parse_cached(FULL) == parse_pipeline(FULL)


def test_plain_scalars_stay_the_text_that_was_written():
    text = one_stage(
        variables="""
        - {name: version, value: 1.10}
        - {name: at, value: 12:30}
        - {name: country, value: no}
        - {name: mode, value: 0755}
        - {name: answer, value: yes, allowed_values: [yes, no]}
        - {name: flag, value: true}
        - {name: empty, value: ~}
        """
    )
    values = {v.name: v.value for v in parse_pipeline(text).variables}
    assert values == {
        "version": "1.10",
        "at": "12:30",
        "country": "no",
        "mode": "0755",
        "answer": "yes",
        "flag": "true",
        "empty": "",
    }


def test_yes_is_not_a_boolean_for_required():
    text = one_stage(variables="- {name: v, value: <+input>, required: yes}")
    assert_refused(
        text, "'required' of variable 'v' must be true or false", line_with(text, "required: yes")
    )


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("30s", 30),
        ("10m", 600),
        ("1h", 3600),
        ("1h30m", 5400),
        ("2d", 172800),
        ("1d2h3m4s", 93784),
        (45, 45),
        ("45", 45),
        ("045", 45),
    ],
)
def test_parse_duration_reads_units_and_plain_seconds(value, seconds):
    assert parse_duration(value) == seconds


@pytest.mark.parametrize(
    "value",
    [
        *(None, "", "0", 0, -5, "0s", "5x", "m", "1.5h", "30m1h", "٣s", True, 1.5, []),
        *("9" * 5000 + "s", "1_000", "٣٠", " 30", "30 ", " 5m ", "+30", "3e1"),
    ],
)
def test_parse_duration_refuses_what_is_not_a_positive_duration(value):
    assert parse_duration(value) is None


# --- every mistake names its line -------------------------------------------------------------


def test_bad_yaml_names_the_line_and_the_problem():
    text = "pipeline:\n  name: P\n  identifier: p\n  stages: [\n    {stage: x}\n  oops: 1\n"
    (error,) = refusal(text)
    assert error.message.startswith("invalid YAML:")
    assert error.line == 6


def test_bad_indentation_is_invalid_yaml_at_its_line():
    text = "pipeline:\n  name: P\n identifier: p\n"
    (error,) = refusal(text)
    assert "invalid YAML" in error.message and error.line == 3


def test_a_tab_used_for_indentation_is_refused_at_its_line():
    text = "pipeline:\n\tname: P\n"
    (error,) = refusal(text)
    assert "invalid YAML" in error.message and "tab" in error.message and error.line == 2


@pytest.mark.parametrize(
    ("where", "yaml_text", "fragment"),
    [
        ("the top level", "pipeline:\n  name: P\nextra: 1\n", "extra: 1"),
        ("the pipeline", None, "colour: red"),
        ("a stage", None, "timeout: 5m  # stage"),
        ("a step of stage 's'", None, "retries: 3"),
        ("a variable of the pipeline", None, "secret: true"),
        ("the spec of step 'run'", None, "shell: zsh"),
    ],
)
def test_an_unknown_key_is_refused_at_its_line(where, yaml_text, fragment):
    if yaml_text is None:
        yaml_text = doc(
            """
            pipeline:
              name: P
              identifier: p
              colour: red
              variables:
                - name: v
                  value: x
                  secret: true
              stages:
                - stage:
                    identifier: s
                    timeout: 5m  # stage
                    steps:
                      - step:
                          identifier: run
                          type: ShellScript
                          retries: 3
                          spec:
                            script: echo
                            shell: zsh
            """
        )
    key = fragment.split(":")[0]
    error = assert_refused(
        yaml_text, f"unknown key '{key}' in {where}", line_with(yaml_text, fragment)
    )
    assert "allowed:" in error.message


def test_a_duplicate_yaml_key_is_refused_at_its_second_line():
    text = "pipeline:\n  name: P\n  identifier: p\n  name: Q\n"
    (error,) = refusal(text)
    assert (error.message, error.line) == ("duplicate key 'name'", 4)


def test_a_duplicate_stage_identifier_is_refused_at_the_second_stage():
    text = doc(
        """
        pipeline:
          name: P
          identifier: p
          stages:
            - stage:
                identifier: build
                steps: [{step: {identifier: a, type: Wait, spec: {duration: 1s}}}]
            - parallel:
                - stage:
                    identifier: other
                    steps: [{step: {identifier: a, type: Wait, spec: {duration: 1s}}}]
                - stage:
                    identifier: build
                    steps: [{step: {identifier: a, type: Wait, spec: {duration: 1s}}}]
        """
    )
    errors = refusal(text)
    assert [(e.line, e.message) for e in errors] == [
        (line_with(text, "identifier: build", 2), "duplicate stage identifier 'build'")
    ]


def test_a_duplicate_step_identifier_within_a_stage_is_refused():
    text = one_stage(
        steps="""
        steps:
          - step: {identifier: run, type: Wait, spec: {duration: 1s}}
          - step:
              identifier: run
              type: Wait
              spec: {duration: 2s}
        """
    )
    errors = refusal(text)
    assert [(e.line, e.message) for e in errors] == [
        (line_with(text, "identifier: run", 2), "duplicate step identifier 'run' in stage 's'")
    ]


def test_the_same_step_identifier_in_two_stages_is_fine():
    text = doc(
        """
        pipeline:
          name: P
          identifier: p
          stages:
            - stage: {identifier: a, steps: [{step: {identifier: run, type: Wait, spec: {duration: 1s}}}]}
            - stage: {identifier: b, steps: [{step: {identifier: run, type: Wait, spec: {duration: 1s}}}]}
        """
    )
    assert [s.steps[0].identifier for s in parse_pipeline(text).stages] == ["run", "run"]


def test_a_duplicate_variable_name_is_refused_in_the_pipeline_and_in_a_stage():
    text = one_stage(
        "variables:\n  - {name: t, value: a}\n  - {name: t, value: b}\n",
        variables="- {name: v, value: a}\n- name: v\n  value: b\n",
    )
    errors = refusal(text)
    assert [(e.line, e.message) for e in errors] == [
        (line_with(text, "- name: v"), "duplicate variable 'v' in the pipeline"),
        (line_with(text, "{name: t, value: b}"), "duplicate variable 't' in stage 's'"),
    ]


def test_an_unknown_step_type_is_refused_at_the_type_line():
    text = one_stage(steps="steps:\n  - step:\n      identifier: run\n      type: Docker\n")
    errors = refusal(text)
    assert [(e.line, e.message) for e in errors] == [
        (
            line_with(text, "type: Docker"),
            "step 'run' has unknown type 'Docker' (use ShellScript, Approval or Wait)",
        )
    ]


def test_a_step_without_a_type_is_refused():
    text = one_stage(steps="steps:\n  - step:\n      identifier: run\n")
    assert_refused(text, "step 'run' needs 'type'", line_with(text, "identifier: run"))


@pytest.mark.parametrize("timeout", ["soon", "0", "-5", "1.5h", "10 minutes", "''", "[1m]"])
def test_a_bad_timeout_is_refused_at_its_line(timeout):
    text = one_stage(
        steps=f"steps:\n  - step:\n      identifier: run\n      type: Wait\n      timeout: {timeout}\n      spec: {{duration: 1s}}\n"
    )
    error = assert_refused(
        text,
        "of step 'run' is not a duration like 30s, 10m, 1h or 1h30m",
        line_with(text, "timeout:"),
    )
    assert error.message.startswith("timeout '")


def test_a_timeout_longer_than_thirty_days_is_refused():
    text = one_stage(
        steps="steps:\n  - step: {identifier: run, type: Wait, timeout: 31d, spec: {duration: 1s}}\n"
    )
    assert_refused(
        text,
        "timeout '31d' of step 'run' is longer than the maximum of 30d",
        line_with(text, "31d"),
    )


def test_a_default_outside_allowed_values_is_refused_at_the_default_line():
    text = one_stage(
        variables="""
        - name: env
          value: <+input>
          allowed_values: [dev, prod]
          default: staging
        """
    )
    errors = refusal(text)
    assert [(e.line, e.message) for e in errors] == [
        (
            line_with(text, "default: staging"),
            "default 'staging' of variable 'env' is not one of its allowed values (dev, prod)",
        )
    ]


def test_a_fixed_value_outside_allowed_values_is_refused():
    text = one_stage(variables="- {name: env, value: qa, allowed_values: [dev, prod]}")
    assert_refused(
        text,
        "value 'qa' of variable 'env' is not one of its allowed values (dev, prod)",
        line_with(text, "name: env"),
    )


def test_a_default_holding_an_expression_is_refused():
    text = one_stage(
        variables="- {name: a, value: x}\n- {name: v, value: <+input>, default: <+pipeline.variables.a>}"
    )
    assert_refused(
        text, "default of variable 'v' cannot hold an expression", line_with(text, "name: v")
    )


@pytest.mark.parametrize(
    ("variables", "message", "fragment"),
    [
        (
            "- {name: n, type: Number, value: <+input>, default: many}",
            "default of Number variable 'n' must be a number (like 12 or -3.5), not 'many'",
            "default: many",
        ),
        (
            "- {name: n, type: Number, value: lots}",
            "value of Number variable 'n' must be a number (like 12 or -3.5), not 'lots'",
            "value: lots",
        ),
        (
            "- {name: n, type: Number, value: <+input>, default: nan}",
            "default of Number variable 'n' must be a number (like 12 or -3.5), not 'nan'",
            "nan",
        ),
        (
            "- {name: n, type: Number, value: <+input>, allowed_values: [1, two]}",
            "allowed value of Number variable 'n' must be a number (like 12 or -3.5), not 'two'",
            "two",
        ),
    ],
)
def test_a_number_variable_with_a_non_numeric_value_is_refused(variables, message, fragment):
    text = one_stage(variables=variables)
    assert_refused(text, message, line_with(text, fragment))


def test_number_variables_accept_decimals_and_expressions():
    text = one_stage(
        variables="- {name: a, type: Number, value: '-1500.5'}\n- {name: b, type: Number, value: <+pipeline.variables.a>}\n- {name: c, type: Number, value: <+input>, default: 0.25}"
    )
    assert [v.value for v in parse_pipeline(text).variables] == [
        "-1500.5",
        "<+pipeline.variables.a>",
        "<+input>",
    ]


@pytest.mark.parametrize(
    ("variables", "message", "fragment"),
    [
        (
            "- {name: v, type: Text, value: x}",
            "variable 'v' has unknown type 'Text' (use String, Number or Secret)",
            "Text",
        ),
        ("- {name: 1st, value: x}", "variable name '1st' must be an identifier", "1st"),
        (
            "- {name: v}",
            "variable 'v' needs a 'value' (use <+input> for a runtime input)",
            "name: v",
        ),
        ("- {value: x}", "a variable of the pipeline needs 'name'", "value: x"),
        ("- {name: v, value: {a: 1}}", "'value' of variable 'v' must be text", "name: v"),
        (
            "- {name: v, value: x, allowed_values: a}",
            "'allowed_values' of variable 'v' must be a list of values",
            "name: v",
        ),
        (
            "- {name: v, value: x, allowed_values: [a, [b]]}",
            "'allowed_values' of variable 'v' must be a list of values",
            "name: v",
        ),
        ("- just a string", "each variable of the pipeline must be a mapping", "just a string"),
    ],
)
def test_a_malformed_variable_is_refused_at_its_line(variables, message, fragment):
    text = one_stage(variables=variables)
    assert_refused(text, message, line_with(text, fragment))


def test_variables_that_are_not_a_list_are_refused():
    text = "pipeline:\n  name: P\n  identifier: p\n  variables: {version: 1}\n  stages: []\n"
    assert_refused(text, "'variables' of the pipeline must be a list", 4)


# --- expressions --------------------------------------------------------------------------


def test_an_unknown_pipeline_variable_is_refused_at_the_script_line_that_uses_it():
    text = one_stage(
        steps="""
        steps:
          - step:
              identifier: run
              type: ShellScript
              spec:
                script: |
                  echo one

                  echo "<+pipeline.variables.missing>"
        """
    )
    errors = refusal(text)
    assert [(e.line, e.message) for e in errors] == [
        (
            line_with(text, "<+pipeline.variables.missing>"),
            "step 'run' of stage 's': unknown pipeline variable 'missing' in <+pipeline.variables.missing>",
        )
    ]


def test_an_unknown_stage_variable_is_refused():
    text = one_stage(
        "variables:\n  - {name: a, value: x}",
        steps="steps:\n  - step: {identifier: run, type: ShellScript, spec: {script: 'echo <+stage.variables.b>'}}",
    )
    assert_refused(
        text,
        "step 'run' of stage 's': unknown variable 'b' of stage 's' in <+stage.variables.b>",
        line_with(text, "<+stage.variables.b>"),
    )


def test_a_stage_variable_used_outside_a_stage_is_refused():
    text = one_stage(variables="- {name: v, value: '<+stage.variables.x>'}")
    assert_refused(
        text,
        "variable 'v': <+stage.variables.x> can only be used inside a stage",
        line_with(text, "name: v"),
    )


def test_an_unknown_expression_is_refused():
    text = one_stage(
        steps="steps:\n  - step: {identifier: run, type: ShellScript, spec: {script: 'echo <+pipeline.owner>'}}"
    )
    assert_refused(
        text,
        "step 'run' of stage 's': unknown expression <+pipeline.owner>",
        line_with(text, "owner"),
    )


def test_an_unclosed_expression_is_refused():
    text = one_stage(
        steps="steps:\n  - step: {identifier: run, type: ShellScript, spec: {script: 'echo <+pipeline.variables.v'}}"
    )
    assert_refused(
        text,
        "the expression '<+pipeline.variables.v' is not closed with '>'",
        line_with(text, "echo"),
    )


@pytest.mark.parametrize(
    ("variables", "steps_script", "message", "fragment"),
    [
        (
            "- {name: v, value: 'x-<+input>'}",
            "echo",
            "variable 'v': <+input> must be the whole value",
            "x-<+input>",
        ),
        (
            "- {name: v, value: x}",
            "echo <+input>",
            "<+input> may only be the whole value of a variable",
            "echo <+input>",
        ),
    ],
)
def test_input_marker_misuse_is_refused(variables, steps_script, message, fragment):
    text = one_stage(
        variables=variables,
        steps=f"steps:\n  - step: {{identifier: run, type: ShellScript, spec: {{script: '{steps_script}'}}}}",
    )
    assert_refused(text, message, line_with(text, fragment))


def test_builtin_expressions_are_accepted_where_they_make_sense():
    text = one_stage(
        variables="- {name: tag, value: 'run-<+pipeline.sequenceId>-<+pipeline.executionId>'}",
        steps="steps:\n  - step: {identifier: run, type: ShellScript, spec: {script: 'echo <+pipeline.name> <+pipeline.identifier> <+stage.identifier> <+stage.name> <+ pipeline.variables.tag >'}}",
    )
    assert parse_pipeline(text).stages[0].steps[0].script.startswith("echo <+pipeline.name>")


STAGED = doc(
    """
    pipeline:
      name: P
      identifier: p
      stages:
        - stage:
            identifier: first
            steps: [{step: {identifier: a, type: ShellScript, spec: {script: "echo FIRST"}}}]
        - parallel:
            - stage:
                identifier: left
                steps: [{step: {identifier: a, type: ShellScript, spec: {script: "echo LEFT"}}}]
            - stage:
                identifier: right
                steps: [{step: {identifier: a, type: ShellScript, spec: {script: "echo RIGHT"}}}]
        - stage:
            identifier: last
            steps: [{step: {identifier: a, type: ShellScript, spec: {script: "echo LAST"}}}]
    """
)


def staged(stage: str, reference: str) -> str:
    return STAGED.replace(f"echo {stage.upper()}", f"echo {reference}")


def test_a_stage_may_read_the_output_of_any_earlier_stage():
    text = staged("last", "<+pipeline.stages.first.output.x> <+pipeline.stages.left.output.y>")
    text = text.replace("echo RIGHT", "echo <+pipeline.stages.first.output.z>")
    spec = parse_pipeline(text)
    assert spec.stage("last").output_references() == {"first", "left"}


def test_a_stage_reading_a_later_stage_output_is_refused_at_its_line():
    text = staged("first", "<+pipeline.stages.last.output.url>")
    errors = refusal(text)
    assert [(e.line, e.message) for e in errors] == [
        (
            line_with(text, "<+pipeline.stages.last.output.url>"),
            "step 'a' of stage 'first': stage 'first' reads the output of 'last', which runs later",
        )
    ]


def test_a_stage_reading_its_parallel_sibling_output_is_refused():
    text = staged("left", "<+pipeline.stages.right.output.url>")
    assert_refused(
        text,
        "stage 'left' reads the output of 'right', which runs in parallel with it",
        line_with(text, "<+pipeline.stages.right.output.url>"),
    )


def test_a_stage_reading_its_own_output_is_refused():
    text = staged("last", "<+pipeline.stages.last.output.url>")
    assert_refused(
        text, "stage 'last' cannot read its own output", line_with(text, "<+pipeline.stages.last")
    )


def test_a_reference_to_an_unknown_stage_is_refused():
    text = staged("last", "<+pipeline.stages.ghost.output.url>")
    assert_refused(
        text,
        "unknown stage 'ghost' in <+pipeline.stages.ghost.output.url>",
        line_with(text, "ghost"),
    )


def test_a_stage_output_reference_without_a_key_is_refused():
    text = staged("last", "<+pipeline.stages.first.output.>")
    assert_refused(
        text, "<+pipeline.stages.first.output.> names no output", line_with(text, "output.>")
    )


def test_a_pipeline_variable_cannot_read_a_stage_output():
    text = one_stage(variables="- {name: v, value: '<+pipeline.stages.s.output.x>'}")
    assert_refused(
        text,
        "variable 'v': a pipeline variable cannot read the output of stage 's'",
        line_with(text, "name: v"),
    )


def test_a_later_stage_output_in_a_when_condition_is_refused_at_the_when_line():
    text = STAGED.replace(
        "        identifier: first\n",
        '        identifier: first\n        when: <+pipeline.stages.last.output.go> == "yes"\n',
    )
    assert_refused(
        text,
        "'when' of stage 'first': stage 'first' reads the output of 'last', which runs later",
        line_with(text, "when:"),
    )


def test_a_later_stage_output_in_a_stage_variable_is_refused():
    text = STAGED.replace(
        "        identifier: first\n",
        "        identifier: first\n        variables:\n          - {name: u, value: '<+pipeline.stages.left.output.url>'}\n",
    )
    assert_refused(
        text,
        "variable 'u' of stage 'first': stage 'first' reads the output of 'left', which runs later",
        line_with(text, "name: u"),
    )


def test_a_later_stage_output_in_an_approval_message_and_env_is_refused():
    text = STAGED.replace(
        '[{step: {identifier: a, type: ShellScript, spec: {script: "echo FIRST"}}}]',
        "\n              - step: {identifier: ask, type: Approval, spec: {message: 'ok <+pipeline.stages.last.output.u>?'}}"
        "\n              - step: {identifier: sh, type: ShellScript, spec: {script: echo, env: {URL: '<+pipeline.stages.right.output.u>'}}}",
    )
    errors = refusal(text)
    assert [(e.line, e.message) for e in errors] == [
        (
            line_with(text, "identifier: ask"),
            "step 'ask' of stage 'first': stage 'first' reads the output of 'last', which runs later",
        ),
        (
            line_with(text, "identifier: sh"),
            "env 'URL' of step 'sh' of stage 'first': stage 'first' reads the output of 'right', which runs later",
        ),
    ]


def test_variables_that_refer_to_each_other_in_a_circle_are_refused():
    text = one_stage(
        variables="- {name: a, value: 'x<+pipeline.variables.b>'}\n- {name: b, value: '<+pipeline.variables.a>'}"
    )
    errors = refusal(text)
    assert [(e.line, e.message) for e in errors] == [
        (line_with(text, "name: a"), "variable 'a' refers to itself (a → b → a)")
    ]


def test_a_stage_variable_that_refers_to_itself_is_refused():
    text = one_stage("variables:\n  - {name: me, value: '<+stage.variables.me>!'}")
    assert_refused(
        text, "variable 'me' of stage 's' refers to itself (me → me)", line_with(text, "name: me")
    )


def test_variables_may_build_on_each_other_without_a_circle():
    text = one_stage(
        "variables:\n  - {name: full, value: '<+pipeline.variables.base>/<+stage.variables.leaf>'}\n  - {name: leaf, value: x}",
        variables="- {name: base, value: /srv}",
    )
    assert (
        parse_pipeline(text).stages[0].variables[0].value
        == "<+pipeline.variables.base>/<+stage.variables.leaf>"
    )


# --- conditions, runs_on, steps ----------------------------------------------------------------


def test_a_blank_when_means_no_condition():
    spec = parse_pipeline(one_stage("when: '   '"))
    assert spec.stages[0].when == ""


def test_a_when_condition_is_kept_without_surrounding_spaces():
    spec = parse_pipeline(one_stage("when: |\n  true\n"))
    assert spec.stages[0].when == "true"


def test_a_malformed_when_condition_is_refused_at_the_when_line():
    text = one_stage('when: <+pipeline.variables.v> == "a" &&')
    assert_refused(
        text,
        "'when' of stage 's': the condition ends too early after '&&'",
        line_with(text, "when:"),
    )


def test_a_deeply_nested_condition_is_refused_not_crashed():
    text = one_stage("when: '" + "(" * 3000 + "true" + ")" * 3000 + "'")
    assert_refused(text, "the condition nests deeper than 32 levels", line_with(text, "when:"))


@pytest.mark.parametrize("runs_on", ["'gpu pool'", "'a/b'", "'" + "q" * 65 + "'"])
def test_a_bad_runs_on_queue_is_refused(runs_on):
    text = one_stage(f"runs_on: {runs_on}")
    assert_refused(text, "of stage 's' is not a valid queue name", line_with(text, "runs_on:"))


def test_a_wait_step_without_a_duration_is_refused_at_the_step():
    text = one_stage(steps="steps:\n  - step:\n      identifier: nap\n      type: Wait\n")
    errors = refusal(text)
    assert [(e.line, e.message) for e in errors] == [
        (line_with(text, "identifier: nap"), "Wait step 'nap' needs a 'duration' like 30s or 5m")
    ]


def test_a_wait_step_with_a_bad_duration_is_refused_at_the_duration_line():
    text = one_stage(
        steps="steps:\n  - step:\n      identifier: nap\n      type: Wait\n      spec:\n        duration: forever\n"
    )
    assert_refused(
        text,
        "Wait step 'nap' needs a 'duration' like 30s or 5m",
        line_with(text, "duration: forever"),
    )


@pytest.mark.parametrize(
    ("step", "message", "fragment"),
    [
        (
            "{identifier: run, type: ShellScript}",
            "the spec of ShellScript step 'run' needs 'script'",
            "identifier: run",
        ),
        (
            "{identifier: run, type: ShellScript, spec: {script: '  '}}",
            "the script of step 'run' is empty",
            "identifier: run",
        ),
        (
            "{identifier: run, type: ShellScript, spec: [echo]}",
            "'spec' of step 'run' must be a mapping",
            "identifier: run",
        ),
        (
            "{identifier: run, type: ShellScript, spec: {script: echo, env: [A]}}",
            "'env' of step 'run' must map names to values",
            "identifier: run",
        ),
        (
            "{identifier: run, type: ShellScript, spec: {script: echo, env: {1A: x}}}",
            "env name '1A' of step 'run' is not a valid variable name",
            "identifier: run",
        ),
        (
            "{identifier: run, type: ShellScript, spec: {script: echo, env: {STAGELINE_OUTPUT: /tmp/x}}}",
            "env name 'STAGELINE_OUTPUT' of step 'run' is reserved",
            "identifier: run",
        ),
        (
            "{identifier: run, type: ShellScript, spec: {script: echo, env: {SL_PIPELINE_VARIABLES_V: x}}}",
            "env name 'SL_PIPELINE_VARIABLES_V' of step 'run' is reserved",
            "identifier: run",
        ),
        (
            "{identifier: run, type: Approval, spec: {message: [a]}}",
            "'message' in the spec of Approval step 'run' must be text",
            "identifier: run",
        ),
        (
            "{identifier: run-1, type: Wait, spec: {duration: 1s}}",
            "identifier 'run-1' must start with a letter or _",
            "identifier: run-1",
        ),
        (
            "{type: Wait, spec: {duration: 1s}}",
            "a step of stage 's' needs 'identifier'",
            "type: Wait",
        ),
    ],
)
def test_a_malformed_step_is_refused_at_its_line(step, message, fragment):
    text = one_stage(steps=f"steps:\n  - step: {step}\n")
    assert_refused(text, message, line_with(text, fragment))


@pytest.mark.parametrize(
    ("steps", "fragment"),
    [
        ("steps: run", "steps: run"),
        ("steps: []", "steps: []"),
        ("steps: {a: 1}", "steps:"),
        ("name: no steps", "identifier: s"),
    ],
)
def test_a_stage_without_a_list_of_steps_is_refused(steps, fragment):
    text = one_stage(steps=steps)
    assert_refused(text, "stage 's' needs a non-empty list of 'steps'", line_with(text, fragment))


def test_a_step_item_that_is_not_a_step_is_refused():
    text = one_stage(steps="steps:\n  - run: {identifier: x}\n")
    assert_refused(
        text, "each item of 'steps' in stage 's' must be '- step: {…}'", line_with(text, "- run:")
    )


@pytest.mark.parametrize(
    ("stages", "message", "fragment"),
    [
        ("stages: build", "the pipeline needs a non-empty list of 'stages'", "stages: build"),
        ("stages: []", "the pipeline needs a non-empty list of 'stages'", "stages: []"),
        (
            "stages:\n    - build",
            "each item of 'stages' must be '- stage: {…}' or '- parallel: […]'",
            "- build",
        ),
        ("stages:\n    - stage: build", "a stage must be a mapping", "- stage: build"),
        (
            "stages:\n    - parallel: []",
            "'parallel' needs a list of '- stage: {…}' items",
            "- parallel",
        ),
        (
            "stages:\n    - parallel:\n        - parallel: []",
            "each item of 'parallel' must be '- stage: {…}'",
            "- parallel: []",
        ),
    ],
)
def test_malformed_stages_are_refused_at_their_line(stages, message, fragment):
    text = f"pipeline:\n  name: P\n  identifier: p\n  {stages}\n"
    assert_refused(text, message, line_with(text, fragment))


def test_a_stage_cannot_take_the_name_of_a_parallel_group():
    text = STAGED.replace("identifier: last", "identifier: parallel_2")
    assert_refused(
        text,
        "stage identifier 'parallel_2' is the name of the parallel group at position 2",
        line_with(text, "parallel_2"),
    )


@pytest.mark.parametrize(
    ("pipeline_lines", "message", "fragment"),
    [
        (
            "name: P\n  identifier: my-pipe",
            "identifier 'my-pipe' must start with a letter or _",
            "my-pipe",
        ),
        ("name: P\n  identifier: " + "x" * 65, "(at most 64)", "xxxx"),
        ("identifier: p", "the pipeline needs a 'name'", "identifier: p"),
        ("name: P", "the pipeline needs 'identifier'", "name: P"),
        (
            "name: " + "N" * 201 + "\n  identifier: p",
            "the name of the pipeline is longer than 200 characters",
            "NNNN",
        ),
        (
            "name: P\n  identifier: p\n  allow_stage_selection: sometimes",
            "'allow_stage_selection' must be true or false",
            "sometimes",
        ),
    ],
)
def test_malformed_pipeline_fields_are_refused_at_their_line(pipeline_lines, message, fragment):
    text = f"pipeline:\n  {pipeline_lines}\n  stages:\n    - stage: {{identifier: s, steps: [{{step: {{identifier: a, type: Wait, spec: {{duration: 1s}}}}}}]}}\n"
    assert_refused(text, message, line_with(text, fragment))


@pytest.mark.parametrize(
    ("text", "message", "line"),
    [
        ("", "the definition is empty", 1),
        ("# only a comment\n", "the definition is empty", 1),
        ("- pipeline\n- two\n", "the definition must start with 'pipeline:'", 1),
        ("just words\n", "the definition must start with 'pipeline:'", 1),
        ("name: P\nstages: []\n", "the definition must start with 'pipeline:'", 1),
        ("pipeline: [a]\n", "'pipeline' must be a mapping", 1),
        ("pipeline:\n", "'pipeline' must be a mapping", 1),
        (
            "a: 1\n---\nb: 2\n",
            "invalid YAML: expected a single document in the stream, but found another document",
            2,
        ),
    ],
)
def test_documents_that_are_not_a_pipeline_mapping_are_refused(text, message, line):
    errors = refusal(text)
    assert [(e.line, e.message) for e in errors] == [(line, message)]


def test_a_definition_that_is_not_text_is_refused():
    with pytest.raises(SpecErrors, match="the definition must be text"):
        parse_pipeline(b"pipeline: {}")


def test_every_problem_is_reported_at_once_sorted_by_line():
    text = one_stage(
        "runs_on: 'bad queue'",
        variables="- {name: v, type: Text, value: x}",
        steps="steps:\n  - step: {identifier: run, type: Docker, timeout: soon}\n",
    )
    errors = refusal(text)
    assert [e.line for e in errors] == sorted(e.line for e in errors)
    assert len(errors) == 4
    assert "line" in str(SpecErrors(errors)) and "unknown type 'Docker'" in str(SpecErrors(errors))


def test_the_same_problem_on_the_same_line_is_reported_once():
    text = one_stage(
        steps="steps:\n  - step: {identifier: run, type: ShellScript, spec: {script: 'echo <+pipeline.variables.x> <+pipeline.variables.x>'}}"
    )
    assert len(refusal(text)) == 1


def test_spec_error_reads_as_line_and_message():
    assert str(SpecError("bad thing", 7)) == "line 7: bad thing"
    assert str(SpecError("bad thing")) == "bad thing"
    errors = SpecErrors([SpecError("b", 9), SpecError("a", 2), SpecError("b", 9)])
    assert [(e.line, e.message) for e in errors.errors] == [(2, "a"), (9, "b")]
    assert str(errors) == "line 2: a; line 9: b"


def test_long_user_text_is_shortened_in_messages():
    text = one_stage(steps="steps:\n  - step: {identifier: run, type: " + "D" * 5000 + "}\n")
    (error,) = refusal(text)
    assert len(error.message) < 200 and "…" in error.message


# --- YAML that only serves to attack a parser ---------------------------------------------------


def test_anchors_and_aliases_are_refused_at_their_line():
    bomb = doc(
        """
        pipeline:
          name: P
          identifier: p
          lol: &lol ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
          lol2: [*lol, *lol, *lol, *lol, *lol, *lol, *lol, *lol, *lol]
        """
    )
    errors = refusal(bomb)
    assert [(e.line, e.message) for e in errors] == [
        (4, "YAML anchors and aliases are not allowed")
    ]


def test_an_alias_without_its_anchor_is_still_refused():
    (error,) = refusal("pipeline:\n  name: *x\n")
    assert error.line == 2
    assert "anchor" in error.message or "alias" in error.message


def test_a_merge_key_is_just_an_unknown_key():
    text = one_stage("'<<': {name: x}")
    assert_refused(text, "unknown key '<<' in a stage", line_with(text, "<<"))


@pytest.mark.parametrize(
    "text",
    [
        "pipeline: " + "[" * 50 + "]" * 50,
        "pipeline: " + "[" * 200_000,
        "pipeline:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 30)),
    ],
    ids=["flow", "unclosed-flow", "block"],
)
def test_deep_nesting_is_refused_at_the_line_where_it_gets_too_deep(text):
    (error,) = refusal(text)
    assert error.message == "the document nests deeper than 20 levels"
    assert error.line == (1 if text.startswith("pipeline: ") else 21)


def test_a_definition_over_the_size_limit_is_refused_before_parsing(settings):
    settings.STAGELINE_MAX_YAML_BYTES = 300
    text = FULL  # well over 300 bytes, and valid
    errors = refusal(text)
    assert [(e.line, e.message) for e in errors] == [(0, "the definition is larger than 300 bytes")]
    settings.STAGELINE_MAX_YAML_BYTES = 64 * 1024
    assert parse_pipeline(text).identifier == "web_deploy"


def test_the_size_limit_counts_bytes_not_characters(settings):
    settings.STAGELINE_MAX_YAML_BYTES = 2048
    text = one_stage(variables="- {name: v, value: '" + "é" * 900 + "'}")
    assert len(text) < 2048 < len(text.encode())
    (error,) = refusal(text)
    assert error.message == "the definition is larger than 2 KiB"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            "!!python/object/apply:os.system ['echo pwned']",
            "the YAML tag '!!python/object/apply:os.system' is not allowed",
        ),
        ("!!binary aGVsbG8=", "the YAML tag '!!binary' is not allowed"),
        ("!!timestamp 2024-01-01", "the YAML tag '!!timestamp' is not allowed"),
        ("!custom x", "the YAML tag '!custom' is not allowed"),
        ("!!int twelve", "'twelve' is not a valid !!int value"),
        ("!!float much", "'much' is not a valid !!float value"),
    ],
)
def test_object_building_and_bad_tags_are_refused_at_their_line(value, message):
    text = one_stage(variables=f"- name: v\n  value: {value}")
    errors = refusal(text)
    assert [(e.line, e.message) for e in errors] == [(line_with(text, "value: !"), message)]


def test_standard_tags_are_read_as_values():
    text = one_stage(
        variables="- {name: v, value: !!str 1.10}\n- {name: n, type: Number, value: !!int 0x10}"
    )
    assert [v.value for v in parse_pipeline(text).variables] == ["1.10", "16"]


def test_a_control_character_is_refused_at_its_line():
    text = one_stage(variables="- {name: v, value: 'a\x00b'}")
    (error,) = refusal(text)
    assert (error.line, error.message) == (
        line_with(text, "name: v"),
        "invalid YAML: the character #x0000 is not allowed",
    )


def test_a_control_character_after_accented_text_is_refused_at_its_own_line():
    text = "pipeline:\n  name: Déploiement à l'été\n  identifier: p\n  description: 'a\x01'\n"
    (error,) = refusal(text)
    assert (error.line, error.message) == (4, "invalid YAML: the character #x0001 is not allowed")


def test_a_lone_surrogate_is_refused_at_its_line():
    (error,) = refusal("pipeline:\n  name: P\n  description: x\ud800y\n")
    assert error.line == 3 and "not valid Unicode" in error.message


def test_load_yaml_keeps_the_line_of_every_key_and_item():
    data = load_yaml("a:\n  b: 1\n  c:\n    - x\n    - y\n")
    assert (data.line, data.key_lines) == (1, {"a": 1})
    assert data["a"].key_lines == {"b": 2, "c": 3}
    assert data["a"]["c"] == ["x", "y"] and data["a"]["c"].item_lines == [4, 5]
    assert data["a"]["b"] == "1"


# --- nothing but SpecErrors, whatever the input --------------------------------------------------

VOCABULARY = [
    "pipeline",
    "name",
    "identifier",
    "stages",
    "stage",
    "parallel",
    "steps",
    "step",
    "type",
    "timeout",
    "spec",
    "script",
    "env",
    "message",
    "duration",
    "variables",
    "value",
    "default",
    "allowed_values",
    "required",
    "when",
    "runs_on",
    "description",
    "allow_stage_selection",
]
SCALARS = st.one_of(
    st.sampled_from(
        [
            "s",
            "a",
            "ShellScript",
            "Wait",
            "Approval",
            "Number",
            "String",
            "Secret",
            "<+input>",
            "1m",
            "0",
            "<+pipeline.variables.a>",
            "<+stage.variables.a>",
            "<+pipeline.stages.s.output.x>",
            "<+pipeline.stages.a.output.>",
            '<+x> == "y" && (',
            "((((",
            "<+",
            "parallel_1",
            "",
        ]
    ),
    st.text(max_size=12),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True),
    st.booleans(),
    st.none(),
)
STRUCTURES = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(
            st.one_of(st.sampled_from(VOCABULARY), st.text(max_size=6)), children, max_size=5
        ),
    ),
    max_leaves=40,
)


def dump(data, **options) -> str:
    return yaml.dump(
        data, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper), allow_unicode=True, **options
    )


def assert_only_spec_errors(text: str) -> None:
    try:
        spec = parse_pipeline(text)
    except SpecErrors as exc:
        assert exc.errors, "SpecErrors without any error"
        for error in exc.errors:
            assert isinstance(error.message, str) and error.message
            assert isinstance(error.line, int) and error.line >= 0
    else:
        assert isinstance(spec, PipelineSpec)
        assert all(
            isinstance(g, Group) and all(isinstance(s, Stage) for s in g.stages)
            for g in spec.groups
        )


FUZZ = hypothesis_settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@FUZZ
@given(st.text(max_size=300))
def test_random_text_only_ever_raises_spec_errors(text):
    assert_only_spec_errors(text)


@FUZZ
@given(STRUCTURES)
def test_random_yaml_structures_only_ever_raise_spec_errors(structure):
    assert_only_spec_errors(dump({"pipeline": structure}))
    assert_only_spec_errors(dump(structure, default_flow_style=True))


@FUZZ
@given(
    st.dictionaries(st.sampled_from(VOCABULARY), STRUCTURES, max_size=6),
    st.lists(st.dictionaries(st.sampled_from(VOCABULARY), STRUCTURES, max_size=6), max_size=3),
)
def test_random_stages_and_steps_only_ever_raise_spec_errors(stage, steps):
    stage = {"identifier": "s", **stage, "steps": [{"step": step} for step in steps]}
    document = {
        "pipeline": {
            "name": "P",
            "identifier": "p",
            "stages": [{"stage": stage}, {"parallel": [{"stage": stage}]}],
        }
    }
    assert_only_spec_errors(dump(document))


@FUZZ
@given(st.data())
def test_mutated_example_pipelines_only_ever_raise_spec_errors(data):
    text = data.draw(st.sampled_from(EXAMPLES)).read_text()
    for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
        start = data.draw(st.integers(min_value=0, max_value=len(text)))
        end = data.draw(st.integers(min_value=start, max_value=min(len(text), start + 40)))
        text = (
            text[:start]
            + data.draw(
                st.sampled_from(
                    ["", "&a ", "*a", "[", "{", ":", "- ", "\n  ", "<+", "'", '"', "\t", "!!int "]
                )
            )
            + text[end:]
        )
    assert_only_spec_errors(text)
