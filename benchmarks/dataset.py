"""The dashboard dataset: a million executions with their stage and step runs, written fast.

Rows are built in Python in batches and written with ``COPY … FROM STDIN`` on PostgreSQL
(``executemany`` in one transaction on SQLite), with ids assigned here so that the stage and
step runs can point at their execution without a round trip; the id sequences are moved past
them afterwards and PostgreSQL gets a ``VACUUM ANALYZE`` (what autovacuum would do after such
a load), so the planner sees the table as it is.

The data, seeded and so the same at every generation:

- organization ``bench``, projects ``alpha``, ``beta``, ``gamma``; 100 pipelines between them
  (two to six stages, some in parallel groups), plus in ``alpha`` the two that the pages are
  timed on: ``wide_50`` (50 stages) and ``retry_200`` (200 stages, runtime inputs at pipeline
  level and on every tenth stage);
- executions spread over the last 60 days, newest last: 80 % SUCCESS, 13 % FAILED, 4 % ABORTED,
  3 % EXPIRED; a failed one has the stages before the failing one SUCCESS, the failing one (a
  member of a parallel group: its siblings ran to the end) with its step's error, and the later
  ones NOT_STARTED; started by one of 20 users;
- half of the FAILED executions of the regular pipelines are retried (each retry takes the place
  of the next planned execution, so the total stays as asked): created 5 min to 4 h later, from
  the failed group, the groups before it carried over; 70 % of the retries succeed, the others
  fail in the same group again (what the retry insights page reads; its rollup is filled after
  the load, as ``manage.py backfill_insights`` does);
- every execution of ``wide_50`` and ``retry_200`` FAILED (at stage 40 and 150), the failed step
  of ``wide_50`` with a 10-chunk log.

Events are not generated: no timed page reads them for finished executions.

A marker row (an ``AuditEvent``) written in the same transaction says the dataset is complete
and how large it is, so the next benchmark run reuses it instead of writing it again.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.core.management.color import no_style
from django.db import DatabaseError, connection, models, transaction
from django.db.models import Max

from benchmarks import fixtures
from executions import rollup
from executions.inputs import validate_inputs
from executions.models import (
    Event,
    Execution,
    InsightDay,
    InsightRecovery,
    LogChunk,
    StageRun,
    Status,
    StepRun,
)
from pipelines.models import AuditEvent, Pipeline, Project
from pipelines.services import save_pipeline

MARKER = "bench.dataset"
PROJECTS = [("alpha", "Alpha"), ("beta", "Beta"), ("gamma", "Gamma")]
PIPELINES = 100
USERS = 20
DAYS = 60
BATCH = 20_000
RETRIED = 0.5  # the share of failed executions of the regular pipelines that are retried
WIDE, WIDE_STAGES, WIDE_FAILS_AT = "wide_50", 50, 40
RETRY, RETRY_STAGES, RETRY_FAILS_AT = "retry_200", 200, 150
STATUSES = (
    [Status.SUCCESS] * 80 + [Status.FAILED] * 13 + [Status.ABORTED] * 4 + [Status.EXPIRED] * 3
)
SHAPES = [
    [["build"], ["test"], ["deploy_eu", "deploy_us"], ["release"]],
    [["extract"], ["transform"], ["load"]],
    [["lint"], ["unit", "integration", "e2e"], ["package"], ["publish"]],
    [["build"], ["deploy"]],
    [["checkout"], ["build"], ["test"], ["scan"], ["publish"]],
]
ERRORS: dict[str, str] = {
    Status.FAILED: "exit code 1",
    Status.ABORTED: "aborted by bench-user-01",
    Status.EXPIRED: "timed out after 300s",
}
VERSION_INPUT = '{name: version, type: String, value: <+input>, default: "1.0.0"}'
TARGET_INPUT = (
    "{name: target, type: String, value: <+input>, default: linux, allowed_values: [linux, arm64]}"
)


class DatasetError(Exception):
    """The benchmark database holds another dataset (the message says what to do)."""


@dataclass
class Dataset:
    """What the dashboard benchmark needs to know about the generated data."""

    executions: int
    projects: list[Project]
    operator: User
    wide: Pipeline
    retry: Pipeline
    generated_in: float  # seconds; 0 when it was reused
    rows: int


# --- writing rows fast ------------------------------------------------------------------------


def _json(value) -> str:
    return json.dumps(value, separators=(",", ":"))


class Writer:
    """Appends rows to a model's table: COPY on PostgreSQL, executemany on SQLite.

    ``columns`` are attribute names given for every row; every other column gets its field's
    default, computed once.
    """

    def __init__(self):
        self.postgres = connection.vendor == "postgresql"
        self.rows = 0

    def skip_foreign_key_checks(self) -> bool:
        """Inside the generating transaction on PostgreSQL: skip the foreign-key checks that
        Django's constraints defer to COMMIT (one index probe per row: most of a million-row
        load's time). The rows are built consistent here. It takes a role allowed to set
        ``session_replication_role`` (a superuser, as pg_restore --disable-triggers does);
        without it the checks simply run. Returns whether they are skipped."""
        if not self.postgres:
            return False
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute("SET LOCAL session_replication_role = replica")
        except DatabaseError:
            return False
        return True

    def when(self, value: datetime | None):
        """A timestamp as this backend takes it in bulk (SQLite: naive UTC text, like Django)."""
        if value is None or self.postgres:
            return value
        return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")

    def plan(self, model: type[models.Model], columns: list[str]) -> tuple[str, tuple]:
        fields = {f.attname: f for f in model._meta.concrete_fields}
        unknown = [c for c in columns if c not in fields]
        if unknown:
            raise ValueError(f"{model.__name__} has no column(s) {unknown}")
        # A concrete field's column is its db_column, else its attname (Django's own rule).
        names = [fields[c].column or fields[c].attname for c in columns]
        constants = []
        for attname, f in fields.items():
            if attname in columns:
                continue
            value = f.get_default()
            if value is None and not f.null:
                raise ValueError(
                    f"the dataset generator does not fill {model.__name__}.{attname} (not null, no default)"
                )
            if isinstance(f, models.JSONField):
                value = _json(value)
            elif isinstance(f, models.DateTimeField):
                value = self.when(value)
            names.append(f.column or f.attname)
            constants.append(value)
        quoted = ", ".join(connection.ops.quote_name(n) for n in names)
        return f"{connection.ops.quote_name(model._meta.db_table)} ({quoted})", tuple(constants)

    def write(self, model: type[models.Model], columns: list[str], rows: list[tuple]) -> None:
        if not rows:
            return
        target, constants = self.plan(model, columns)
        if self.postgres:
            with connection.cursor() as cursor:
                with cursor.cursor.copy(f"COPY {target} FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row + constants)
        else:
            width = len(rows[0]) + len(constants)
            marks = ", ".join(["?"] * width)
            raw = connection.connection
            raw.executemany(
                f"INSERT INTO {target} VALUES ({marks})", (row + constants for row in rows)
            )
        self.rows += len(rows)


def next_id(model: type[models.Model]) -> int:
    return (model._default_manager.aggregate(top=Max("id"))["top"] or 0) + 1


def reset_sequences(*model_list: type[models.Model]) -> None:
    statements = connection.ops.sequence_reset_sql(no_style(), list(model_list))
    if statements:
        with connection.cursor() as cursor:
            for statement in statements:
                cursor.execute(statement)


# --- what executions look like ----------------------------------------------------------------


@dataclass
class Shape:
    """A pipeline's stages, as the generator needs them."""

    pipeline: Pipeline
    groups: list[list[tuple[str, str]]]  # (identifier, name) per stage, per group
    inputs: str  # Execution.inputs, as JSON text
    fails_at: int | None = None  # the group a failed execution fails in (None: random)


