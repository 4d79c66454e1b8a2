"""Retry and Rerun against real runs (SPEC §4, §5): the planner, the rules, the refusals."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.utils import timezone

from executions.models import Event, Execution, LogChunk, StageRun, Status, StepRun
from executions.retry import (
    ALL,
    FAILED_ONLY,
    AlreadyRetried,
    create_rerun,
    create_retry,
    plan_rerun,
    plan_retry,
    retry_history,
    wall_clock_seconds,
)
from executions.services import abort_execution, answer_approval, run_pipeline
from pipelines.services import save_pipeline
from stageline.errors import Conflict, Forbidden, Invalid, NotFound
from stageline.timefmt import format_duration
from tests.helpers.factories import make_pipeline
from tests.helpers.runs import wait_for_status

pytestmark = pytest.mark.engine


def serial_yaml(counter_dir: Path) -> str:
    """build → test → deploy; each stage counts its runs in a file; deploy fails on demand."""
    return f"""
pipeline:
  name: Serial
  identifier: serial
  variables:
    - {{name: version, type: String, value: <+input>, default: "1.0", allowed_values: ["1.0", "2.0"]}}
  stages:
    - stage:
        identifier: build
        variables:
          - {{name: flavour, type: String, value: <+input>, default: plain}}
        steps:
          - step:
              identifier: compile
              type: ShellScript
              spec:
                script: |
                  echo build >> {counter_dir}/build
                  echo "image=app:<+pipeline.variables.version>-<+stage.variables.flavour>" >> "$STAGELINE_OUTPUT"
    - stage:
        identifier: test
        variables:
          - {{name: suite, type: String, value: <+input>, default: smoke, allowed_values: [smoke, full]}}
        steps:
          - step:
              identifier: unit
              type: ShellScript
              spec:
                script: |
                  echo test >> {counter_dir}/test
                  echo "testing <+pipeline.stages.build.output.image> with <+stage.variables.suite>"
    - stage:
        identifier: deploy
        variables:
          - {{name: fail, type: String, value: <+input>, default: "no", allowed_values: ["no", "yes"]}}
          - {{name: region, type: String, value: <+input>, required: true, default: eu}}
        steps:
          - step:
              identifier: rollout
              type: ShellScript
              spec:
                script: |
                  echo deploy >> {counter_dir}/deploy
                  echo "deploying <+pipeline.stages.build.output.image> to <+stage.variables.region>"
                  [ "<+stage.variables.fail>" = "no" ]
"""


PARALLEL_YAML = """
pipeline:
  name: Parallel
  identifier: par
  stages:
    - stage:
        identifier: build
        steps:
          - step: {{identifier: s, type: ShellScript, spec: {{script: 'echo build >> {d}/build; echo "v=9" >> "$STAGELINE_OUTPUT"'}}}}
    - parallel:
        - stage:
            identifier: eu
            variables:
              - {{name: fail, type: String, value: <+input>, default: "no"}}
            steps:
              - step: {{identifier: s, type: ShellScript, spec: {{script: 'echo eu >> {d}/eu; [ "<+stage.variables.fail>" = "no" ]'}}}}
        - stage:
            identifier: us
            steps:
              - step: {{identifier: s, type: ShellScript, spec: {{script: 'echo us >> {d}/us; echo "url=us-<+pipeline.stages.build.output.v>" >> "$STAGELINE_OUTPUT"'}}}}
    - stage:
        identifier: release
        steps:
          - step: {{identifier: s, type: ShellScript, spec: {{script: 'echo "release <+pipeline.stages.us.output.url>"'}}}}
