"""The engine runs real pipelines on a real worker: every status of SPEC §3 for real."""

from __future__ import annotations

import pytest

from executions import engine
from executions.models import Event, Execution, LogChunk, StageRun, Status, StepRun
from executions.services import Conflict, abort_execution, answer_approval, run_pipeline
from stageline.processes import step_processes
from tests.helpers.factories import make_pipeline, serial_pipeline, shell_stage
from tests.helpers.runs import wait_for, wait_for_stage, wait_for_status

pytestmark = pytest.mark.engine


def log_of(execution: Execution, stage: str) -> str:
    chunks = LogChunk.objects.filter(
        step_run__execution=execution, step_run__stage_run__identifier=stage
    )
    return "".join(chunk.text for chunk in chunks.order_by("step_run__position", "seq"))


def run(pipeline, user, **inputs) -> Execution:
    return run_pipeline(pipeline=pipeline, user=user, inputs=inputs)


def test_serial_stages_run_in_order_and_pass_outputs(worker, personas):
    pipeline = make_pipeline(
        personas.project,
        serial_pipeline(
            "outputs",
            [
                shell_stage(
                    "build", 'echo "image=web:$STAGELINE_SEQUENCE_ID" >> "$STAGELINE_OUTPUT"'
                ),
                shell_stage("deploy", 'echo "deploying <+pipeline.stages.build.output.image>"'),
            ],
        ),
    )
    execution = wait_for_status(run(pipeline, personas.executor), Status.SUCCESS)
    build, deploy = execution.stage_runs.order_by("position")
    assert build.outputs == {"image": f"web:{execution.sequence}"}
    assert build.finished_at <= deploy.started_at
    assert f"deploying web:{execution.sequence}" in log_of(execution, "deploy")
    transitions = list(
        Event.objects.filter(execution=execution, stage_run=None, step_run=None).exclude(
            to_status=""
        )
    )
    assert [e.to_status for e in transitions] == [Status.RUNNING, Status.SUCCESS]


def test_a_failing_step_fails_the_stage_and_nothing_after_it_starts(worker, personas):
    pipeline = make_pipeline(
        personas.project,
        serial_pipeline(
            "fails",
            [shell_stage("one", "echo about to fail; exit 7"), shell_stage("two", "echo never")],
        ),
    )
    execution = wait_for_status(run(pipeline, personas.executor), Status.FAILED)
    one, two = execution.stage_runs.order_by("position")
    assert one.status == Status.FAILED and "exit code 7" in one.error
    assert two.status == Status.NOT_STARTED
    step = StepRun.objects.get(stage_run=one)
    assert step.exit_code == 7 and step.status == Status.FAILED
    assert "about to fail" in log_of(execution, "one")
    assert "stage 'one' failed" in execution.error


def test_parallel_siblings_run_to_the_end_when_one_fails(worker, personas):
    yaml_text = """
    pipeline:
      name: Par
      identifier: par
      stages:
        - parallel:
            - stage:
                identifier: bad
                steps:
                  - step: {identifier: s, type: ShellScript, spec: {script: "exit 1"}}
            - stage:
                identifier: slow_good
                steps:
                  - step: {identifier: s, type: ShellScript, spec: {script: "sleep 1; echo finished"}}
        - stage:
            identifier: after
            steps:
              - step: {identifier: s, type: ShellScript, spec: {script: "echo after"}}
    """
    execution = wait_for_status(
        run(make_pipeline(personas.project, yaml_text), personas.executor), Status.FAILED
    )
    runs = {r.identifier: r.status for r in execution.stage_runs.all()}
    assert runs == {"bad": Status.FAILED, "slow_good": Status.SUCCESS, "after": Status.NOT_STARTED}
    assert "finished" in log_of(execution, "slow_good")


def test_a_step_past_its_timeout_is_killed_and_expires(worker, personas):
    pipeline = make_pipeline(
        personas.project,
        serial_pipeline(
            "slow", [shell_stage("wait", "echo start; sleep 30; echo never", timeout="1s")]
        ),
    )
    execution = wait_for_status(run(pipeline, personas.executor), Status.EXPIRED, timeout=20)
    stage = execution.stage_runs.get()
    assert stage.status == Status.EXPIRED
    assert "timed out after 1s" in stage.error
    text = log_of(execution, "wait")
    assert "start" in text and "never" not in text and "timed out" in text


APPROVAL_YAML = """
pipeline:
  name: Gate
  identifier: gate
  stages:
    - stage:
        identifier: build
        steps:
          - step: {identifier: s, type: ShellScript, spec: {script: 'echo "v=7" >> "$STAGELINE_OUTPUT"'}}
    - stage:
        identifier: approve
        steps:
          - step: {identifier: gate, type: Approval, timeout: TIMEOUT, spec: {message: "Ship v<+pipeline.stages.build.output.v>?"}}
    - stage:
        identifier: ship
        steps:
          - step: {identifier: s, type: ShellScript, spec: {script: "echo shipped"}}
"""