def shape_of(pipeline: Pipeline, fails_at: int | None = None) -> Shape:
    version = pipeline.current_version
    assert version is not None, f"pipeline {pipeline.identifier} has no definition"
    spec = version.spec
    values, _secrets = validate_inputs(spec, {})
    groups = [[(stage.identifier, stage.name) for stage in group.stages] for group in spec.groups]
    return Shape(pipeline, groups, _json(values), fails_at)


class RowMaker:
    """Builds the rows of executions, one at a time, into per-table lists."""

    def __init__(self, writer: Writer, rng: random.Random, user_ids: Sequence[int | None]):
        self.writer = writer
        self.rng = rng
        self.user_ids = user_ids
        self.execution_id = next_id(Execution)
        self.stage_id = next_id(StageRun)
        self.step_id = next_id(StepRun)
        self.chunk_id = next_id(LogChunk)
        self.executions: list[tuple] = []
        self.stages: list[tuple] = []
        self.steps: list[tuple] = []
        self.chunks: list[tuple] = []

    EXECUTION_COLUMNS = [
        "id",
        "pipeline_id",
        "version_id",
        "sequence",
        "status",
        "triggered_by_id",
        "created_at",
        "started_at",
        "finished_at",
        "inputs",
        "error",
        "retry_of_id",
        "chain_root_id",
        "attempt",
        "resumed_from",
    ]
    STAGE_COLUMNS = [
        "id",
        "execution_id",
        "identifier",
        "name",
        "group_index",
        "position",
        "status",
        "started_at",
        "finished_at",
        "error",
        "carried_from_id",
    ]
    STEP_COLUMNS = [
        "id",
        "stage_run_id",
        "execution_id",
        "identifier",
        "name",
        "type",
        "position",
        "status",
        "queued_at",
        "started_at",
        "finished_at",
        "exit_code",
        "error",
        "attempts",
        "worker",
        "log_bytes",
    ]
    CHUNK_COLUMNS = ["id", "step_run_id", "seq", "text", "created_at"]

    def add(
        self,
        shape: Shape,
        sequence: int,
        created: datetime,
        status: str,
        logs: bool = False,
        *,
        retry: tuple | None = None,
        carried: dict[str, tuple] | None = None,
        resume_at: int = 0,
    ) -> int:
        """One execution; with ``retry`` (retry_of, chain_root, attempt, resumed_from), a retry
        that carries over the groups before ``resume_at`` from ``carried`` (the original's stage
        rows by identifier) and runs the rest (failing, if it fails, in the same group)."""
        rng, when = self.rng, self.writer.when
        execution_id = self.execution_id
        self.execution_id += 1
        failing_group = None
        if status != Status.SUCCESS:
            failing_group = (
                resume_at
                if retry is not None
                else shape.fails_at
                if shape.fails_at is not None
                else rng.randrange(len(shape.groups))
            )
        clock = created + timedelta(seconds=rng.uniform(0.2, 3.0))
        started = clock
        position = 0
        error = ""
        for index, group in enumerate(shape.groups):
            ran = failing_group is None or index <= failing_group
            failing_member = rng.randrange(len(group)) if index == failing_group else None
            longest = 0.0
            for member, (identifier, name) in enumerate(group):
                stage_id, step_id = self.stage_id, self.step_id
                self.stage_id += 1
                self.step_id += 1
                if carried is not None and index < resume_at:
                    old = carried[identifier]  # its status, times and error, and where from
                    self.stages.append(
                        (stage_id, execution_id, identifier, name, index, position, *old[6:10])
                        + (old[0],)
                    )
                    self.steps.append(
                        (step_id, stage_id, execution_id, "run", "Run", "ShellScript", 0)
                        + (old[6], None, old[7], old[8], 0, "", 1, "bench-worker:1", 4096)
                    )
                    position += 1
                    continue
                if not ran:
                    self.stages.append(
                        (
                            stage_id,
                            execution_id,
                            identifier,
                            name,
                            index,
                            position,
                            Status.NOT_STARTED,
                            None,
                            None,
                            "",
                            None,
                        )
                    )
                    self.steps.append(
                        (
                            step_id,
                            stage_id,
                            execution_id,
                            "run",
                            "Run",
                            "ShellScript",
                            0,
                            Status.NOT_STARTED,
                            None,
                            None,
                            None,
                            None,
                            "",
                            0,
                            "",
                            0,
                        )
                    )
                    position += 1
                    continue
                took = rng.uniform(2.0, 40.0)
                longest = max(longest, took)
                begin, end = clock, clock + timedelta(seconds=took)
                outcome = status if member == failing_member else Status.SUCCESS
                step_error = ERRORS.get(outcome, "")
                stage_error = f"step 'run' {outcome.lower()}: {step_error}" if step_error else ""
                if stage_error:
                    error = f"stage '{identifier}' {outcome.lower()}: {stage_error}"
                queued = begin - timedelta(milliseconds=rng.uniform(5, 80))
                self.stages.append(
                    (
                        stage_id,
                        execution_id,
                        identifier,
                        name,
                        index,
                        position,
                        outcome,
                        when(begin),
                        when(end),
                        stage_error,
                        None,
                    )
                )
                self.steps.append(
                    (
                        step_id,
                        stage_id,
                        execution_id,
                        "run",
                        "Run",
                        "ShellScript",
                        0,
                        outcome,
                        when(queued),
                        when(begin),
                        when(end),
                        1 if outcome == Status.FAILED else 0 if outcome == Status.SUCCESS else None,
                        step_error,
                        1,
                        "bench-worker:1",
                        4096,
                    )
                )
                if logs and outcome != Status.SUCCESS:
                    for seq in range(10):
                        self.chunks.append(
                            (
                                self.chunk_id,
                                step_id,
                                seq,
                                f"[{seq}] compiling module {seq} of 10 …\n" * 8,
                                when(begin),
                            )
                        )
                        self.chunk_id += 1
                position += 1
            clock += timedelta(seconds=longest)
        finished = clock
        self.executions.append(
            (
                execution_id,
                shape.pipeline.pk,
                shape.pipeline.current_version_id,
                sequence,
                status,
                rng.choice(self.user_ids),
                when(created),
                when(started),
                when(finished),
                shape.inputs,
                error,
                *(retry or (None, None, 1, "")),
            )
        )
        return execution_id

    def last_stages(self, shape: Shape) -> dict[str, tuple]:
        """The stage rows of the execution just added (still in the buffer), by identifier."""
        count = sum(len(group) for group in shape.groups)
        return {row[2]: row for row in self.stages[-count:]}

    def add_retry(self, shape: Shape, sequence: int, original: int, created: datetime) -> int:
        """A retry of ``original`` (the execution just added, FAILED) from its failed group,
        started ``created``: it succeeds 70 % of the time, else fails in that group again."""
        rows = self.last_stages(shape)
        resume_at = min(row[4] for row in rows.values() if row[6] == Status.FAILED)
        resumed_from = next(row[2] for row in rows.values() if row[4] == resume_at)
        status = Status.SUCCESS if self.rng.random() < 0.7 else Status.FAILED
        return self.add(
            shape,
            sequence,
            created,
            status,
            retry=(original, original, 2, resumed_from),
            carried=rows,
            resume_at=resume_at,
        )

    def flush(self) -> None:
        write = self.writer.write
        write(Execution, self.EXECUTION_COLUMNS, self.executions)
        write(StageRun, self.STAGE_COLUMNS, self.stages)
        write(StepRun, self.STEP_COLUMNS, self.steps)
        write(LogChunk, self.CHUNK_COLUMNS, self.chunks)
        self.executions, self.stages, self.steps, self.chunks = [], [], [], []


