"""The one number grammar (``stageline.numbers``), tested once here, and one test per place
that reads a number from a person showing it uses that grammar: YAML values, runtime inputs,
``when:`` conditions, command-line inputs and ids, page parameters and settings."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError, call_command
from django.urls import reverse

from config.settings import env_int
from executions.inputs import InputErrors, validate_inputs
from executions.models import Execution, StepRun
from executions.services import run_pipeline
from pipelines.conditions import evaluate_condition, parse_condition
from pipelines.services import save_pipeline
from pipelines.spec.errors import SpecErrors
from pipelines.spec.validate import parse_duration, parse_pipeline
from stageline.numbers import NumberError, is_number, parse_int, parse_number
from tests.helpers import factories

ROOT = Path(__file__).resolve().parents[1]

ACCEPTED = ["0", "7", "12", "-3", "007", "0.5", "-12.25", "10.0", "123456789012345678901234567890"]
REFUSED = [
    "",
    " 1",
    "1 ",
    "1\n",
    "+1",
    "1_000",
    "1,000",
    "١٢",  # Arabic-Indic digits
    "１２",  # fullwidth digits
    "²",
    "1e3",
    "1E3",
    ".5",
    "5.",
    "-",
    "--1",
    "1.2.3",
    "0x10",
    "inf",
    "nan",
    "½",
]


# --- the grammar ------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ACCEPTED)
def test_the_grammar_accepts_ascii_digits_an_optional_minus_and_decimals(text):
    assert is_number(text)
    assert parse_number(text, "n") == Decimal(text)


@pytest.mark.parametrize("text", REFUSED)
def test_the_grammar_refuses_everything_else(text):
    assert not is_number(text)
    with pytest.raises(NumberError):
        parse_number(text, "n")
    with pytest.raises(NumberError):
        parse_int(text, "n")


def test_numbers_compare_exactly():
    assert parse_number("3", "n") == parse_number("3.0", "n")
    assert parse_number("0.1", "n") + parse_number("0.2", "n") == parse_number("0.3", "n")


def test_a_whole_number_has_no_decimal_part_and_keeps_to_its_range():
    assert parse_int("-0", "n") == 0 and parse_int("042", "n") == 42
    with pytest.raises(NumberError, match=r"^n must be a whole number \(like 12\), not '1.0'$"):
        parse_int("1.0", "n")
    with pytest.raises(NumberError, match="at least 1, not '0'"):
        parse_int("0", "id", minimum=1)
    with pytest.raises(NumberError, match="at most 9, not '10'"):
        parse_int("10", "digit", maximum=9)
    with pytest.raises(NumberError):
        parse_int("9" * 5000, "huge")  # refused, not a crash of int()


def test_a_refusal_names_the_field_and_the_value():
    with pytest.raises(NumberError) as refused:
        parse_number("1_000", "replicas")
    assert str(refused.value) == "replicas must be a number (like 12 or -3.5), not '1_000'"
    assert (refused.value.field, refused.value.value) == ("replicas", "1_000")
    assert isinstance(refused.value, ValueError)


# --- YAML -------------------------------------------------------------------------------------

NUMBER_PIPELINE = textwrap.dedent(
    """\
    pipeline:
      name: Scale
      identifier: scale
      variables:
        - name: replicas
          type: Number
          value: <+input>
          default: "1_000"
      stages:
        - stage:
            identifier: roll
            name: Roll
            steps:
              - step:
                  identifier: go
                  type: ShellScript
                  timeout: 1m
                  spec:
                    script: echo "<+pipeline.variables.replicas>"
    """
)


@pytest.mark.django_db
def test_yaml_refuses_1_000_naming_the_file_the_line_and_the_field(tmp_path):
    (tmp_path / "scale.yaml").write_text(NUMBER_PIPELINE)
    err = io.StringIO()
    with pytest.raises(CommandError):
        call_command("load_pipelines", "acme/web", str(tmp_path), stdout=io.StringIO(), stderr=err)
    assert (
        "scale.yaml:8: default of Number variable 'replicas' must be a number "
        "(like 12 or -3.5), not '1_000'"
    ) in err.getvalue()


def test_yaml_durations_in_whole_seconds_use_the_grammar():
    assert parse_duration("90") == 90
    assert parse_duration("1_000") is None and parse_duration("٩٠") is None
    text = NUMBER_PIPELINE.replace('default: "1_000"', 'default: "2"').replace(
        "timeout: 1m", "timeout: 1_000"
    )
    with pytest.raises(SpecErrors) as refused:
        parse_pipeline(text)
    assert "timeout '1_000' of step 'go' is not a duration" in str(refused.value)


# --- runtime inputs ---------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["1_000", "١٢", " 3", "1e3", "+5", "inf"])
def test_a_runtime_number_input_is_refused_naming_the_input(value):
    spec = parse_pipeline(NUMBER_PIPELINE.replace('default: "1_000"', 'default: "2"'))
    with pytest.raises(InputErrors) as refused:
        validate_inputs(spec, {"replicas": value})
    assert refused.value.errors == {
        "replicas": f"replicas must be a number (like 12 or -3.5), not '{value}'"
    }
    assert validate_inputs(spec, {"replicas": "-2.5"})[0] == {"replicas": "-2.5"}


# --- conditions -------------------------------------------------------------------------------


def test_a_condition_reads_numbers_by_the_same_grammar():
    with pytest.raises(ValueError, match=r"'1_000' is not a number \(like 12 or -3.5\)"):
        parse_condition("<+pipeline.variables.n> == 1_000")

    def value(text: str):
        return lambda expr: text

    assert evaluate_condition("<+pipeline.variables.n> == 1000.0", value("1000"))
    # the same text that a Number input refuses is text here, never a number
    assert not evaluate_condition("<+pipeline.variables.n> == 1000", value("1_000"))
    assert not evaluate_condition("<+pipeline.variables.n> == 3", value(" 3"))


# --- the command line -------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_command_line_input_is_refused_with_exit_2_naming_the_value(personas):
    factories.make_pipeline(
        personas.project, NUMBER_PIPELINE.replace('default: "1_000"', 'default: "2"')
    )
    with pytest.raises(CommandError) as refused:
        call_command(
            "run_pipeline",
            "acme/web/scale",
            "--input",
            "replicas=1_000",
            "--as",
            "executor",
            stdout=io.StringIO(),
            stderr=io.StringIO(),
        )
    assert refused.value.returncode == 2
    assert "replicas must be a number (like 12 or -3.5), not '1_000'" in str(refused.value)
    assert not Execution.objects.exists()


def test_a_command_line_id_is_refused_with_exit_2_naming_the_value():
    finished = subprocess.run(
        [sys.executable, "manage.py", "retry_execution", "1_000", "--as", "admin"],
        cwd=ROOT,
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert finished.returncode == 2
    assert "argument execution_id: must be a whole number (like 12), not '1_000'" in finished.stderr


# --- page parameters and settings -------------------------------------------------------------


@pytest.mark.django_db
def test_page_parameters_use_the_grammar(client, personas):
    pipeline = factories.make_pipeline(
        personas.project, NUMBER_PIPELINE.replace('default: "1_000"', 'default: "2"')
    )
    save_pipeline(
        project=personas.project,
        yaml_text=NUMBER_PIPELINE.replace('default: "1_000"', 'default: "3"'),
        user=personas.admin,
        pipeline=pipeline,
    )
    client.force_login(personas.viewer)
    history = reverse("pipeline_history", args=["acme", "web", "scale"])
    assert client.get(history, {"version": "1"}).status_code == 200
    for bad in ("²", "١", " 1", "1_0"):  # "²".isdigit() used to pass, then int() crashed
        response = client.get(history, {"version": bad})
        assert response.status_code == 400, bad
        assert "There is no version" in response.content.decode()
    execution = run_pipeline(pipeline=pipeline, user=personas.executor, inputs={})
    step = StepRun.objects.get(execution=execution)
    log = reverse("execution_step_log", args=[execution.pk, step.pk])
    # 204: a cursor in the grammar, nothing new after it yet
    assert client.get(log, {"after": "0"}, headers={"HX-Request": "true"}).status_code == 204
    for bad in ("1_000", "٣", " 1"):
        response = client.get(log, {"after": bad}, headers={"HX-Request": "true"})
        assert response.status_code == 400, bad


def test_a_number_setting_uses_the_grammar(monkeypatch):
    monkeypatch.setenv("STAGELINE_TEST_NUMBER", "1_000")
    with pytest.raises(ImproperlyConfigured, match="STAGELINE_TEST_NUMBER .* not '1_000'"):
        env_int("STAGELINE_TEST_NUMBER", 5)
    monkeypatch.setenv("STAGELINE_TEST_NUMBER", "1000")
    assert env_int("STAGELINE_TEST_NUMBER", 5) == 1000
