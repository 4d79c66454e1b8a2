"""Runtime inputs: ``pattern``, line breaks, the arithmetic warning (issue 15, finding 2), the
frozen-secret resend on retry (point 7) and what pages show of a Secret input."""

from __future__ import annotations

import io
import textwrap

import pytest
from django.core.management import call_command
from django.urls import reverse

from executions.models import Status
from executions.retry import create_rerun, create_retry
from executions.services import run_pipeline
from pipelines.services import save_pipeline
from pipelines.spec.errors import SpecErrors
from pipelines.spec.validate import parse_pipeline
from stageline.errors import Invalid
from tests.helpers.factories import make_pipeline, stored_pipeline
from tests.helpers.pages import failed_serial, run
from tests.helpers.runs import drive

ARITHMETIC = """\
pipeline:
  name: Count
  identifier: count
  variables:
    - {{name: count, type: String, value: <+input>, default: "1"{extra}}}
  stages:
    - stage:
        identifier: work
        name: Work
        steps:
          - step:
              identifier: loop
              type: ShellScript
              spec:
                script: |
                  echo "start"
                  n=$(( <+pipeline.variables.count> + 1 ))
                  echo "n=$n"
"""


def test_finding_2_a_free_text_input_in_arithmetic_runs_a_command_and_saving_warns(personas):
    result = save_pipeline(
        project=personas.project, yaml_text=ARITHMETIC.format(extra=""), user=personas.admin
    )
    assert [w.line for w in result.warnings] == [17]
    assert "input 'count' takes any text" in result.warnings[0].message
    assert "pattern" in result.warnings[0].message

    # Saved all the same (a warning, not a refusal): an executor's value runs `id` in the step.
    execution = run(result.pipeline, personas.executor, count="a[$(id >&2)]")
    log = "".join(
        chunk.text for step in execution.step_runs.all() for chunk in step.log_chunks.all()
    )
    assert "uid=" in log


def test_with_a_pattern_the_value_of_finding_2_is_refused_at_run(personas):
    pipeline = make_pipeline(
        personas.project, ARITHMETIC.format(extra=", pattern: '[0-9]+'"), personas.admin
    )
    assert pipeline.current_version.spec.warnings == ()
    with pytest.raises(Invalid) as refused:
        run_pipeline(pipeline=pipeline, user=personas.executor, inputs={"count": "a[$(id >&2)]"})
    assert refused.value.field_errors == {"count": "count does not match the pattern [0-9]+"}
    execution = drive(
        run_pipeline(pipeline=pipeline, user=personas.executor, inputs={"count": "41"})
    )
    assert execution.status == Status.SUCCESS


@pytest.mark.parametrize(
    "script",
    [
        'if [[ "<+pipeline.variables.count>" -gt 3 ]]; then echo big; fi',
        "(( total += <+pipeline.variables.count> ))",
        'echo "${items[<+pipeline.variables.count>]}"',
        "let total=<+pipeline.variables.count>+1",
    ],
)
def test_every_arithmetic_context_warns_with_its_line(script):
    text = ARITHMETIC.format(extra="").replace("n=$(( <+pipeline.variables.count> + 1 ))", script)
    assert [w.line for w in parse_pipeline(text).warnings] == [17]


def test_no_warning_outside_arithmetic_or_for_a_constrained_input():
    quoted = ARITHMETIC.format(extra="").replace(
        "n=$(( <+pipeline.variables.count> + 1 ))", '[[ "<+pipeline.variables.count>" == 3 ]]'
    )
    assert parse_pipeline(quoted).warnings == ()
    listed = ARITHMETIC.format(extra=', allowed_values: ["1", "2"]')
    assert parse_pipeline(listed).warnings == ()
    number = ARITHMETIC.format(extra="").replace("type: String", "type: Number")
    assert parse_pipeline(number).warnings == ()


def test_load_pipelines_prints_the_warning_with_file_and_line(personas, tmp_path):
    (tmp_path / "count.yaml").write_text(ARITHMETIC.format(extra=""))
    out = io.StringIO()
    call_command("load_pipelines", "acme/web", str(tmp_path), stdout=out)
    assert "count.yaml:17: warning: step 'loop' of stage 'work': input 'count'" in out.getvalue()