# --- the dataset ------------------------------------------------------------------------------


def _marker() -> AuditEvent | None:
    return AuditEvent.objects.filter(action=MARKER).order_by("-id").first()


def status(executions: int, pipelines: int = PIPELINES) -> str:
    """``ready`` (a complete dataset of this size), ``absent`` (none, nothing in the way) or
    ``other`` (another size, or an interrupted generation)."""
    marker = _marker()
    if marker is not None:
        detail = json.loads(marker.detail)
        same = (
            detail.get("executions") == executions
            and detail.get("pipelines", PIPELINES) == pipelines
        )
        return "ready" if same else "other"
    busy = Execution.objects.filter(
        pipeline__project__organization__slug=fixtures.ORG,
        pipeline__project__slug__in=[slug for slug, _ in PROJECTS],
    ).exists()
    return "other" if busy else "absent"


def _pipelines(projects: list[Project], count: int) -> tuple[Pipeline, Pipeline, list[Pipeline]]:
    alpha = projects[0]
    wide = fixtures.pipeline(alpha, WIDE, fixtures.serial_groups(WIDE_STAGES), script="echo ok")
    retry_yaml = fixtures.pipeline_yaml(
        RETRY,
        fixtures.serial_groups(RETRY_STAGES),
        script="echo ok",
        variables=(VERSION_INPUT,),
        stage_variables={f"s{i:03d}": (TARGET_INPUT,) for i in range(10, RETRY_STAGES + 1, 10)},
    )
    retry = save_pipeline(project=alpha, yaml_text=retry_yaml).pipeline
    regular = []
    for index in range(max(1, count - 2)):
        project = projects[(index + 2) % len(projects)]
        shape = SHAPES[index % len(SHAPES)]
        regular.append(fixtures.pipeline(project, f"pipe_{index + 1:03d}", shape, script="echo ok"))
    return wide, retry, regular


