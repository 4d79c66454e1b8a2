"""State changes that users ask for: run a pipeline, abort an execution, answer an approval.

Each service checks the acting user's permission first (``pipelines.permissions.check``), then its guard, then acts in
one transaction and enqueues work after commit. Refusals raise ``stageline.errors`` refusals,
which views turn into messages (400/403/404/409) and commands into exit code 2.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from executions import engine, strategies
from executions.inputs import InputErrors, validate_inputs
from executions.models import Execution, PendingWait, StageRun, StepRun
from executions.operate import abort_locked
from executions.selection import select_stages
from executions.states import ACTIVE, Status
from executions.transitions import events_batched, record, transition
from pipelines import permissions
from pipelines.models import Pipeline, PipelineVersion
from pipelines.spec.model import Action
from stageline.errors import Conflict, Invalid, NotFound

# How the runs of an execution are made, once each: a first run or a rerun builds fresh rows
# from the spec in Python (``_new_runs``); a retry copies the rows of the execution it retries
# inside the database (``_copy_runs``), carrying over the results below.
# What a carried-over stage run copies from the original (with its status and error).
CARRIED_STAGE_FIELDS = ("outputs", "started_at", "finished_at")
# What a carried-over step run copies from the original (its log is read from the original).
CARRIED_STEP_FIELDS = (
    "status",
    "started_at",
    "finished_at",
    "exit_code",
    "outputs",
    "error",
    "decided_by_id",
    "decided_at",
    "comment",
    "log_bytes",
    "log_truncated",
    "carried_from_id",
)


def create_execution(
    *,
    pipeline: Pipeline,
    version: PipelineVersion,
    user,
    values: Mapping[str, str],
    secrets: Mapping[str, str],
    carried: Mapping[str, StageRun] | None = None,
    selected: list[str] | None = None,
    copy_from: Execution | None = None,
    **links,
) -> Execution:
    """Create an execution with its stage and step runs, and start it after commit.

    A first run or a rerun (``copy_from`` None) gets fresh runs from the spec; ``selected``
    limits the stages that run (the others are SKIPPED). A retry names the execution it retries
    (``copy_from``, same version) and the stages it carries over (``carried``): its runs are
    copied from that execution in the database, the carried ones with their results.
    ``links`` are the retry/rerun fields of ``Execution``. Call inside a transaction.
    """
    carried = carried or {}
    spec = version.spec
    # FOR NO KEY UPDATE: it serializes the sequence like FOR UPDATE, without blocking the rows
    # that merely reference the pipeline (a worker ending one of its executions writes its
    # insight rows meanwhile; with FOR UPDATE the two could deadlock on PostgreSQL).
    locked = Pipeline.objects.select_for_update(no_key=True).get(pk=pipeline.pk)
    Pipeline.objects.filter(pk=pipeline.pk).update(last_sequence=F("last_sequence") + 1)
    sequence = locked.last_sequence + 1
    now = timezone.now()
    execution = Execution.objects.create(
        pipeline=pipeline,
        version=version,
        sequence=sequence,
        status=Status.QUEUED,
        triggered_by=user,
        inputs=dict(values),
        secret_inputs=dict(secrets),
        selected_stages=list(selected or []),
        **links,
    )
    if copy_from is not None:
        _copy_runs(execution, copy_from, carried=set(carried), selected=selected or [])
    else:
        _new_runs(execution, spec, selected or [])
    with events_batched():
        record(
            execution, "created", actor=user, message=f"started by {user}" if user else "started"
        )
        transition(execution, to=Status.RUNNING, started_at=now)
        engine.advance_locked(execution)
    return execution


def _new_runs(execution: Execution, spec, selected: list[str]) -> None:
    """The fresh stage and step runs of ``execution``, built from the spec: NOT_STARTED, or
    SKIPPED when ``selected`` leaves the stage out."""
    stage_runs: list[StageRun] = []
    position = 0
    for group in spec.groups:
        for stage in group.stages:
            run = StageRun(
                execution=execution,
                identifier=stage.identifier,
                name=stage.name,
                group_index=group.index,
                position=position,
                queue=stage.runs_on,
            )
            if selected and stage.identifier not in selected:
                run.status = Status.SKIPPED
                run.error = "not selected for this run"
            stage_runs.append(run)
            position += 1
    StageRun.objects.bulk_create(stage_runs)
    step_runs = [
        StepRun(
            stage_run=run,
            execution=execution,
            identifier=step.identifier,
            name=step.name,
            type=step.type,
            position=index,
            status=Status.SKIPPED if run.status == Status.SKIPPED else Status.NOT_STARTED,
        )
        for run in stage_runs
        for index, step in enumerate(spec.stage(run.identifier).steps)
    ]
    StepRun.objects.bulk_create(step_runs)


def _copy_runs(
    execution: Execution, source: Execution, *, carried: set[str], selected: list[str]
) -> None:
    """The stage and step runs of ``execution`` (a retry), copied from ``source`` (the execution
    it retries, same version) inside the database: two ``INSERT … SELECT`` statements instead
    of building hundreds of rows in Python. A stage in ``carried`` keeps its result (and points
    at the run it came from); the others start over as NOT_STARTED, or SKIPPED when ``selected``
    leaves them out (the same rows ``_new_runs`` builds for a fresh run, tested field by field).
    """
    assert source.version_id == execution.version_id
    ops = connection.ops
    carried_ids = sorted(carried) or [""]
    selected_ids = sorted(selected)

    def is_carried(stage_alias: str) -> tuple[str, list]:
        return f"{stage_alias}.identifier IN ({', '.join(['%s'] * len(carried_ids))})", list(
            carried_ids
        )

    def by_stage(stage_alias: str, if_carried: str, if_left_out, otherwise) -> tuple[str, list]:
        """A CASE on the stage: carried over, left out by the selection (SKIPPED), or neither."""
        carried_sql, params = is_carried(stage_alias)
        sql = f"CASE WHEN {carried_sql} THEN {if_carried} "
        if selected_ids:
            sql += f"WHEN {stage_alias}.identifier NOT IN ({', '.join(['%s'] * len(selected_ids))}) THEN %s "
            params += [*selected_ids, if_left_out]
        return sql + "ELSE %s END", [*params, otherwise]

    def column(alias: str, name: str) -> tuple[str, list]:
        return f"{alias}.{ops.quote_name(name)}", []

    def origin(alias: str, stage_alias: str) -> tuple[str, list]:
        carried_sql, params = is_carried(stage_alias)
        return (
            f"CASE WHEN {carried_sql} THEN COALESCE({alias}.carried_from_id, {alias}.id) END",
            params,
        )

    def insert(
        model, alias: str, stage_alias: str, source_sql: str, specials: dict, kept: set[str]
    ) -> None:
        columns, values, params = [], [], []
        for field in model._meta.concrete_fields:
            if field.primary_key:
                continue
            columns.append(ops.quote_name(field.column))
            default = field.get_db_prep_save(field.get_default(), connection)
            if field.name in specials:
                sql, extra = specials[field.name]
            elif field.attname in kept:  # a carried run copies it, a fresh one has the default
                sql, extra = by_stage(
                    stage_alias, f"{alias}.{ops.quote_name(field.column)}", default, default
                )
            else:
                sql, extra = "%s", [default]
            values.append(sql)
            params += extra
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {ops.quote_name(model._meta.db_table)} ({', '.join(columns)}) "
                f"SELECT {', '.join(values)} {source_sql}",
                [*params, source.pk],
            )

    new_id: tuple[str, list[object]] = (str(int(execution.pk)), [])
    stage_table = ops.quote_name(StageRun._meta.db_table)
    insert(
        StageRun,
        "s",
        "s",
        f"FROM {stage_table} s WHERE s.execution_id = %s ORDER BY s.position",
        {
            "execution": new_id,
            **{
                name: column("s", name)
                for name in ("identifier", "name", "group_index", "position", "queue")
            },
            "status": by_stage("s", "s.status", Status.SKIPPED, Status.NOT_STARTED),
            "error": by_stage("s", "s.error", "not selected for this run", ""),
            "carried_from": origin("s", "s"),
        },
        kept=set(CARRIED_STAGE_FIELDS),
    )
    # A step of a carried stage copies its result; the others start NOT_STARTED, or SKIPPED
    # with their stage.
    insert(
        StepRun,
        "t",
        "s",
        f"FROM {ops.quote_name(StepRun._meta.db_table)} t JOIN {stage_table} s ON s.id = t.stage_run_id "
        f"JOIN {stage_table} n ON n.execution_id = {int(execution.pk)} AND n.identifier = s.identifier "
        "WHERE t.execution_id = %s ORDER BY s.position, t.position",
        {
            "execution": new_id,
            "stage_run": ("n.id", []),
            **{name: column("t", name) for name in ("identifier", "name", "type", "position")},
            "status": by_stage("s", "t.status", Status.SKIPPED, Status.NOT_STARTED),
            "carried_from": origin("t", "s"),
        },
        kept=set(CARRIED_STEP_FIELDS),
    )


def run_pipeline(
    *,
    pipeline: Pipeline,
    user,
    inputs: Mapping[str, object],
    stages: Sequence[str] | None = None,
    rerun_of: Execution | None = None,
) -> Execution:
    """Start the pipeline's current version with ``inputs`` (validated here); ``stages`` is
    the operator's selection (``None``: every stage), decided by ``selection.select_stages``."""
    permissions.check(user, "execute", pipeline)
    version = pipeline.current_version
    if version is None:
        raise Invalid(f"Pipeline {pipeline.identifier} has no definition yet.")
    spec = version.spec
    try:
        values, secrets = validate_inputs(spec, inputs)
    except InputErrors as exc:
        raise Invalid(
            "Some runtime inputs are not valid: " + str(exc), field_errors=exc.errors
        ) from None
    selected = select_stages(spec, stages)
    with transaction.atomic():
        execution = create_execution(
            pipeline=pipeline,
            version=version,
            user=user,
            values=values,
            secrets=secrets,
            selected=selected,
            rerun_of=rerun_of,
        )
    return execution


