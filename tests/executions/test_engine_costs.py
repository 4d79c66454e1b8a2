"""What one stage and one retry cost the database, and that the cheaper paths behave exactly
like the plain ones: statement counts do not grow with the pipeline, a condition still sees
earlier stages' outputs, and a retry copied inside the database has the rows the spec builds.

Counts, not timings: the timings are the benchmark's (``manage.py bench``, docs/performance.md).
Steps run here, in the test process, with the real engine (``drive``).
"""

from __future__ import annotations

import pytest
from django.db import OperationalError, connection, transaction
from django.test.utils import CaptureQueriesContext

from executions import engine, launcher
from executions.models import Event, Execution, StageRun, Status, StepRun
from executions.retry import create_retry, plan_retry
from executions.runners import base as runners_base
from executions.services import (
    CARRIED_STAGE_FIELDS,
    CARRIED_STEP_FIELDS,
    _new_runs,
    run_pipeline,
)
from tests.helpers.factories import make_pipeline, serial_pipeline, shell_stage
from tests.helpers.pages import many_stages_yaml
from tests.helpers.runs import drive

# Run again on PostgreSQL by the integration suite: the retry's copy is SQL of its own there.
pytestmark = pytest.mark.database

# The claim (UPDATE … RETURNING and its event), reading the step's stage and execution, and one
# transaction for the result and the advance (lock, step, stage runs, step runs, stage done,
# next stage started, next step queued, the events in one INSERT).
STATEMENTS_PER_STAGE = 15