def ensure(
    executions: int, report, *, pipelines: int = PIPELINES, progress: Callable[[str], None] = print
) -> Dataset:
    """The dataset of ``executions`` executions: reused when complete, generated when absent."""
    state = status(executions, pipelines)
    if state == "other":
        raise DatasetError(
            f"the benchmark database holds a dataset of another size (or an interrupted one); "
            f"run again with --fresh to recreate it with {executions:,} executions"
        )
    projects = [fixtures.project(slug, name) for slug, name in PROJECTS]
    operator = fixtures.operator(projects)
    if state == "ready":
        marker = _marker()
        assert marker is not None  # status() found it
        detail = json.loads(marker.detail)
        wide = Pipeline.objects.get(project=projects[0], identifier=WIDE)
        retry = Pipeline.objects.get(project=projects[0], identifier=RETRY)
        data = Dataset(executions, projects, operator, wide, retry, 0.0, detail.get("rows", 0))
        report.add(
            "dashboard dataset",
            "executions (reused)",
            f"{executions:,} ({data.rows:,} rows, generated in {detail.get('seconds', 0):.0f} s)",
        )
        return data
    data = generate(
        executions, pipelines=pipelines, projects=projects, operator=operator, progress=progress
    )
    report.add(
        "dashboard dataset",
        "executions generated",
        f"{executions:,} ({data.rows:,} rows) in {data.generated_in:.0f} s",
    )
    return data


