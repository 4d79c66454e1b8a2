"""Retry from a stage (SPEC §4) meets failure strategies (SPEC §9): an IGNORED step and a step
marked as success count as succeeded and are carried over, and the impact preview (dialog,
``retry_execution --dry-run``) says why they succeeded; a manual retry starts fresh attempt
budgets; the retry history lists automatic attempts apart from the manual retries."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.core.management import call_command
from django.urls import reverse

from executions.models import Event, Execution, StepRun
from executions.retry import create_retry, plan_retry, retry_history
from executions.services import answer_intervention, run_pipeline
from executions.states import Status
from tests.helpers.factories import make_pipeline
from tests.helpers.runs import step_of, wait_for_status

pytestmark = pytest.mark.engine


def strategies_yaml(d: Path) -> str:
    """lint (its failure ignored) → check (marked as success) → deploy (fails on demand)."""
    return f"""
pipeline:
  name: Strategies
  identifier: strategies
  stages:
    - stage:
        identifier: lint
        steps:
          - step:
              identifier: style
              type: ShellScript
              failure_strategies:
                - on_failure: {{errors: [script], exit_codes: [4], action: {{type: ignore}}}}
              spec: {{script: 'echo lint >> {d}/lint; exit 4'}}
    - stage:
        identifier: check
        steps:
          - step:
              identifier: probe
              type: ShellScript
              failure_strategies:
                - on_failure: {{errors: [all], action: {{type: mark_as_success}}}}
              spec: {{script: 'echo check >> {d}/check; exit 9'}}
    - stage:
        identifier: deploy
        variables:
          - {{name: fail, type: String, value: <+input>, default: "no"}}
        steps:
          - step: {{identifier: rollout, type: ShellScript, spec: {{script: 'echo deploy >> {d}/deploy; [ "<+stage.variables.fail>" = no ]'}}}}
"""


def runs_of(d: Path, stage: str) -> int:
    path = d / stage
    return len(path.read_text().splitlines()) if path.exists() else 0


@pytest.fixture
def failed_after_strategies(worker, personas, shared_dir) -> Execution:
    pipeline = make_pipeline(personas.project, strategies_yaml(shared_dir))
    execution = run_pipeline(
        pipeline=pipeline, user=personas.executor, inputs={"deploy.fail": "yes"}
    )
    execution = wait_for_status(execution, Status.FAILED)
    assert step_of(execution, "lint").status == Status.IGNORED
    assert step_of(execution, "check").error == "marked as success by strategy"
    return execution


def test_ignored_and_marked_as_success_stages_are_offered_as_succeeded_and_carried_over(
    failed_after_strategies, personas
):
    execution = failed_after_strategies
    plan = plan_retry(execution, personas.executor, from_stage="deploy")
    assert [(o.key, o.status, o.note) for o in plan.options] == [
        ("lint", Status.SUCCESS, "failure ignored"),
        ("check", Status.SUCCESS, "marked as success"),
        ("deploy", Status.FAILED, ""),
    ]
    assert [(c.identifier, c.status, c.note) for c in plan.carried] == [
        ("lint", Status.SUCCESS, "failure ignored"),
        ("check", Status.SUCCESS, "marked as success"),
    ]
    # From an earlier stage, it runs again, and the preview says how it succeeded before.
    earlier = plan_retry(execution, personas.executor, from_stage="check")
    assert [(s.identifier, s.note) for s in earlier.run_again] == [
        ("check", "marked as success"),
        ("deploy", ""),
    ]


def test_the_retry_dialog_says_why_carried_stages_succeeded(
    failed_after_strategies, personas, client
):
    execution = failed_after_strategies
    client.force_login(personas.executor)
    page = client.get(
        reverse("execution_retry", args=[execution.pk]),
        {"from_stage": "deploy"},
        headers={"HX-Request": "true"},
    ).content.decode()
    assert 'data-stage="lint"' in page
    carried = page.split('class="impact-list carried-list"')[1].split("</ul>")[0]
    assert "carried over (failure ignored)" in carried
    assert "carried over (marked as success)" in carried
    assert "start with fresh retry budgets" in page


def test_retry_command_dry_run_says_why_carried_stages_succeeded(
    failed_after_strategies, personas, capsys
):
    execution = failed_after_strategies
    call_command(
        "retry_execution", str(execution.pk), "--from", "deploy", "--dry-run", "--as", "executor"
    )
    out = capsys.readouterr().out
    assert f"lint: SUCCESS from #{execution.sequence}" in out
    carried = out.split("Carried over (not run again):")[1].split("Runs again")[0]
    lines = [line.strip() for line in carried.strip().splitlines()]
    assert lines[0].startswith(f"lint: SUCCESS from #{execution.sequence} (")
    assert lines[0].endswith(") — carried over (failure ignored)")
    assert lines[1].endswith(") — carried over (marked as success)")
    assert " * deploy: FAILED" in out and "   lint: SUCCESS (failure ignored)" in out
    assert "Runs again (with fresh retry budgets):" in out


def test_a_retry_carries_an_ignored_step_over_without_running_it_and_succeeds(
    failed_after_strategies, personas, shared_dir
):
    execution = failed_after_strategies
    again = create_retry(execution=execution, user=personas.executor, from_stage="deploy")
    again = wait_for_status(again, Status.FAILED)
    # Along the chain the carried steps keep their result, so the next preview says it too,
    # pointing at the run that really ran them.
    assert [
        (c.identifier, c.note, c.from_sequence)
        for c in plan_retry(again, personas.executor).carried
    ] == [
        ("lint", "failure ignored", execution.sequence),
        ("check", "marked as success", execution.sequence),
    ]
    retry = create_retry(
        execution=again,
        user=personas.executor,
        from_stage="deploy",
        inputs={"deploy.fail": "no"},
    )
    retry = wait_for_status(retry, Status.SUCCESS)
    lint, check = step_of(retry, "lint"), step_of(retry, "check")
    assert (lint.status, lint.carried_from_id) == (Status.IGNORED, step_of(execution, "lint").pk)
    assert (check.status, check.error) == (Status.SUCCESS, "marked as success by strategy")
    assert (runs_of(shared_dir, "lint"), runs_of(shared_dir, "check")) == (1, 1)
    assert runs_of(shared_dir, "deploy") == 3


BUDGET_YAML = """
pipeline:
  name: Budget
  identifier: budget
  stages:
    - stage:
        identifier: build
        steps:
          - step:
              identifier: compile
              type: ShellScript
              failure_strategies:
                - on_failure: {{errors: [script], action: {{type: retry, retry: {{count: 2}}}}}}
              spec:
                script: |
                  n=$(cat {d}/count 2>/dev/null || echo 0); n=$((n+1)); echo "$n" > {d}/count
                  echo "run $n"
                  [ "$n" -ge 6 ]
    - stage:
        identifier: ship
        steps:
          - step: {{identifier: s, type: ShellScript, spec: {{script: echo shipped}}}}