def test_approval_waits_then_approved_continues(worker, personas):
    pipeline = make_pipeline(personas.project, APPROVAL_YAML.replace("TIMEOUT", "1h"))
    execution = run(pipeline, personas.executor)
    started_at = wait_for_status(execution, Status.WAITING).started_at
    step = StepRun.objects.get(execution=execution, type="Approval")
    assert step.status == Status.WAITING
    assert Event.objects.filter(
        step_run=step, to_status=Status.WAITING, message="Ship v7?"
    ).exists()
    answer_approval(
        execution=execution, stage="approve", user=personas.approver, approve=True, comment="go"
    )
    execution = wait_for_status(execution, Status.SUCCESS)
    assert execution.started_at == started_at  # waiting for a person does not restart the clock
    step.refresh_from_db()
    assert (step.status, step.decided_by, step.comment) == (Status.SUCCESS, personas.approver, "go")
    assert step.decided_at is not None
    assert "shipped" in log_of(execution, "ship")


def test_a_rejected_approval_rejects_the_execution(worker, personas):
    pipeline = make_pipeline(personas.project, APPROVAL_YAML.replace("TIMEOUT", "1h"))
    execution = run(pipeline, personas.executor)
    wait_for_status(execution, Status.WAITING)
    answer_approval(
        execution=execution,
        stage="approve",
        user=personas.approver,
        approve=False,
        comment="not today",
    )
    execution = wait_for_status(execution, Status.REJECTED)
    assert execution.stage_runs.get(identifier="ship").status == Status.NOT_STARTED
    with pytest.raises(Conflict):
        answer_approval(execution=execution, stage="approve", user=personas.approver, approve=True)


def test_an_unanswered_approval_expires(worker, personas):
    pipeline = make_pipeline(personas.project, APPROVAL_YAML.replace("TIMEOUT", "1s"))
    execution = run(pipeline, personas.executor)
    wait_for_status(execution, Status.WAITING)
    # Our own reap() or the scheduler's (process mode runs one) expires it, whichever is first.
    wait_for(
        lambda: (
            engine.reap() is not None
            and StepRun.objects.filter(
                execution=execution, type="Approval", status=Status.EXPIRED
            ).exists()
        ),
        timeout=15,
        interval=0.3,
        message="the approval to expire",
    )
    execution = wait_for_status(execution, Status.EXPIRED)
    assert "nobody answered" in execution.stage_runs.get(identifier="approve").error


def test_abort_kills_a_running_step_and_ends_aborted(worker, personas):
    pipeline = make_pipeline(
        personas.project,
        serial_pipeline("long", [shell_stage("sleepy", "echo started; sleep 600")]),
    )
    execution = run(pipeline, personas.executor)
    wait_for(lambda: "started" in log_of(execution, "sleepy"), message="the step to start")
    step = StepRun.objects.get(execution=execution)
    pid = step.pid
    assert pid
    abort_execution(execution=execution, user=personas.executor)
    execution = wait_for_status(execution, Status.ABORTED)
    wait_for(
        lambda: "aborted" in log_of(execution, "sleepy"),
        timeout=15,
        message="the worker to kill the step",
    )
    wait_for(lambda: not step_processes(pid), timeout=10, message="no process left of the step")
    assert Event.objects.filter(
        execution=execution, action="aborted", actor=personas.executor
    ).exists()


def test_abort_cancels_a_waiting_approval(worker, personas):
    pipeline = make_pipeline(personas.project, APPROVAL_YAML.replace("TIMEOUT", "1h"))
    execution = run(pipeline, personas.executor)
    wait_for_status(execution, Status.WAITING)
    abort_execution(execution=execution, user=personas.executor)
    execution = wait_for_status(execution, Status.ABORTED)
    assert StepRun.objects.get(execution=execution, type="Approval").status == Status.ABORTED
    with pytest.raises(Conflict):
        abort_execution(execution=execution, user=personas.executor)


def test_a_false_condition_skips_the_stage(worker, personas):
    yaml_text = serial_pipeline(
        "cond",
        [
            shell_stage("always", "echo hi"),
            shell_stage(
                "prod_only",
                "echo prod",
                extra='\n        when: <+pipeline.variables.env> == "prod"',
            ),
            shell_stage("last", "echo last"),
        ],
        variables="- {name: env, type: String, value: <+input>, default: dev}",
    )
    pipeline = make_pipeline(personas.project, yaml_text)
    execution = wait_for_status(run(pipeline, personas.executor), Status.SUCCESS)
    runs = {r.identifier: r.status for r in execution.stage_runs.all()}
    assert runs == {"always": Status.SUCCESS, "prod_only": Status.SKIPPED, "last": Status.SUCCESS}
    prod = wait_for_status(run(pipeline, personas.executor, env="prod"), Status.SUCCESS)
    assert prod.stage_runs.get(identifier="prod_only").status == Status.SUCCESS