def abort_execution(*, execution: Execution, user) -> Execution:
    """Abort a running execution: running steps are killed by their workers (they watch their
    status), waiting approvals, interventions and failure-strategy waits are cancelled, the
    execution ends ABORTED."""
    permissions.check(user, "execute", execution)
    with transaction.atomic():
        locked = Execution.objects.select_for_update().get(pk=execution.pk)
        if locked.status not in ACTIVE:
            raise Conflict(
                f"Execution #{locked.sequence} already ended {locked.get_status_display()}."
            )
        abort_locked(locked, actor=user, reason=f"aborted by {user}", action="aborted")
    return locked


def answer_approval(
    *, execution: Execution, stage: str, user, approve: bool, comment: str = ""
) -> StepRun:
    """Approve or reject the approval step waiting in ``stage``. A rejection goes to the
    pipeline's failure strategy for ``approval_rejected`` when it declares one
    (``engine.approval_failed``: retry asks again, ignore, mark as success, abort, manual
    intervention); otherwise the step ends REJECTED."""
    permissions.check(user, "approve", execution)
    comment = (comment or "")[:2000]
    with transaction.atomic(), events_batched():
        # The execution's lock first, as every writer takes it (a strategy may abort the run).
        locked = (
            Execution.objects.select_related("version")
            .select_for_update(of=("self",))
            .get(pk=execution.pk)
        )
        step = (
            StepRun.objects.select_for_update(of=("self",))
            .select_related("stage_run")
            .filter(
                execution=locked,
                stage_run__identifier=stage,
                type="Approval",
                status=Status.WAITING,
            )
            .first()
        )
        if step is None:
            if not execution.stage_runs.filter(identifier=stage).exists():
                raise NotFound(f"Execution #{execution.sequence} has no stage '{stage}'.")
            raise Conflict(
                f"Stage '{stage}' of execution #{execution.sequence} is not waiting for approval."
            )
        fields = {"decided_by": user, "decided_at": timezone.now(), "comment": comment}
        if approve:
            won = transition(
                step,
                to=Status.SUCCESS,
                sources=[Status.WAITING],
                actor=user,
                action="approved",
                message=comment,
                error="",
                **fields,
            )
        else:
            won = engine.approval_failed(
                locked,
                step,
                "approval_rejected",
                {**fields, "error": f"rejected by {user}" + (f": {comment}" if comment else "")},
                actor=user,
                action="rejected",
                message=comment,
            )
        if not won:
            raise Conflict("Someone answered this approval first.")
    engine.advance(execution.pk)
    return step