def generate(
    executions: int,
    *,
    pipelines: int = PIPELINES,
    projects: list[Project] | None = None,
    operator=None,
    seed: int = 20251126,
    progress: Callable[[str], None] = print,
) -> Dataset:
    """Write ``executions`` executions (and their stage and step runs) across 3 projects and
    ``pipelines`` pipelines; see the module docstring for what they look like."""
    started = time.monotonic()
    projects = projects or [fixtures.project(slug, name) for slug, name in PROJECTS]
    operator = operator or fixtures.operator(projects)
    wide, retry, regular = _pipelines(projects, pipelines)
    users = []
    for index in range(1, USERS + 1):
        users.append(fixtures.user(f"bench-user-{index:02d}"))
    user_ids = [u.pk for u in users]

    rng = random.Random(seed)
    special = {
        WIDE: min(200, max(3, executions // 5000)),
        RETRY: min(50, max(2, executions // 20000)),
    }
    shapes = {p.pk: shape_of(p) for p in regular}
    wide_shape = shape_of(wide, fails_at=WIDE_FAILS_AT - 1)
    retry_shape = shape_of(retry, fails_at=RETRY_FAILS_AT - 1)
    plan = [wide.pk] * special[WIDE] + [retry.pk] * special[RETRY]
    regular_ids = [p.pk for p in regular]
    plan += [rng.choice(regular_ids) for _ in range(max(0, executions - len(plan)))]
    rng.shuffle(plan)
    # The newest executions of the two timed pipelines come last (the pages open those).
    plan = (
        [pk for pk in plan if pk not in (wide.pk, retry.pk)]
        + [wide.pk] * special[WIDE]
        + [retry.pk] * special[RETRY]
    )
    plan = plan[-executions:] if len(plan) > executions else plan

    writer = Writer()
    maker = RowMaker(writer, rng, user_ids)
    sequences = {pk: Pipeline.objects.get(pk=pk).last_sequence for pk in set(plan)}
    now = datetime.now(UTC)
    begin = now - timedelta(days=DAYS)
    step = (now - timedelta(hours=1) - begin) / max(1, len(plan))
    with transaction.atomic():
        if writer.skip_foreign_key_checks():
            progress(
                "  (foreign-key checks skipped for the load: session_replication_role = replica)"
            )
        retried = 0  # retries made in place of the next planned executions
        for index, pipeline_id in enumerate(plan):
            if retried:
                retried -= 1
                continue
            created = begin + step * index
            sequences[pipeline_id] += 1
            if pipeline_id == wide.pk:
                maker.add(wide_shape, sequences[pipeline_id], created, Status.FAILED, logs=True)
            elif pipeline_id == retry.pk:
                maker.add(retry_shape, sequences[pipeline_id], created, Status.FAILED)
            else:
                outcome = rng.choice(STATUSES)
                shape = shapes[pipeline_id]
                original = maker.add(shape, sequences[pipeline_id], created, outcome)
                if outcome == Status.FAILED and rng.random() < RETRIED and index + 1 < len(plan):
                    sequences[pipeline_id] += 1
                    later = created + timedelta(minutes=rng.uniform(5, 240))
                    maker.add_retry(shape, sequences[pipeline_id], original, later)
                    retried = 1
            if len(maker.executions) >= BATCH:
                maker.flush()
                progress(
                    f"  {index + 1:,} of {len(plan):,} executions written ({time.monotonic() - started:.0f} s)"
                )
        maker.flush()
        for pipeline_id, sequence in sequences.items():
            Pipeline.objects.filter(pk=pipeline_id).update(last_sequence=sequence)
        reset_sequences(Execution, StageRun, StepRun, LogChunk)
        # The rows were written around the engine: the retry insights rollup is filled the way
        # backfill_insights fills it (the same SQL as an execution's end, tests/executions/
        # test_insights_rollup.py).
        progress(f"  retry insights rollup ({time.monotonic() - started:.0f} s)")
        rollup.rebuild(progress)
        seconds = time.monotonic() - started
        AuditEvent.objects.create(
            action=MARKER,
            detail=_json(
                {
                    "executions": executions,
                    "pipelines": pipelines,
                    "rows": writer.rows,
                    "seconds": round(seconds, 1),
                }
            ),
        )
    if connection.vendor == "postgresql":
        progress("  VACUUM ANALYZE")
        with connection.cursor() as cursor:
            for model in (
                Execution,
                StageRun,
                StepRun,
                LogChunk,
                Pipeline,
                InsightDay,
                InsightRecovery,
            ):
                cursor.execute(f"VACUUM ANALYZE {connection.ops.quote_name(model._meta.db_table)}")
    seconds = time.monotonic() - started
    return Dataset(executions, projects, operator, wide, retry, seconds, writer.rows)


def add_failed(pipeline: Pipeline, count: int, *, fails_at: int, seed: int = 7) -> list[int]:
    """``count`` fresh FAILED executions of ``pipeline`` (failing in group ``fails_at``, 0-based),
    created a minute ago: targets for retry submissions. Returns their ids."""
    writer = Writer()
    rng = random.Random(seed)
    users = list(
        get_user_model()
        .objects.filter(username__startswith="bench-user-")
        .values_list("pk", flat=True)
    )
    maker = RowMaker(writer, rng, users or [None])
    shape = shape_of(pipeline, fails_at=fails_at)
    ids = []
    with transaction.atomic():
        locked = Pipeline.objects.select_for_update().get(pk=pipeline.pk)
        sequence = locked.last_sequence
        created = datetime.now(UTC) - timedelta(minutes=1)
        for _ in range(count):
            sequence += 1
            ids.append(maker.add(shape, sequence, created, Status.FAILED))
        maker.flush()
        Pipeline.objects.filter(pk=pipeline.pk).update(last_sequence=sequence)
        reset_sequences(Execution, StageRun, StepRun, LogChunk)
    return ids


def delete_executions(ids: Iterable[int]) -> None:
    """Delete executions and everything under them with a few statements (retries first, since
    their carried-over rows point at the originals)."""
    ids = list(ids)
    if not ids:
        return
    retries = list(Execution.objects.filter(retry_of_id__in=ids).values_list("id", flat=True))
    with transaction.atomic():
        for group in (retries, ids):
            if not group:
                continue
            Event.objects.filter(execution_id__in=group)._raw_delete(connection.alias)
            LogChunk.objects.filter(step_run__execution_id__in=group)._raw_delete(connection.alias)
            StepRun.objects.filter(execution_id__in=group).update(carried_from=None)
            StepRun.objects.filter(execution_id__in=group)._raw_delete(connection.alias)
            StageRun.objects.filter(execution_id__in=group).update(carried_from=None)
            StageRun.objects.filter(execution_id__in=group)._raw_delete(connection.alias)
            Execution.objects.filter(id__in=group)._raw_delete(connection.alias)
