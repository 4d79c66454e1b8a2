"""The stage-selection rule (issue 12, rule 3), decided by ``executions.selection.select_stages``
for Run, Rerun, ``run_pipeline --stages`` and ``rerun_execution --stages``: the picker starts
with every stage ticked, every ticked stage runs, an empty selection is refused ("pick at least
one stage": 400 on a page, exit 2 in a command), a picked stage that needs an unpicked stage's
output is refused. The rule's cases are tested once, on the function; then each entry point once."""

from __future__ import annotations

import io
import re

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from executions.models import Execution
from executions.selection import EMPTY_SELECTION, parse_stage_list, select_stages
from pipelines.spec.validate import parse_pipeline
from stageline.errors import Invalid
from tests.helpers.factories import make_pipeline
from tests.helpers.pages import SERIAL_YAML, as_user, htmx, run

# build writes an output that test and deploy read.
SELECTABLE_YAML = SERIAL_YAML.replace(
    "identifier: web\n", "identifier: web\n  allow_stage_selection: true\n"
)
SELECTABLE = parse_pipeline(SELECTABLE_YAML)
FIXED = parse_pipeline(SERIAL_YAML)


@pytest.mark.parametrize(
    ("spec", "picked", "expected"),
    [
        (SELECTABLE, None, None),  # no selection given: every stage
        (FIXED, None, None),
        (SELECTABLE, ["build"], ["build"]),
        (SELECTABLE, ["deploy", "build"], ["build", "deploy"]),  # in pipeline order
        (SELECTABLE, ["build", "test", "deploy"], None),  # everything ticked: a full run
        (SELECTABLE, [], EMPTY_SELECTION),
        (SELECTABLE, ["test"], "Stage 'test' needs the output of build, which is not selected."),
        (SELECTABLE, ["build", "ghost"], "Unknown stage(s): ghost."),
        (FIXED, ["build"], "Pipeline web does not allow running selected stages."),
    ],
    ids=[
        "none-runs-all",
        "none-runs-all-without-selection",
        "one-stage",
        "pipeline-order",
        "all-ticked-is-a-full-run",
        "empty-refused",
        "needs-unpicked-output",
        "unknown-stage",
        "selection-not-allowed",
    ],
)
def test_select_stages_decides_what_runs(spec, picked, expected):
    if isinstance(expected, str):
        with pytest.raises(Invalid) as refused:
            select_stages(spec, picked)
        assert refused.value.message == expected and refused.value.status == 400
    else:
        assert select_stages(spec, picked) == expected


def test_a_command_without_stages_selects_nothing_and_an_empty_list_is_empty():
    assert parse_stage_list(None) is None
    assert parse_stage_list("") == [] and parse_stage_list(" , ") == []
    assert parse_stage_list("build, deploy") == ["build", "deploy"]


# --- the entry points -------------------------------------------------------------------------


def boxes(html: str) -> list[tuple[str, bool]]:
    return [
        (value, bool(checked))
        for value, checked in re.findall(r'name="stages" value="([^"]+)"( checked)?', html)
    ]


@pytest.fixture
def pipeline(personas):
    return make_pipeline(personas.project, SELECTABLE_YAML)


def test_the_run_and_rerun_pickers_start_with_every_stage_ticked(client, personas, pipeline):
    as_user(client, personas.executor)
    run_url = reverse("pipeline_run", args=["acme", "web", "web"])
    every = [("build", True), ("test", True), ("deploy", True)]
    assert boxes(client.get(run_url, headers=htmx()).content.decode()) == every
    picked = run(pipeline, personas.executor)
    picked.selected_stages = ["build"]  # what an earlier run picked does not matter
    picked.save(update_fields=["selected_stages"])
    rerun_url = reverse("execution_rerun", args=[picked.pk])
    assert boxes(client.get(rerun_url, headers=htmx()).content.decode()) == every


@pytest.mark.parametrize("hx", [False, True], ids=["form", "htmx"])
def test_run_with_nothing_ticked_is_refused_and_starts_nothing(client, personas, pipeline, hx):
    response = as_user(client, personas.executor).post(
        reverse("pipeline_run", args=["acme", "web", "web"]), {}, headers=htmx() if hx else {}
    )
    html = response.content.decode()
    assert response.status_code == 400 and EMPTY_SELECTION in html
    assert boxes(html) == [("build", False), ("test", False), ("deploy", False)]
    assert not Execution.objects.exists()


@pytest.mark.parametrize("hx", [False, True], ids=["form", "htmx"])
def test_rerun_with_nothing_ticked_is_refused_and_starts_nothing(client, personas, pipeline, hx):
    execution = run(pipeline, personas.executor)
    response = as_user(client, personas.executor).post(
        reverse("execution_rerun", args=[execution.pk]), {}, headers=htmx() if hx else {}
    )
    assert response.status_code == 400 and EMPTY_SELECTION in response.content.decode()
    assert Execution.objects.count() == 1


def refusal(*args: str) -> str:
    with pytest.raises(CommandError) as refused:
        call_command(*args, stdout=io.StringIO(), stderr=io.StringIO())
    assert refused.value.returncode == 2
    return str(refused.value)


def test_run_pipeline_with_an_empty_stages_list_exits_2(personas, pipeline):
    assert refusal("run_pipeline", "acme/web/web", "--stages", "", "--as", "executor") == (
        EMPTY_SELECTION
    )
    assert not Execution.objects.exists()


def test_rerun_execution_with_an_empty_stages_list_exits_2(personas, pipeline):
    execution = run(pipeline, personas.executor)
    args = ["rerun_execution", str(execution.pk), "--stages", ",", "--as", "executor"]
    assert refusal(*args) == EMPTY_SELECTION
    assert Execution.objects.count() == 1