def test_secrets_are_masked_in_logs_and_outputs(worker, personas):
    yaml_text = serial_pipeline(
        "secret",
        [
            shell_stage(
                "use",
                'echo "token is <+pipeline.variables.token>"; echo "leak=<+pipeline.variables.token>" >> "$STAGELINE_OUTPUT"',
            )
        ],
        variables="- {name: token, type: Secret, value: <+input>, required: true}",
    )
    pipeline = make_pipeline(personas.project, yaml_text)
    execution = wait_for_status(
        run(pipeline, personas.executor, token="hunter2-secret"), Status.SUCCESS
    )
    assert "token is ***" in log_of(execution, "use")
    assert "hunter2" not in log_of(execution, "use")
    assert execution.stage_runs.get().outputs == {"leak": "***"}
    assert "token" not in execution.inputs and execution.secret_inputs == {
        "token": "hunter2-secret"
    }


def test_inputs_reach_the_shell_as_values_not_code(worker, personas):
    yaml_text = serial_pipeline(
        "inject",
        [shell_stage("echo", 'echo "name=<+pipeline.variables.name>"; touch marker')],
        variables="- {name: name, type: String, value: <+input>}",
    )
    pipeline = make_pipeline(personas.project, yaml_text)
    payload = '$(echo PWNED) `echo PWNED` "; echo PWNED; "'
    execution = wait_for_status(run(pipeline, personas.executor, name=payload), Status.SUCCESS)
    text = log_of(execution, "echo")
    assert f"name={payload}" in text
    assert "\nPWNED" not in text and "=PWNED" not in text


def test_logs_are_stored_while_the_step_runs(worker, personas):
    pipeline = make_pipeline(
        personas.project,
        serial_pipeline(
            "live", [shell_stage("tick", "for i in 1 2 3 4 5 6; do echo tick-$i; sleep 0.5; done")]
        ),
    )
    execution = run(pipeline, personas.executor)
    wait_for(lambda: "tick-2" in log_of(execution, "tick"), message="early output")
    assert Execution.objects.get(pk=execution.pk).status == Status.RUNNING
    assert "tick-6" not in log_of(execution, "tick")
    execution = wait_for_status(execution, Status.SUCCESS)
    assert "tick-6" in log_of(execution, "tick")


def test_wait_step_sleeps_then_succeeds(worker, personas):
    yaml_text = """
    pipeline:
      name: Wait
      identifier: waiter
      stages:
        - stage:
            identifier: pause
            steps:
              - step: {identifier: w, type: Wait, spec: {duration: 1s}}
    """
    execution = run(make_pipeline(personas.project, yaml_text), personas.executor)
    seen_running = wait_for_stage(execution, "pause", {Status.RUNNING, Status.SUCCESS})
    execution = wait_for_status(execution, Status.SUCCESS)
    step = StepRun.objects.get(execution=execution)
    assert seen_running and (step.finished_at - step.started_at).total_seconds() >= 1


def test_a_redelivered_step_task_does_not_run_the_step_again(worker, personas):
    pipeline = make_pipeline(
        personas.project,
        serial_pipeline(
            "once", [shell_stage("count", 'echo ran >> "$STAGELINE_OUTPUT.count"; echo ran')]
        ),
    )
    execution = wait_for_status(run(pipeline, personas.executor), Status.SUCCESS)
    step = StepRun.objects.get(execution=execution)
    engine.run_step(step.pk)  # a duplicate delivery of the same task
    step.refresh_from_db()
    assert step.status == Status.SUCCESS and step.attempts == 1
    assert log_of(execution, "count").count("ran") == 1


def test_sequence_numbers_count_per_pipeline(worker, personas):
    pipeline = make_pipeline(personas.project, serial_pipeline("seq", [shell_stage("a", "true")]))
    first = run(pipeline, personas.executor)
    second = run(pipeline, personas.executor)
    assert (first.sequence, second.sequence) == (1, 2)
    wait_for_status(second, Status.SUCCESS)
    wait_for_status(first, Status.SUCCESS)
    assert StageRun.objects.filter(execution__pipeline=pipeline, status=Status.SUCCESS).count() == 2


def test_a_step_stays_queued_until_a_worker_of_its_pool_takes_it(worker, personas, settings):
    settings.STAGELINE_REDISPATCH_AFTER_SECONDS = 0
    pipeline = make_pipeline(
        personas.project,
        serial_pipeline(
            "pooled",
            [
                shell_stage(
                    "gpu_job", "echo never here", extra="\n        runs_on: nobody_serves_this"
                )
            ],
        ),
    )
    execution = run(pipeline, personas.executor)
    step = wait_for(
        lambda: StepRun.objects.filter(execution=execution, status=Status.QUEUED).first(),
        message="a queued step",
    )
    assert step.stage_run.queue == "nobody_serves_this"
    counts = engine.reap()  # a stale QUEUED step is sent again, not failed
    assert counts["redispatched"] == 1
    step.refresh_from_db()
    assert (
        step.status == Status.QUEUED
        and Execution.objects.get(pk=execution.pk).status == Status.RUNNING
    )
    abort_execution(execution=execution, user=personas.executor)
    assert StepRun.objects.get(pk=step.pk).status == Status.ABORTED