"""


def runs_of(counter_dir: Path, stage: str) -> int:
    path = counter_dir / stage
    return len(path.read_text().splitlines()) if path.exists() else 0


def log_of(execution: Execution, stage: str) -> str:
    chunks = LogChunk.objects.filter(
        step_run__execution=execution, step_run__stage_run__identifier=stage
    )
    return "".join(c.text for c in chunks.order_by("step_run__position", "seq"))


def snapshot() -> tuple[int, int, int, int]:
    return (
        Execution.objects.count(),
        StageRun.objects.count(),
        StepRun.objects.count(),
        Event.objects.count(),
    )


@pytest.fixture
def serial(personas, shared_dir):
    return make_pipeline(personas.project, serial_yaml(shared_dir)), shared_dir


@pytest.fixture
def failed(worker, personas, serial):
    """A real execution of the serial pipeline whose deploy stage failed."""
    pipeline, counter_dir = serial
    execution = run_pipeline(
        pipeline=pipeline,
        user=personas.executor,
        inputs={"deploy.fail": "yes", "build.flavour": "gold"},
    )
    return wait_for_status(execution, Status.FAILED), counter_dir


# --- the plan ---------------------------------------------------------------------------------


def test_plan_offers_stages_up_to_the_failed_one_with_their_status(failed, personas):
    execution, _ = failed
    plan = plan_retry(execution, personas.executor)
    assert plan.allowed and plan.reason == ""
    assert [(o.key, o.status) for o in plan.options] == [
        ("build", Status.SUCCESS),
        ("test", Status.SUCCESS),
        ("deploy", Status.FAILED),
    ]
    assert plan.selected.key == "deploy"
    assert [c.identifier for c in plan.carried] == ["build", "test"]
    assert all(c.from_sequence == execution.sequence for c in plan.carried)
    assert [r.identifier for r in plan.run_again] == ["deploy"]
    assert plan.time_saved_seconds > 0
    editable = {f.key: f.value for f in plan.editable_inputs}
    assert editable == {"deploy.fail": "yes", "deploy.region": "eu"}
    frozen = {f.key: f.reason for f in plan.frozen_inputs}
    assert "pipeline-level" in frozen["version"] and "carried over" in frozen["build.flavour"]
    assert not plan.pipeline_changed


def test_plan_from_an_earlier_stage_carries_less_and_unfreezes_its_inputs(failed, personas):
    execution, _ = failed
    plan = plan_retry(execution, personas.executor, from_stage="test")
    assert [c.identifier for c in plan.carried] == ["build"]
    assert [r.identifier for r in plan.run_again] == ["test", "deploy"]
    assert {f.key for f in plan.editable_inputs} == {"test.suite", "deploy.fail", "deploy.region"}


def test_planning_writes_nothing(failed, personas):
    execution, _ = failed
    before = snapshot()
    plan_retry(execution, personas.executor, from_stage="build")
    plan_retry(execution, personas.viewer)
    assert snapshot() == before


# --- retrying serial pipelines -----------------------------------------------------------------


def test_retry_from_the_failed_stage_does_not_run_earlier_stages_again(failed, personas):
    execution, counter_dir = failed
    retry = create_retry(
        execution=execution,
        user=personas.executor,
        from_stage="deploy",
        inputs={"deploy.fail": "no"},
        reason="fixed",
    )
    retry = wait_for_status(retry, Status.SUCCESS)
    assert (
        runs_of(counter_dir, "build"),
        runs_of(counter_dir, "test"),
        runs_of(counter_dir, "deploy"),
    ) == (1, 1, 2)
    assert "deploying app:1.0-gold to eu" in log_of(retry, "deploy")
    build = retry.stage_runs.get(identifier="build")
    assert build.carried_from.execution == execution and build.status == Status.SUCCESS
    assert build.outputs == {"image": "app:1.0-gold"}
    # the carried-over step shows the original log
    assert StepRun.objects.get(stage_run=build).log_source.execution == execution
    assert (retry.retry_of, retry.chain_root, retry.attempt) == (execution, execution, 2)
    assert (retry.resumed_from, retry.reason, retry.changed_inputs) == (
        "deploy",
        "fixed",
        ["deploy.fail"],
    )
    assert retry.version == execution.version
    execution.refresh_from_db()
    assert execution.status == Status.FAILED  # the original is never modified


def test_retry_from_an_earlier_stage_runs_it_and_everything_after(failed, personas):
    execution, counter_dir = failed
    retry = create_retry(
        execution=execution,
        user=personas.executor,
        from_stage="test",
        inputs={"test.suite": "full", "deploy.fail": "no"},
    )
    retry = wait_for_status(retry, Status.SUCCESS)
    assert (
        runs_of(counter_dir, "build"),
        runs_of(counter_dir, "test"),
        runs_of(counter_dir, "deploy"),
    ) == (1, 2, 2)
    assert "testing app:1.0-gold with full" in log_of(retry, "test")
    assert sorted(retry.changed_inputs) == ["deploy.fail", "test.suite"]


def test_retry_of_a_retry_of_a_retry_keeps_the_chain(failed, personas):
    execution, _ = failed
    first = wait_for_status(
        create_retry(execution=execution, user=personas.executor, from_stage="deploy"),
        Status.FAILED,
    )
    second = wait_for_status(
        create_retry(execution=first, user=personas.admin, from_stage="test"), Status.FAILED
    )
    third = create_retry(
        execution=second, user=personas.executor, from_stage="deploy", inputs={"deploy.fail": "no"}
    )
    third = wait_for_status(third, Status.SUCCESS)
    history = retry_history(third)
    assert [(h.execution, h.attempt) for h in history] == [
        (execution, 1),
        (first, 2),
        (second, 3),
        (third, 4),
    ]
    assert [h.execution.resumed_from for h in history] == ["", "deploy", "test", "deploy"]
    assert [h.execution.triggered_by for h in history][1:] == [
        personas.executor,
        personas.admin,
        personas.executor,
    ]
    assert history[-1].is_current
    assert {e.chain_root_id for e in (first, second, third)} == {execution.pk}
    # test was re-run in `second`; `third` carries it from `second`, build still from the original
    assert third.stage_runs.get(identifier="test").carried_from.execution == second
    assert third.stage_runs.get(identifier="build").carried_from.execution == execution
    plan = plan_retry(first, personas.executor)
    assert not plan.allowed and plan.latest == third and f"#{third.sequence}" in plan.reason


# --- parallel groups ---------------------------------------------------------------------------


@pytest.fixture
def parallel_failed(worker, personas, shared_dir):
    pipeline = make_pipeline(personas.project, PARALLEL_YAML.format(d=shared_dir))
    execution = run_pipeline(pipeline=pipeline, user=personas.executor, inputs={"eu.fail": "yes"})
    execution = wait_for_status(execution, Status.FAILED)
    return execution, shared_dir


def test_parallel_group_failed_only_reruns_just_the_failed_stage(parallel_failed, personas):
    execution, d = parallel_failed
    plan = plan_retry(execution, personas.executor)
    assert plan.selected.parallel and plan.selected.has_failed_member and plan.mode == FAILED_ONLY
    assert plan.selected.member_statuses == {"eu": Status.FAILED, "us": Status.SUCCESS}
    retry = create_retry(
        execution=execution,
        user=personas.executor,
        from_stage="eu",
        mode=FAILED_ONLY,
        inputs={"eu.fail": "no"},
    )
    retry = wait_for_status(retry, Status.SUCCESS)
    assert (runs_of(d, "build"), runs_of(d, "eu"), runs_of(d, "us")) == (1, 2, 1)
    assert retry.stage_runs.get(identifier="us").carried_from.execution == execution
    assert "release us-9" in log_of(retry, "release")


def test_parallel_group_all_reruns_every_member(parallel_failed, personas):
    execution, d = parallel_failed
    plan = plan_retry(execution, personas.executor, from_stage="parallel_2", mode=ALL)
    assert [r.identifier for r in plan.run_again] == ["eu", "us", "release"]
    retry = create_retry(
        execution=execution,
        user=personas.executor,
        from_stage="parallel_2",
        mode=ALL,
        inputs={"eu.fail": "no"},
    )
    retry = wait_for_status(retry, Status.SUCCESS)
    assert (runs_of(d, "build"), runs_of(d, "eu"), runs_of(d, "us")) == (1, 2, 2)
    assert retry.stage_runs.get(identifier="us").carried_from is None


# --- every status that can be retried ----------------------------------------------------------

APPROVAL_YAML = """
pipeline:
  name: Gated
  identifier: gated
  stages:
    - stage:
        identifier: build
        steps:
          - step: {identifier: s, type: ShellScript, spec: {script: "echo built"}}
    - stage:
        identifier: slow
        variables:
          - {name: seconds, type: Number, value: <+input>, default: "0"}
        steps:
          - step: {identifier: s, type: ShellScript, timeout: 2s, spec: {script: "sleep <+stage.variables.seconds>"}}
    - stage:
        identifier: approve
        steps:
          - step: {identifier: gate, type: Approval, timeout: 1h, spec: {message: "go?"}}
