"""Retry a failed execution from a stage, as a user (SPEC §4). ``--dry-run`` prints the plan.

``--bulk ORG/PROJECT [--filter KEY=VALUE]…`` retries every retryable execution of the project
that matches the filters (those of the executions list: pipeline, status, who, since, until;
newest 50), each from its failed stage (``executions.bulk``), and prints one line per execution.
"""

from django.core.management.base import BaseCommand

from executions import bulk
from executions.cli import follow
from executions.forms import parse_filters
from executions.inputs import InputErrors, parse_assignments
from executions.loaders import load_execution
from executions.retry import ALL, FAILED_ONLY, create_retry, plan_retry
from pipelines import permissions
from pipelines.cli import user_named
from pipelines.loaders import load_project
from stageline.errors import Conflict, Invalid, refusals_exit_2
from stageline.numbers import id_argument
from stageline.timefmt import format_duration


class Command(BaseCommand):
    help = (
        "Retry an execution from STAGE (carried-over stages are not run again). With --bulk "
        "ORG/PROJECT [--filter KEY=VALUE]...: retry every failed, aborted, expired or rejected "
        "execution matching the filters, each from its failed stage; prints each one's plan "
        "(--dry-run: only that) and result; exit status 2 if any was not retried."
    )

    def add_arguments(self, parser):
        parser.add_argument("execution_id", type=id_argument, nargs="?")
        parser.add_argument(
            "--bulk",
            dest="bulk_project",
            metavar="ORG/PROJECT",
            default="",
            help="retry many, each from its failed stage (see --filter); exit 2 if any was refused",
        )
        parser.add_argument(
            "--filter",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="with --bulk: pipeline, status, who, since, until (as on the executions list)",
        )
        parser.add_argument(
            "--from", dest="from_stage", default="", help="stage (or parallel group) to retry from"
        )
        mode = parser.add_mutually_exclusive_group()
        mode.add_argument("--failed-only", dest="mode", action="store_const", const=FAILED_ONLY)
        mode.add_argument("--all", dest="mode", action="store_const", const=ALL)
        parser.add_argument("--input", action="append", default=[], metavar="STAGE.NAME=VALUE")
        parser.add_argument("--reason", default="")
        parser.add_argument("--as", dest="as_user", required=True)
        parser.add_argument("--wait", action="store_true")
        parser.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")

    @refusals_exit_2
    def handle(
        self,
        *args,
        execution_id,
        from_stage,
        mode,
        input,
        reason,
        as_user,
        wait,
        dry_run,
        bulk_project,
        filter,
        **options,
    ):
        user = user_named(as_user)
        if bulk_project:
            if execution_id is not None or from_stage or input or mode or wait:
                raise Invalid(
                    "--bulk retries each execution from its failed stage: give no execution id, "
                    "--from, --input, --failed-only/--all or --wait with it"
                )
            return self.retry_many(user, bulk_project, filter, reason=reason, dry_run=dry_run)
        if filter:
            raise Invalid("--filter goes with --bulk ORG/PROJECT")
        if execution_id is None:
            raise Invalid("say which execution to retry (its id), or --bulk ORG/PROJECT")
        execution = load_execution(user, execution_id)
        try:
            inputs = parse_assignments(input)
            if dry_run:
                plan = plan_retry(execution, user, from_stage=from_stage or None, mode=mode)
                self.print_plan(plan)
                if not plan.allowed:  # the plan is shown, and the refusal exits 2 like a submit
                    raise Invalid(plan.reason)
                return
            if not from_stage:
                plan = plan_retry(execution, user)
                if not plan.allowed:
                    raise Invalid(plan.reason)
                offered = ", ".join(o.key for o in plan.options)
                raise Invalid(f"say which stage to retry from with --from (one of: {offered})")
            retry = create_retry(
                execution=execution,
                user=user,
                from_stage=from_stage,
                mode=mode,
                inputs=inputs,
                reason=reason,
            )
        except InputErrors as exc:
            raise Invalid(str(exc)) from None
        self.stdout.write(str(retry.pk))
        if wait:
            self.stdout.write(
                f"{retry.pipeline.identifier} #{retry.sequence} (retry of #{execution.sequence}) started"
            )
            status = follow(retry, self.stdout.write)
            self.stdout.write(f"{retry.pipeline.identifier} #{retry.sequence} ended {status}")
            if status != "SUCCESS":
                raise Conflict(f"execution ended {status}")

    def retry_many(self, user, path: str, pairs: list[str], *, reason: str, dry_run: bool) -> None:
        org, _, slug = path.partition("/")
        if not org or not slug or "/" in slug:
            raise Invalid(f"--bulk takes ORG/PROJECT, not '{path[:80]}'")
        project = load_project(user, org, slug)
        try:
            data = parse_assignments(pairs)
        except InputErrors as exc:
            raise Invalid(str(exc)) from None
        unknown = sorted(set(data) - {"pipeline", "status", "who", "since", "until"})
        if unknown:
            raise Invalid(
                f"unknown filter {', '.join(unknown)}: use pipeline, status, who, since or until"
            )
        form = parse_filters(
            data, pipelines=permissions.visible_pipelines(user).filter(project=project)
        )
        selection = bulk.bulk_selection(user, project, filters=form.filters())
        if dry_run:
            items = bulk.plan_bulk_retry(user, selection.executions)
        else:
            items = bulk.create_bulk_retry(user, selection.executions, reason=reason)
        for item in items:
            execution = item.execution
            name = (
                f"{execution.pipeline.identifier} #{execution.sequence} (execution {execution.pk})"
            )
            plan = item.plan
            start = f"from {plan.selected.key}" if plan and plan.selected else ""
            if item.outcome == bulk.PLANNED and plan is not None:
                mode = f" ({plan.mode.replace('_', ' ')})" if plan.mode else ""
                carried = ", ".join(
                    f"{c.identifier} (from #{c.from_sequence}"
                    + (f", {c.note}" if c.note else "")
                    + ")"
                    for c in plan.carried
                )
                again = ", ".join(stage.identifier for stage in plan.run_again)
                self.stdout.write(
                    f"{name}: would retry {start}{mode}; carried over: {carried or 'nothing'}; "
                    f"runs again: {again}; time saved {format_duration(plan.time_saved_seconds)}"
                )
            elif item.outcome == bulk.CREATED and item.retry is not None:
                self.stdout.write(
                    f"{name}: retried as #{item.retry.sequence} (execution {item.retry.pk}) {start}"
                )
            else:
                latest = plan.latest if plan is not None else None
                where = (
                    f" Latest attempt: #{latest.sequence} (execution {latest.pk})."
                    if latest
                    else ""
                )
                self.stdout.write(f"{name}: not retried: {item.reason}{where}")
        if not items:
            self.stdout.write("No failed, aborted, expired or rejected execution matches.")
        if selection.capped:
            self.stdout.write(f"Only the newest {bulk.BULK_LIMIT} matching executions were taken.")
        refused = [i for i in items if i.outcome in (bulk.CANNOT, bulk.ALREADY)]
        if refused:
            raise Conflict(f"{len(refused)} of {len(items)} executions were not retried")

    def print_plan(self, plan) -> None:
        write = self.stdout.write
        execution = plan.execution
        write(
            f"Retry of {execution.pipeline.identifier} #{execution.sequence} ({execution.status})"
        )
        if not plan.allowed:
            write(f"Not possible: {plan.reason}")
            if plan.latest is not None:
                write(f"Latest attempt: #{plan.latest.sequence} (execution {plan.latest.pk})")
        write("Stages you can retry from:")
        for option in plan.options:
            marker = "*" if plan.selected and option.key == plan.selected.key else " "
            members = (
                f" [{', '.join(f'{k}: {v}' for k, v in option.member_statuses.items())}]"
                if option.parallel
                else ""
            )
            note = f" ({option.note})" if option.note else ""
            write(f" {marker} {option.key}: {option.status}{note}{members}")
        if plan.selected is None:
            return
        if plan.mode:
            write(f"Parallel group mode: {plan.mode}")
        write("Carried over (not run again):")
        for stage in plan.carried or []:
            note = f" — carried over ({stage.note})" if stage.note else ""
            write(
                f"   {stage.identifier}: {stage.status} from #{stage.from_sequence} "
                f"({format_duration(stage.duration_seconds)}){note}"
            )
        if not plan.carried:
            write("   (none)")
        write("Runs again" + (" (with fresh retry budgets):" if plan.strategies else ":"))
        for stage in plan.run_again:
            was = f" (was {stage.previous_status}, {stage.note})" if stage.note else ""
            write(f"   {stage.identifier}: {', '.join(stage.steps)}{was}")
        write("Inputs:")
        for field in plan.inputs:
            value = (
                ("(secret, set)" if field.has_value else "(secret, not set)")
                if field.is_secret
                else repr(field.value)
            )
            state = "editable" if field.editable else f"read-only: {field.reason}"
            write(f"   {field.key} = {value} [{state}]")
        write(f"Time saved: {format_duration(plan.time_saved_seconds)}")
        if plan.pipeline_changed:
            write(
                "The pipeline changed since this execution; the retry runs the version it ran with:"
            )
            write(plan.diff.rstrip())