"""


@pytest.fixture
def exhausted(worker, personas, shared_dir) -> Execution:
    """An execution whose build/compile used both of its 2 retries (3 failed attempts)."""
    pipeline = make_pipeline(personas.project, BUDGET_YAML.format(d=shared_dir))
    execution = run_pipeline(pipeline=pipeline, user=personas.executor, inputs={})
    execution = wait_for_status(execution, Status.FAILED)
    assert step_of(execution, "build").attempts == 3
    return execution


def test_a_manual_retry_gives_a_step_its_whole_retry_budget_again(exhausted, personas, shared_dir):
    retry = create_retry(execution=exhausted, user=personas.executor, from_stage="build")
    # Runs 4 and 5 fail, 6 passes: the step had its 2 retries again (a budget carried over
    # from the original would have been spent at the first failure).
    retry = wait_for_status(retry, Status.SUCCESS)
    compile_ = step_of(retry, "build")
    assert (compile_.status, compile_.attempts, compile_.carried_from_id) == (
        Status.SUCCESS,
        3,
        None,
    )
    assert (shared_dir / "count").read_text().strip() == "6"
    retries = Event.objects.filter(step_run=compile_, action="strategy.retry").order_by("id")
    assert [e.message.split(" (")[0] for e in retries] == ["retry 1 of 2", "retry 2 of 2"]


def test_the_history_lists_automatic_attempts_apart_from_manual_retries(
    exhausted, personas, client
):
    retry = create_retry(execution=exhausted, user=personas.executor, from_stage="build")
    retry = wait_for_status(retry, Status.SUCCESS)
    history = retry_history(retry)
    assert [
        (
            e.execution.pk,
            [(a.step.identifier, a.attempts, a.automatic, a.chosen) for a in e.automatic],
        )
        for e in history
    ] == [
        (exhausted.pk, [("compile", 3, 2, 0)]),
        (retry.pk, [("compile", 3, 2, 0)]),
    ]
    client.force_login(personas.viewer)
    page = client.get(reverse("execution", args=[retry.pk])).content.decode()
    nav = page.split('id="retry-history"')[1].split("</nav>")[0]
    manual, automatic = nav.split("Automatic attempts")
    assert "Manual retries" in manual and "Retry 1" in manual and "Original" in manual
    assert "compile" not in manual  # the step's attempts are not mixed with the chain
    items = automatic.split("<li")[1:]
    assert len(items) == 2
    for item, execution in zip(items, (exhausted, retry), strict=True):
        text = " ".join(item.split())
        assert f"#{execution.sequence}</a>" in text
        assert "build › compile" in text
        assert "<strong>3 attempts</strong>" in text and "(2 automatic retries)" in text


def test_a_first_run_with_automatic_attempts_shows_them_without_a_chain(
    worker, personas, shared_dir, client
):
    count = shared_dir / "count"
    count.write_text("3\n")  # runs 4, 5 fail, 6 passes
    count.chmod(0o666)  # the step may run as another user
    pipeline = make_pipeline(personas.project, BUDGET_YAML.format(d=shared_dir))
    execution = run_pipeline(pipeline=pipeline, user=personas.executor, inputs={})
    execution = wait_for_status(execution, Status.SUCCESS)
    client.force_login(personas.viewer)
    page = client.get(reverse("execution", args=[execution.pk])).content.decode()
    nav = page.split('id="retry-history"')[1].split("</nav>")[0]
    assert "Manual retries" not in nav and "Automatic attempts" in nav
    assert "(2 automatic retries)" in " ".join(nav.split())
    assert StepRun.objects.get(execution=execution, identifier="compile").attempts == 3


def test_the_api_plan_and_the_bulk_preview_say_why_carried_stages_succeeded(
    failed_after_strategies, personas, client
):
    execution = failed_after_strategies
    client.force_login(personas.executor)
    plan = client.get(f"/api/v1/executions/{execution.pk}/retry").json()
    assert [(c["identifier"], c["note"]) for c in plan["carried"]] == [
        ("lint", "failure ignored"),
        ("check", "marked as success"),
    ]
    assert plan["options"][0]["notes"] == {"lint": "failure ignored"}
    earlier = client.get(f"/api/v1/executions/{execution.pk}/retry?from_stage=check").json()
    assert [(s["identifier"], s["note"]) for s in earlier["run_again"]] == [
        ("check", "marked as success"),
        ("deploy", ""),
    ]
    project = execution.pipeline.project
    preview = client.get(
        reverse("project_bulk_retry", args=[project.organization.slug, project.slug]),
        {"ids": [execution.pk]},
        headers={"HX-Request": "true"},
    ).content.decode()
    assert f"(from #{execution.sequence}, failure ignored)" in preview
    assert f"(from #{execution.sequence}, marked as success)" in preview


INTERVENED_YAML = """
pipeline:
  name: Intervened
  identifier: intervened
  stages:
    - stage:
        identifier: build
        steps:
          - step:
              identifier: compile
              type: ShellScript
              failure_strategies:
                - on_failure:
                    errors: [script]
                    action:
                      type: retry
                      retry:
                        count: 1
                        on_exhausted: {{type: manual_intervention, timeout: 1h}}
              spec:
                script: |
                  n=$(cat {d}/count 2>/dev/null || echo 0); n=$((n+1)); echo "$n" > {d}/count
                  echo "run $n"
                  [ "$n" -ge 3 ]