# What a person may answer to a step waiting for intervention (SPEC §9).
INTERVENTION_ANSWERS = ("retry", "ignore", "mark_as_success", "mark_as_failure", "abort")


def check_answer(action: str) -> str:
    """``action`` if it is an answer to an intervention; ``Invalid`` naming the answers if not."""
    if action not in INTERVENTION_ANSWERS:
        raise Invalid(f"'{action[:40]}' is not an answer (use {', '.join(INTERVENTION_ANSWERS)}).")
    return action


def intervention_step(execution: Execution, step: str) -> StepRun:
    """The step of ``execution`` named ``step`` (``STEP`` or ``STAGE.STEP``) that waits for
    intervention (with its stage run). ``NotFound`` when no step has that name, ``Invalid`` when
    the name fits several waiting steps, ``Conflict`` when it waits no more: the message says
    what it is now, and ``extra["steps"]`` holds the named steps as they are."""
    stage_name, _, step_name = step.rpartition(".")
    named = StepRun.objects.select_related("stage_run", "decided_by").filter(
        execution=execution, identifier=step_name
    )
    if stage_name:
        named = named.filter(stage_run__identifier=stage_name)
    found = list(named.order_by("stage_run__position", "position"))
    if not found:
        raise NotFound(f"Execution #{execution.sequence} has no step '{step}'.")
    waiting = [run for run in found if run.status == Status.INTERVENTION_WAITING]
    if not waiting:
        now_is = ", ".join(
            f"'{run.stage_run.identifier}.{run.identifier}' is {run.get_status_display().lower()}"
            for run in found
        )
        raise Conflict(
            f"Nothing to answer: {now_is} (someone may have answered first).", steps=found
        )
    if len(waiting) > 1:
        raise Invalid(f"Several steps are named '{step}': write STAGE.STEP.")
    return waiting[0]