def test_the_editor_shows_the_warning_after_saving(client, personas):
    pipeline = make_pipeline(personas.project, ARITHMETIC.format(extra=", pattern: '[0-9]+'"))
    client.force_login(personas.admin)
    edit = reverse("pipeline_edit", args=["acme", "web", "count"])
    response = client.post(
        edit, {"yaml": ARITHMETIC.format(extra=""), "base_version": 1}, follow=True
    )
    html = response.content.decode()
    assert "Saved version 2" in html
    assert "Warning, line 17: step &#x27;loop&#x27; of stage &#x27;work&#x27;" in html
    assert pipeline.versions.count() == 2


# --- pattern and line breaks --------------------------------------------------------------


def _inputs_yaml(variables: str) -> str:
    return textwrap.dedent(
        """\
        pipeline:
          name: Inputs
          identifier: inputs
          variables:
        {variables}
          stages:
            - stage:
                identifier: s
                name: S
                steps:
                  - step: {{identifier: w, type: Wait, spec: {{duration: 1s}}}}
        """
    ).format(variables=textwrap.indent(textwrap.dedent(variables).strip(), "    "))


@pytest.mark.parametrize(
    ("variable", "message"),
    [
        (
            "- {name: v, type: String, value: <+input>, pattern: '[0-9'}",
            "line 5: the pattern of variable 'v' is not a valid regular expression",
        ),
        (
            "- {name: v, type: Number, value: <+input>, pattern: '[0-9]+'}",
            "line 5: 'pattern' applies to String variables, not to Number 'v'",
        ),
        (
            "- {name: v, type: String, value: <+input>, pattern: '[0-9]+', default: abc}",
            "line 5: default 'abc' of variable 'v' does not match the pattern [0-9]+",
        ),
        (
            '- {name: v, type: String, value: <+input>, default: "a\\u2028b"}',
            "line 5: default 'a\u2028b' of variable 'v' must be one line",
        ),
        (
            "- {name: v, type: String, value: <+input>, multiline: maybe}",
            "line 5: 'multiline' of variable 'v' must be true or false",
        ),
    ],
)
def test_a_bad_pattern_or_default_is_refused_at_save_with_its_line(personas, variable, message):
    with pytest.raises(SpecErrors) as refused:
        save_pipeline(project=personas.project, yaml_text=_inputs_yaml(variable))
    assert any(str(error).startswith(message) for error in refused.value.errors), str(refused.value)


@pytest.mark.parametrize("brk", ["\n", "\r", "\r\n", "\u2028", "\u2029", "\x85", "\v", "\f"])
def test_a_single_line_input_refuses_every_kind_of_line_break(personas, brk):
    pipeline = make_pipeline(
        personas.project,
        _inputs_yaml(
            """
            - {name: one, type: String, value: <+input>}
            - {name: many, type: String, value: <+input>, multiline: true}
            """
        ),
    )
    with pytest.raises(Invalid) as refused:
        run_pipeline(pipeline=pipeline, user=personas.executor, inputs={"one": f"a{brk}b"})
    assert refused.value.field_errors["one"].startswith("one must be one line")
    execution = run_pipeline(pipeline=pipeline, user=personas.executor, inputs={"many": f"a{brk}b"})
    assert execution.inputs["many"] == f"a{brk}b"


def test_pattern_and_line_breaks_are_checked_again_at_retry_and_rerun(personas):
    failed = failed_serial(personas)
    pipeline = failed.pipeline
    with pytest.raises(Invalid) as refused:
        create_retry(
            execution=failed,
            user=personas.executor,
            from_stage="deploy",
            inputs={"deploy.fail": "no\nyes"},
        )
    assert "deploy.fail must be one line" in str(refused.value)
    save_pipeline(
        project=personas.project,
        yaml_text=failed.version.yaml.replace(
            '{name: version, type: String, value: <+input>, default: "1.0", allowed_values: '
            '["1.0", "2.0"]}',
            "{name: version, type: String, value: <+input>, default: \"1.0\", pattern: '[0-9.]+'}",
        ),
    )
    pipeline.refresh_from_db()
    assert pipeline.current_version.spec.variables[0].pattern == "[0-9.]+"
    with pytest.raises(Invalid) as refused:
        create_rerun(execution=failed, user=personas.executor, inputs={"version": "1.0; id"})
    assert refused.value.field_errors == {"version": "version does not match the pattern [0-9.]+"}