"""


def _finish_approval(execution, personas):
    wait_for_status(execution, Status.WAITING)
    answer_approval(execution=execution, stage="approve", user=personas.approver, approve=True)
    return wait_for_status(execution, Status.SUCCESS)


def test_retry_of_an_expired_execution_can_succeed(worker, personas):
    pipeline = make_pipeline(personas.project, APPROVAL_YAML)
    execution = wait_for_status(
        run_pipeline(pipeline=pipeline, user=personas.executor, inputs={"slow.seconds": "10"}),
        Status.EXPIRED,
    )
    retry = create_retry(
        execution=execution, user=personas.executor, from_stage="slow", inputs={"slow.seconds": "0"}
    )
    _finish_approval(retry, personas)


def test_retry_of_a_rejected_execution_can_succeed(worker, personas):
    pipeline = make_pipeline(personas.project, APPROVAL_YAML)
    execution = run_pipeline(pipeline=pipeline, user=personas.executor, inputs={})
    wait_for_status(execution, Status.WAITING)
    answer_approval(execution=execution, stage="approve", user=personas.approver, approve=False)
    execution = wait_for_status(execution, Status.REJECTED)
    plan = plan_retry(execution, personas.executor)
    assert plan.selected.key == "approve" and plan.selected.status == Status.REJECTED
    retry = create_retry(execution=execution, user=personas.executor, from_stage="approve")
    _finish_approval(retry, personas)
    assert retry.stage_runs.get(identifier="slow").carried_from is not None


def test_retry_of_an_aborted_execution_can_succeed(worker, personas):
    pipeline = make_pipeline(personas.project, APPROVAL_YAML)
    execution = run_pipeline(pipeline=pipeline, user=personas.executor, inputs={})
    wait_for_status(execution, Status.WAITING)
    abort_execution(execution=execution, user=personas.executor)
    execution = wait_for_status(execution, Status.ABORTED)
    retry = create_retry(execution=execution, user=personas.executor, from_stage="approve")
    _finish_approval(retry, personas)


# --- refusals: each leaves the database unchanged ----------------------------------------------


def refused(error_class, message_part, **kwargs):
    before = snapshot()
    with pytest.raises(error_class) as info:
        create_retry(**kwargs)
    assert message_part in info.value.message
    assert snapshot() == before
    return info.value


def test_retry_refuses_a_successful_execution(worker, personas, serial):
    pipeline, _ = serial
    execution = wait_for_status(
        run_pipeline(pipeline=pipeline, user=personas.executor, inputs={}), Status.SUCCESS
    )
    plan = plan_retry(execution, personas.executor)
    assert not plan.allowed and "Use Rerun" in plan.reason
    refused(Conflict, "succeeded", execution=execution, user=personas.executor, from_stage="deploy")


def test_retry_refuses_a_running_execution(worker, personas):
    pipeline = make_pipeline(personas.project, APPROVAL_YAML)
    execution = run_pipeline(pipeline=pipeline, user=personas.executor, inputs={})
    wait_for_status(execution, Status.WAITING)
    refused(
        Conflict, "still running", execution=execution, user=personas.executor, from_stage="build"
    )
    abort_execution(execution=execution, user=personas.executor)


def test_retry_refuses_an_execution_older_than_the_window(failed, personas, settings):
    execution, _ = failed
    Execution.objects.filter(pk=execution.pk).update(created_at=timezone.now() - timedelta(days=31))
    execution.refresh_from_db()
    refused(
        Conflict,
        "more than 30 days ago",
        execution=execution,
        user=personas.executor,
        from_stage="deploy",
    )
    settings.STAGELINE_RETRY_WINDOW_DAYS = 40
    assert plan_retry(execution, personas.executor).allowed


def test_the_window_counts_from_the_chain_original_even_after_retries(failed, personas):
    execution, _ = failed
    retry = wait_for_status(
        create_retry(execution=execution, user=personas.executor, from_stage="deploy"),
        Status.FAILED,
    )
    retry2 = wait_for_status(
        create_retry(execution=retry, user=personas.executor, from_stage="deploy"), Status.FAILED
    )
    Execution.objects.filter(pk=execution.pk).update(created_at=timezone.now() - timedelta(days=31))
    retry2.refresh_from_db()
    assert retry2.created_at > timezone.now() - timedelta(minutes=5)
    refused(
        Conflict,
        f"original execution #{execution.sequence}",
        execution=retry2,
        user=personas.executor,
        from_stage="deploy",
    )


def test_retry_refuses_an_execution_that_is_not_the_latest_attempt(failed, personas):
    execution, _ = failed
    retry = wait_for_status(
        create_retry(execution=execution, user=personas.executor, from_stage="deploy"),
        Status.FAILED,
    )
    error = refused(
        AlreadyRetried,
        f"already retried as #{retry.sequence}",
        execution=execution,
        user=personas.executor,
        from_stage="deploy",
    )
    assert error.retry == retry


def test_retry_refuses_users_without_execute(failed, personas):
    execution, _ = failed
    refused(
        Forbidden,
        "Execute permission",
        execution=execution,
        user=personas.viewer,
        from_stage="deploy",
    )
    refused(
        Forbidden,
        "Execute permission",
        execution=execution,
        user=personas.approver,
        from_stage="deploy",
    )
    refused(NotFound, "Not found", execution=execution, user=personas.stranger, from_stage="deploy")
    plan = plan_retry(execution, personas.viewer)
    assert not plan.allowed and "Execute permission" in plan.reason


def test_retry_refuses_an_unknown_or_missing_stage(failed, personas):
    execution, _ = failed
    refused(
        Invalid,
        "'nope' is not in this pipeline",
        execution=execution,
        user=personas.executor,
        from_stage="nope",
    )
    refused(Invalid, "Pick the stage", execution=execution, user=personas.executor, from_stage="")


def test_retry_does_not_offer_stages_that_never_ran(worker, personas, shared_dir):
    yaml_text = serial_yaml(shared_dir).replace("echo test >> ", "exit 1; echo test >> ")
    pipeline = make_pipeline(personas.project, yaml_text)
    execution = wait_for_status(
        run_pipeline(pipeline=pipeline, user=personas.executor, inputs={}), Status.FAILED
    )
    assert [o.key for o in plan_retry(execution, personas.executor).options] == ["build", "test"]
    refused(
        Invalid,
        "cannot be retried from: it did not run",
        execution=execution,
        user=personas.executor,
        from_stage="deploy",
    )


def test_retry_refuses_a_changed_pipeline_level_input(failed, personas):
    execution, _ = failed
    refused(
        Invalid,
        "Input 'version' cannot change",
        execution=execution,
        user=personas.executor,
        from_stage="deploy",
        inputs={"version": "2.0"},
    )
    # the same value is not a change
    retry = create_retry(
        execution=execution, user=personas.executor, from_stage="deploy", inputs={"version": "1.0"}
    )
    wait_for_status(retry, Status.FAILED)


def test_retry_refuses_a_changed_input_of_a_carried_over_stage(failed, personas):
    execution, _ = failed
    refused(
        Invalid,
        "Input 'build.flavour' cannot change: stage 'build' is carried over",
        execution=execution,
        user=personas.executor,
        from_stage="deploy",
        inputs={"build.flavour": "silver"},
    )


def test_retry_refuses_an_input_outside_allowed_values(failed, personas):
    execution, _ = failed
    refused(
        Invalid,
        "must be one of no, yes",
        execution=execution,
        user=personas.executor,
        from_stage="deploy",
        inputs={"deploy.fail": "maybe"},
    )


def test_retry_refuses_an_input_the_pipeline_does_not_have(failed, personas):
    execution, _ = failed
    refused(
        Invalid,
        "'nope' is not a runtime input",
        execution=execution,
        user=personas.executor,
        from_stage="deploy",
        inputs={"nope": "1"},
    )


def test_retry_refuses_a_blank_required_input_without_default(worker, personas, shared_dir):
    yaml_text = serial_yaml(shared_dir).replace("required: true, default: eu", "required: true")
    pipeline = make_pipeline(personas.project, yaml_text)
    execution = run_pipeline(
        pipeline=pipeline,
        user=personas.executor,
        inputs={"deploy.fail": "yes", "deploy.region": "us"},
    )
    execution = wait_for_status(execution, Status.FAILED)
    refused(
        Invalid,
        "deploy.region is required",
        execution=execution,
        user=personas.executor,
        from_stage="deploy",
        inputs={"deploy.region": ""},
    )


# --- the pipeline changed since ----------------------------------------------------------------


def test_retry_runs_the_old_version_after_the_pipeline_changed(failed, personas, serial):
    execution, counter_dir = failed
    pipeline, _ = serial
    new_yaml = execution.version.yaml.replace("deploying ", "DEPLOYING v2 ")
    save_pipeline(project=personas.project, yaml_text=new_yaml, user=personas.admin)
    plan = plan_retry(execution, personas.executor)
    assert plan.pipeline_changed
    assert (
        '-                  echo "deploying ' in plan.diff
        and '+                  echo "DEPLOYING v2 ' in plan.diff
    )
    retry = create_retry(
        execution=execution,
        user=personas.executor,
        from_stage="deploy",
        inputs={"deploy.fail": "no"},
    )
    retry = wait_for_status(retry, Status.SUCCESS)
    assert retry.version == execution.version
    assert "deploying app:1.0-gold" in log_of(retry, "deploy")


# --- exactly one retry, under concurrency ------------------------------------------------------


def test_simultaneous_retries_create_exactly_one(failed, personas):
    execution, _ = failed
    results: list[object] = []
    barrier = threading.Barrier(20)

    def attempt():
        try:
            barrier.wait()
            results.append(
                create_retry(execution=execution, user=personas.executor, from_stage="deploy")
            )
        except AlreadyRetried as exc:
            results.append(exc)
        except Exception as exc:  # noqa: BLE001 - anything else is a failure of the test
            results.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=attempt) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    created = [r for r in results if isinstance(r, Execution)]
    losers = [r for r in results if isinstance(r, AlreadyRetried)]
    assert len(created) == 1, results
    assert len(losers) == 19, [r for r in results if not isinstance(r, (Execution, AlreadyRetried))]
    assert {loser.retry.pk for loser in losers} == {created[0].pk}
    assert Execution.objects.filter(retry_of=execution).count() == 1
    wait_for_status(created[0], Status.FAILED)


# --- rerun ---------------------------------------------------------------------------------------


def test_rerun_is_allowed_for_a_successful_execution_and_uses_the_current_version(
    worker, personas, serial
):
    pipeline, counter_dir = serial
    execution = wait_for_status(
        run_pipeline(pipeline=pipeline, user=personas.executor, inputs={"version": "2.0"}),
        Status.SUCCESS,
    )
    save_pipeline(
        project=personas.project,
        yaml_text=execution.version.yaml.replace("deploying ", "shipping "),
    )
    plan = plan_rerun(execution, personas.executor)
    assert plan.allowed and {f.key: f.value for f in plan.inputs}["version"] == "2.0"
    rerun = create_rerun(execution=execution, user=personas.executor, inputs={"version": "1.0"})
    rerun = wait_for_status(rerun, Status.SUCCESS)
    assert rerun.rerun_of == execution and rerun.version != execution.version
    assert "shipping app:1.0-plain" in log_of(rerun, "deploy")
    assert runs_of(counter_dir, "build") == 2
    assert not plan_rerun(execution, personas.viewer).allowed


def test_rerun_with_selected_stages_skips_the_others(worker, personas, shared_dir):
    pipeline = make_pipeline(
        personas.project,
        PARALLEL_YAML.format(d=shared_dir).replace(
            "  identifier: par\n", "  identifier: par\n  allow_stage_selection: true\n"
        ),
    )
    execution = wait_for_status(
        run_pipeline(pipeline=pipeline, user=personas.executor, inputs={}), Status.SUCCESS
    )
    rerun = create_rerun(execution=execution, user=personas.executor, stages=["build", "eu"])
    rerun = wait_for_status(rerun, Status.SUCCESS)
    statuses = {r.identifier: r.status for r in rerun.stage_runs.all()}
    assert statuses == {
        "build": Status.SUCCESS,
        "eu": Status.SUCCESS,
        "us": Status.SKIPPED,
        "release": Status.SKIPPED,
    }
    before = snapshot()
    with pytest.raises(Invalid, match="needs the output of build"):
        create_rerun(execution=execution, user=personas.executor, stages=["us"])
    assert snapshot() == before


def test_rerun_refuses_stage_selection_when_the_pipeline_does_not_allow_it(failed, personas):
    execution, _ = failed
    with pytest.raises(Invalid, match="does not allow running selected stages"):
        create_rerun(execution=execution, user=personas.executor, stages=["deploy"])


def _span(start: float, end: float) -> StageRun:
    base = timezone.now() - timedelta(days=3)
    return StageRun(
        started_at=base + timedelta(seconds=start), finished_at=base + timedelta(seconds=end)
    )


@pytest.mark.parametrize(
    ("spans", "seconds"),
    [
        ([], 0.0),
        ([(0, 10), (10, 25)], 25.0),  # serial stages: one after the other
        ([(0, 10), (10, 40), (12, 30), (11, 38)], 40.0),  # a parallel group counts once
        ([(0, 10), (86_400, 86_405)], 15.0),  # carried from two attempts a day apart
    ],
)
def test_time_saved_is_the_wall_clock_of_the_carried_part(spans, seconds):
    assert wall_clock_seconds([_span(*span) for span in spans]) == seconds


def test_time_saved_reads_the_same_in_the_command_and_the_dialog(failed, personas, capsys):
    execution, _ = failed
    call_command(
        "retry_execution", str(execution.pk), "--from", "deploy", "--dry-run", "--as", "executor"
    )
    plan = plan_retry(execution, personas.executor, from_stage="deploy")
    assert f"Time saved: {format_duration(plan.time_saved_seconds)}" in capsys.readouterr().out


# --- commands ------------------------------------------------------------------------------------


def test_retry_command_dry_run_prints_the_plan_and_changes_nothing(failed, personas, capsys):
    execution, _ = failed
    before = snapshot()
    call_command(
        "retry_execution", str(execution.pk), "--from", "test", "--dry-run", "--as", "executor"
    )
    out = capsys.readouterr().out
    assert "Carried over" in out and "build: SUCCESS from #1" in out
    assert "test.suite = 'smoke' [editable]" in out and "version = '1.0' [read-only" in out
    assert snapshot() == before


def test_retry_command_retries_and_waits(failed, personas, capsys):
    execution, counter_dir = failed
    call_command(
        "retry_execution",
        str(execution.pk),
        "--from",
        "deploy",
        "--input",
        "deploy.fail=no",
        "--reason",
        "flaky",
        "--as",
        "executor",
        "--wait",
    )
    out = capsys.readouterr().out
    assert "ended SUCCESS" in out and "build: SUCCESS [carried over]" in out
    assert runs_of(counter_dir, "build") == 1


def test_retry_command_refusals_exit_2_with_the_reason(failed, personas):
    execution, _ = failed
    cases = [
        (["--from", "deploy", "--as", "viewer"], "Execute permission"),
        (["--from", "deploy", "--as", "stranger"], "may not see it"),
        (["--from", "deploy", "--input", "version=2.0", "--as", "executor"], "cannot change"),
        (["--from", "ghost", "--as", "executor"], "not in this pipeline"),
        (["--as", "executor"], "--from"),
        (["--from", "deploy", "--input", "novalue", "--as", "executor"], "not name=value"),
        # a dry run of a refused retry prints the plan and still says no (exit 2)
        (["--from", "deploy", "--dry-run", "--as", "viewer"], "Execute permission"),
        (["--from", "ghost", "--dry-run", "--as", "executor"], "not in this pipeline"),
    ]
    before = snapshot()
    for args, message in cases:
        with pytest.raises(CommandError) as info:
            call_command("retry_execution", str(execution.pk), *args)
        assert info.value.returncode == 2 and message in str(info.value), (args, str(info.value))
    assert snapshot() == before


def test_rerun_command_runs_the_current_version(worker, personas, serial, capsys):
    pipeline, _ = serial
    execution = wait_for_status(
        run_pipeline(pipeline=pipeline, user=personas.executor, inputs={}), Status.SUCCESS
    )
    call_command(
        "rerun_execution", str(execution.pk), "--input", "version=2.0", "--as", "executor", "--wait"
    )
    rerun = Execution.objects.get(rerun_of=execution)
    assert rerun.inputs["version"] == "2.0" and rerun.status == Status.SUCCESS
    with pytest.raises(CommandError, match="not a runtime input"):
        call_command("rerun_execution", str(execution.pk), "--input", "ghost=1", "--as", "executor")