"""


def test_the_history_counts_a_retry_chosen_in_an_intervention_apart(
    worker, personas, shared_dir, client
):
    pipeline = make_pipeline(personas.project, INTERVENED_YAML.format(d=shared_dir))
    execution = run_pipeline(pipeline=pipeline, user=personas.executor, inputs={})
    # Run 1 fails, the rule retries once, run 2 fails: the retries are exhausted, a person decides.
    execution = wait_for_status(execution, Status.INTERVENTION_WAITING)
    answer_intervention(execution=execution, step="compile", user=personas.executor, action="retry")
    execution = wait_for_status(execution, Status.SUCCESS)
    assert (shared_dir / "count").read_text().strip() == "3"
    history = retry_history(execution)
    assert [
        [(a.step.identifier, a.attempts, a.automatic, a.chosen) for a in e.automatic]
        for e in history
    ] == [[("compile", 3, 1, 1)]]
    client.force_login(personas.viewer)
    page = client.get(reverse("execution", args=[execution.pk])).content.decode()
    nav = page.split('id="retry-history"')[1].split("</nav>")[0]
    assert "Manual retries" not in nav  # an intervention's retry is not a retry execution
    text = " ".join(nav.split("Automatic attempts")[1].split())
    assert "<strong>3 attempts</strong>" in text
    assert "(1 automatic retry, 1 retry chosen in an intervention)" in text