# --- point 7: a frozen secret sent again ----------------------------------------------------

FROZEN = """\
pipeline:
  name: Frozen
  identifier: frozen
  variables:
    - {name: token, type: Secret, value: <+input>, required: true}
  stages:
    - stage:
        identifier: deploy
        name: Deploy
        variables:
          - {name: fail, type: String, value: <+input>, default: "no"}
        steps:
          - step:
              identifier: go
              type: ShellScript
              spec:
                script: |
                  if [ "<+stage.variables.fail>" = "yes" ]; then exit 3; fi
"""


@pytest.fixture
def frozen(personas):
    pipeline = make_pipeline(personas.project, FROZEN)
    execution = run(pipeline, personas.executor, token="t0k3n-value", **{"deploy.fail": "yes"})
    assert execution.status == Status.FAILED
    return execution


def test_a_frozen_secret_sent_again_unchanged_is_accepted(personas, frozen):
    retry = create_retry(
        execution=frozen,
        user=personas.executor,
        from_stage="deploy",
        inputs={"token": "t0k3n-value", "deploy.fail": "no"},
    )
    assert retry.secret_inputs == {"token": "t0k3n-value"}
    assert retry.changed_inputs == ["deploy.fail"]


def test_a_frozen_secret_sent_with_another_value_is_refused(personas, frozen):
    with pytest.raises(Invalid) as refused:
        create_retry(
            execution=frozen,
            user=personas.executor,
            from_stage="deploy",
            inputs={"token": "t0k3n-valuf"},
        )
    assert "Input 'token' cannot change" in str(refused.value)
    assert "t0k3n" not in str(refused.value)


def test_the_command_and_the_dialog_accept_the_unchanged_frozen_secret(client, personas, frozen):
    out = io.StringIO()
    call_command(
        "retry_execution",
        str(frozen.pk),
        "--from=deploy",
        "--input=token=t0k3n-value",
        "--as=executor",
        stdout=out,
    )
    retry = frozen.__class__.objects.get(retry_of=frozen)
    assert retry.secret_inputs == {"token": "t0k3n-value"}

    drive(retry)
    other = run(frozen.pipeline, personas.executor, token="x", **{"deploy.fail": "yes"})
    client.force_login(personas.executor)
    response = client.post(
        reverse("execution_retry", args=[other.pk]),
        {"from_stage": "deploy", "input-token": "x"},
        headers={"HX-Request": "true"},
    )
    assert response.status_code == 200 and "HX-Redirect" in response.headers
    third = run(frozen.pipeline, personas.executor, token="x", **{"deploy.fail": "yes"})
    response = client.post(
        reverse("execution_retry", args=[third.pk]),
        {"from_stage": "deploy", "input-token": "y"},
        headers={"HX-Request": "true"},
    )
    assert "Input &#x27;token&#x27; cannot change" in response.content.decode()
    assert not third.__class__.objects.filter(retry_of=third).exists()


# --- a Secret input's allowed values ----------------------------------------------------------

LISTED_SECRET = _inputs_yaml(
    """
    - {name: key, type: Secret, value: <+input>, allowed_values: [alpha-key-1, beta-key-2]}
    """
)


def test_a_secret_inputs_allowed_values_are_never_shown(client, personas):
    stored_pipeline(personas.project, LISTED_SECRET)  # refused at save today (literal secrets)
    client.force_login(personas.executor)
    for name in ("pipeline_definition", "pipeline_run"):
        html = client.get(reverse(name, args=["acme", "web", "inputs"])).content.decode()
        assert "alpha-key-1" not in html and "beta-key-2" not in html, name
    pipeline = personas.project.pipelines.get(identifier="inputs")
    with pytest.raises(Invalid) as refused:
        run_pipeline(pipeline=pipeline, user=personas.executor, inputs={"key": "gamma"})
    assert refused.value.field_errors == {"key": "key is not one of its allowed values"}