def answer_intervention(
    *, execution: Execution, step: str, user, action: str, comment: str = ""
) -> StepRun:
    """Answer the failure of ``step`` (``STEP`` or ``STAGE.STEP``), waiting for intervention:
    retry (a new attempt now), ignore, mark as success, mark as failure or abort. Two answers
    at once: the first wins, the second is refused saying what the step is now."""
    permissions.check(user, "execute", execution)
    check_answer(action)
    comment = (comment or "")[:2000]
    with transaction.atomic(), events_batched():
        locked = Execution.objects.select_for_update().get(pk=execution.pk)
        target = intervention_step(locked, step)
        PendingWait.objects.cancel(step_run=target)
        why = f"answered by {user}" + (f": {comment}" if comment else "")
        fields = {
            "decided_by": user,
            "decided_at": timezone.now(),
            "comment": comment,
            "deadline": None,
        }
        if action == "retry":
            strategies.retry_step(
                locked,
                target.stage_run,
                target,
                delay=0,
                message=f"retry ({why})",
                dispatch=engine.dispatch_step,
                fields=fields,
                sources=[Status.INTERVENTION_WAITING],
                actor=user,
            )
        else:
            strategies.end_step(
                Action(action),
                locked,
                target,
                why=why,
                sources=[Status.INTERVENTION_WAITING],
                fields=fields,
                actor=user,
            )
    engine.advance(execution.pk)
    return target