def statements_of_a_middle_stage(execution: Execution) -> int:
    counts = []
    while step := StepRun.objects.filter(execution=execution, status=Status.QUEUED).first():
        with CaptureQueriesContext(connection) as captured:
            engine.run_step(step.pk)
        counts.append(len(captured.captured_queries))
    assert len(counts) >= 3
    return counts[len(counts) // 2]


@pytest.mark.parametrize("stages", [4, 40])
def test_a_stage_costs_the_same_few_statements_however_long_the_pipeline(personas, stages):
    yaml_text = serial_pipeline("costs", [shell_stage(f"s{i}", "true") for i in range(stages)])
    pipeline = make_pipeline(personas.project, yaml_text)
    execution = run_pipeline(pipeline=pipeline, user=personas.executor, inputs={})

    assert statements_of_a_middle_stage(execution) <= STATEMENTS_PER_STAGE
    execution.refresh_from_db()
    assert execution.status == Status.SUCCESS


# The fast path: a worker's task runs the next serial step itself, claimed with the result.
# On PostgreSQL one statement, a transaction of its own, takes the execution's lock, stores the
# result, closes the stage, starts the next one, claims its step and writes the events; elsewhere
# the general advance does it (BEGIN, lock, result, the next groups' stage and step runs, stage
# done, next stage started, next step claimed, the events, COMMIT).
FAST_STATEMENTS_PER_STAGE = {"postgresql": 1, "sqlite": 9}


def run_here(execution: Execution) -> int:
    """Run ``execution``'s queued first step as a worker's task does (with a budget), so that it
    runs every next step itself; the statements it took."""
    step = StepRun.objects.get(execution=execution, status=Status.QUEUED)
    with CaptureQueriesContext(connection) as captured:
        engine.run_step(step.pk, budget=3600)
    return len(captured.captured_queries)


def test_a_task_that_runs_the_next_steps_itself_pays_the_same_few_statements_per_stage(
    personas,
):
    totals = {}
    for stages in (4, 24):
        yaml_text = serial_pipeline(
            f"here{stages}", [shell_stage(f"s{i}", "true") for i in range(stages)]
        )
        pipeline = make_pipeline(personas.project, yaml_text)
        execution = run_pipeline(pipeline=pipeline, user=personas.executor, inputs={})
        totals[stages] = run_here(execution)
        execution.refresh_from_db()
        assert execution.status == Status.SUCCESS
        assert not StepRun.objects.filter(execution=execution).exclude(attempts=1).exists()
    per_stage = (totals[24] - totals[4]) / 20
    assert per_stage <= FAST_STATEMENTS_PER_STAGE[connection.vendor], totals


def test_a_step_claimed_by_the_task_before_it_reads_as_queued_and_claimed(personas):
    pipeline = make_pipeline(
        personas.project,
        serial_pipeline(
            "handover",
            [
                shell_stage("a", 'echo "v=1" >> "$STAGELINE_OUTPUT"'),
                shell_stage("b", 'echo "got <+pipeline.stages.a.output.v>"'),
                shell_stage("c", "true"),
            ],
        ),
    )
    execution = run_pipeline(pipeline=pipeline, user=personas.executor, inputs={})
    run_here(execution)
    execution.refresh_from_db()
    assert execution.status == Status.SUCCESS
    a, b, c = StepRun.objects.filter(execution=execution).order_by("stage_run__position")
    for step in (b, c):
        assert (step.worker, step.attempts, step.queued_at) == (a.worker, 1, step.started_at)
        assert list(
            Event.objects.filter(step_run=step)
            .order_by("id")
            .values_list("from_status", "to_status")
        ) == [
            (Status.NOT_STARTED, Status.QUEUED),
            (Status.QUEUED, Status.RUNNING),
            (Status.RUNNING, Status.SUCCESS),
        ]
    assert "got 1" in "".join(b.log_chunks.values_list("text", flat=True))
    assert execution.stage_runs.get(identifier="a").outputs == {"v": "1"}
    stage_events = list(
        Event.objects.filter(execution=execution, step_run=None)
        .exclude(stage_run=None)
        .order_by("id")
        .values_list("stage_run__identifier", "to_status")
    )
    assert stage_events == [
        (stage, status) for stage in "abc" for status in (Status.RUNNING, Status.SUCCESS)
    ]


def test_an_answer_lost_at_a_stage_boundary_runs_nothing_twice_and_loses_nothing(
    personas, monkeypatch
):
    """PostgreSQL commits the boundary's one statement but its answer never reaches the worker
    (a connection cut at that moment): the worker tries again, finds the step that statement
    claimed for it and runs it, instead of leaving it to lapse as a lost worker's."""
    real = engine.finish_and_claim_next
    lost: list[object] = []

    def answer_lost(*args, **kwargs):
        handover = real(*args, **kwargs)
        if not lost:
            lost.append(handover)
            raise OperationalError("server closed the connection unexpectedly")
        return handover

    monkeypatch.setattr(engine, "finish_and_claim_next", answer_lost)
    monkeypatch.setattr(runners_base, "_reset_connection", lambda: None)  # the test's transaction
    pipeline = make_pipeline(
        personas.project,
        serial_pipeline("lost", [shell_stage(s, f"echo ran {s}") for s in "abc"]),
    )
    execution = run_pipeline(pipeline=pipeline, user=personas.executor, inputs={})
    run_here(execution)

    execution.refresh_from_db()
    assert execution.status == Status.SUCCESS
    assert bool(lost) == (connection.vendor == "postgresql")  # only PostgreSQL takes that path
    for step in StepRun.objects.filter(execution=execution):
        assert (step.status, step.attempts) == (Status.SUCCESS, 1)
        log = "".join(step.log_chunks.values_list("text", flat=True))
        assert log.count("ran ") == 1


def test_a_step_on_another_queue_still_goes_through_the_broker(personas):
    pipeline = make_pipeline(
        personas.project,
        serial_pipeline(
            "elsewhere",
            [
                shell_stage("a", "true"),
                shell_stage("b", "true", extra="\n        runs_on: elsewhere_queue"),
            ],
        ),
    )
    execution = run_pipeline(pipeline=pipeline, user=personas.executor, inputs={})
    run_here(execution)
    b = StepRun.objects.get(execution=execution, stage_run__identifier="b")
    assert b.status == Status.QUEUED and b.worker == ""
    drive(execution)


def test_every_transition_of_a_stage_still_has_its_event_in_order(personas):
    pipeline = make_pipeline(
        personas.project,
        serial_pipeline("events", [shell_stage("a", "true"), shell_stage("b", "true")]),
    )
    execution = drive(run_pipeline(pipeline=pipeline, user=personas.executor, inputs={}))
    assert execution.status == Status.SUCCESS
    b_step = StepRun.objects.get(execution=execution, stage_run__identifier="b")
    step_events = [
        (e.from_status, e.to_status) for e in Event.objects.filter(step_run=b_step).order_by("id")
    ]
    assert step_events == [
        (Status.NOT_STARTED, Status.QUEUED),
        (Status.QUEUED, Status.RUNNING),
        (Status.RUNNING, Status.SUCCESS),
    ]
    # The batch keeps the order of the transitions: stage a done before stage b starts.
    stage_events = list(
        Event.objects.filter(execution=execution, step_run=None)
        .exclude(stage_run=None)
        .order_by("id")
        .values_list("stage_run__identifier", "to_status")
    )
    assert stage_events == [
        ("a", Status.RUNNING),
        ("a", Status.SUCCESS),
        ("b", Status.RUNNING),
        ("b", Status.SUCCESS),
    ]


def test_a_condition_sees_the_outputs_of_stages_that_succeeded_before(personas):
    yaml_text = serial_pipeline(
        "conditions",
        [
            shell_stage("probe", 'echo "go=yes" >> "$STAGELINE_OUTPUT"'),
            shell_stage("middle", "true"),
            shell_stage(
                "when_yes",
                "true",
                extra='\n        when: <+pipeline.stages.probe.output.go> == "yes"',
            ),
            shell_stage(
                "when_no",
                "true",
                extra='\n        when: <+pipeline.stages.probe.output.go> == "no"',
            ),
        ],
    )
    pipeline = make_pipeline(personas.project, yaml_text)
    execution = drive(run_pipeline(pipeline=pipeline, user=personas.executor, inputs={}))

    statuses = dict(execution.stage_runs.values_list("identifier", "status"))
    assert statuses == {
        "probe": Status.SUCCESS,
        "middle": Status.SUCCESS,
        "when_yes": Status.SUCCESS,
        "when_no": Status.SKIPPED,
    }
    assert execution.status == Status.SUCCESS


def test_the_advance_reads_past_groups_that_are_all_skipped(personas):
    # The advance reads two groups at a time: three skipped groups in a row make it read on.
    never = '\n        when: <+pipeline.variables.env> == "prod"'
    yaml_text = serial_pipeline(
        "skips",
        [
            shell_stage("first", "true"),
            *[shell_stage(f"skip{i}", "echo should not run", extra=never) for i in range(3)],
            shell_stage("last", 'echo "last ran"'),
        ],
        variables="- {name: env, type: String, value: <+input>, default: dev}",
    )
    pipeline = make_pipeline(personas.project, yaml_text)
    execution = drive(run_pipeline(pipeline=pipeline, user=personas.executor, inputs={}))
    statuses = dict(execution.stage_runs.values_list("identifier", "status"))
    assert statuses == {
        "first": Status.SUCCESS,
        "skip0": Status.SKIPPED,
        "skip1": Status.SKIPPED,
        "skip2": Status.SKIPPED,
        "last": Status.SUCCESS,
    }
    assert execution.status == Status.SUCCESS


PARALLEL_FAILING = """
pipeline:
  name: Copy
  identifier: copy
  stages:
    - stage:
        identifier: build
        name: Build
        steps:
          - step: {identifier: compile, name: Compile, type: ShellScript, spec: {script: 'echo "v=7" >> "$STAGELINE_OUTPUT"; echo built'}}
          - step: {identifier: test, name: Test, type: ShellScript, spec: {script: 'echo tested'}}
    - parallel:
        - stage:
            identifier: eu
            name: EU
            steps:
              - step: {identifier: s, name: Deploy EU, type: ShellScript, spec: {script: 'echo eu'}}
        - stage:
            identifier: us
            name: US
            steps:
              - step: {identifier: s, name: Deploy US, type: ShellScript, spec: {script: 'echo us; exit 3'}}
    - stage:
        identifier: verify
        name: Verify
        steps:
          - step: {identifier: s, name: Verify, type: ShellScript, spec: {script: 'echo verified'}}
"""

# Everything a stage or step run holds except its own key and the execution it belongs to.
SKIP = {"id", "execution", "stage_run"}


def rows(execution: Execution) -> list[dict]:
    stage_fields = [f.attname for f in StageRun._meta.concrete_fields if f.name not in SKIP]
    step_fields = [f.attname for f in StepRun._meta.concrete_fields if f.name not in SKIP]
    result = []
    for run in execution.stage_runs.order_by("position"):
        result.append({name: getattr(run, name) for name in stage_fields})
        for step in run.step_runs.order_by("position"):
            result.append(
                {"stage": run.identifier, **{name: getattr(step, name) for name in step_fields}}
            )
    return result


@pytest.mark.parametrize("mode", ["failed_only", "all"])
def test_a_retry_copied_in_the_database_has_the_rows_the_carry_over_rule_says(personas, mode):
    """A retry's rows are a fresh run's rows (``_new_runs``, from the spec), except that a
    carried-over stage and its steps take their result from the run they came from and point at
    it (``CARRIED_STAGE_FIELDS``, ``CARRIED_STEP_FIELDS``)."""
    pipeline = make_pipeline(personas.project, PARALLEL_FAILING)
    failed = drive(run_pipeline(pipeline=pipeline, user=personas.executor, inputs={}))
    assert failed.status == Status.FAILED

    plan = plan_retry(failed, personas.executor, from_stage="us", mode=mode)
    carried = {c.identifier: plan.runs[c.identifier] for c in plan.carried}
    # A fresh run of the same version, built the plain way, then thrown away.
    with transaction.atomic():
        twin = Execution.objects.create(
            pipeline=pipeline, version=failed.version, sequence=999, status=Status.QUEUED
        )
        _new_runs(twin, failed.version.spec, [])
        expected = rows(twin)
        transaction.set_rollback(True)
    originals = {
        (row.get("stage"), row["identifier"]): row
        for row in rows(failed)
        if row.get("stage", row["identifier"]) in carried
    }
    for want in expected:
        original = originals.get((want.get("stage"), want["identifier"]))
        if original is None:
            continue
        stage_row = "stage" not in want
        fields = ("status", "error", *CARRIED_STAGE_FIELDS) if stage_row else CARRIED_STEP_FIELDS
        want.update({name: original[name] for name in fields if name != "carried_from_id"})
        source = StageRun if stage_row else StepRun
        first = source.objects.get(
            execution=failed,
            identifier=want["identifier"],
            **({} if stage_row else {"stage_run__identifier": want["stage"]}),
        )
        want["carried_from_id"] = first.carried_from_id or first.pk

    retry = create_retry(execution=failed, user=personas.executor, from_stage="us", mode=mode)
    # Compare before the retry moves on: create_retry has started its first stage already.
    got = rows(retry)
    started = {
        r["identifier"] for r in got if "stage" not in r and r["status"] != Status.NOT_STARTED
    }
    for row, want in zip(got, expected, strict=True):
        identifier = row.get("stage", row["identifier"])
        if identifier in started and identifier not in carried:
            continue  # the retry's first stage has started: its rows moved on, by design
        assert row == want, identifier
    assert {c for c in carried} == ({"build", "eu"} if mode == "failed_only" else {"build"})

    finished = drive(retry)
    assert finished.status == Status.FAILED  # us fails again, as it should
    assert (
        finished.stage_runs.get(identifier="build").carried_from_id
        == failed.stage_runs.get(identifier="build").pk
    )


def test_a_retry_submit_costs_the_same_queries_for_a_long_pipeline(personas):
    counts = {}
    for stages in (5, 60):
        pipeline = make_pipeline(personas.project, many_stages_yaml(stages))
        failed = drive(run_pipeline(pipeline=pipeline, user=personas.executor, inputs={}))
        assert failed.status == Status.FAILED
        with CaptureQueriesContext(connection) as captured:
            retry = create_retry(
                execution=failed, user=personas.executor, from_stage=f"s{stages - 1}"
            )
        counts[stages] = len(captured.captured_queries)
        assert retry.stage_runs.filter(carried_from__isnull=False).count() == stages - 1
        assert StepRun.objects.filter(execution=retry).count() == stages
    assert counts[60] == counts[5], counts


def test_steps_also_run_where_setpriv_is_missing(personas, monkeypatch):
    # No sandbox, no setpriv: the preexec_fn path (a full fork), same result.
    monkeypatch.setattr(
        launcher, "_current", launcher.Launcher(launcher.Isolation.SAME_USER, setpriv=None)
    )
    yaml_text = serial_pipeline(
        "fallback",
        [
            shell_stage(
                "a",
                'echo "pid=$$ parent=$PPID"; echo "ok=yes" >> "$STAGELINE_OUTPUT"; false; echo never',
            )
        ],
    )
    pipeline = make_pipeline(personas.project, yaml_text)
    execution = drive(run_pipeline(pipeline=pipeline, user=personas.executor, inputs={}))
    step = StepRun.objects.get(execution=execution)
    assert (execution.status, step.status, step.exit_code) == (Status.FAILED, Status.FAILED, 1)
    assert step.outputs == {"ok": "yes"} and step.pid
    log = "".join(step.log_chunks.order_by("seq").values_list("text", flat=True))
    assert f"pid={step.pid} " in log  # $$ is the group leader, whose pid the step stores
    assert "never" not in log  # set -e: the script stops at the first failing command
