"""Retry a failed execution from a stage, as a user (SPEC §4). ``--dry-run`` prints the plan."""

from django.core.management.base import BaseCommand

from executions.cli import follow
from executions.inputs import InputErrors, parse_assignments
from executions.loaders import load_execution
from executions.retry import ALL, FAILED_ONLY, create_retry, plan_retry
from pipelines.cli import user_named
from stageline.errors import Conflict, Invalid, refusals_exit_2
from stageline.numbers import id_argument
from stageline.timefmt import format_duration


class Command(BaseCommand):
    help = "Retry an execution from STAGE (carried-over stages are not run again)."

    def add_arguments(self, parser):
        parser.add_argument("execution_id", type=id_argument)
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
        **options,
    ):
        user = user_named(as_user)
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
            write(f" {marker} {option.key}: {option.status}{members}")
        if plan.selected is None:
            return
        if plan.mode:
            write(f"Parallel group mode: {plan.mode}")
        write("Carried over (not run again):")
        for stage in plan.carried or []:
            write(
                f"   {stage.identifier}: {stage.status} from #{stage.from_sequence} ({format_duration(stage.duration_seconds)})"
            )
        if not plan.carried:
            write("   (none)")
        write("Runs again:")
        for stage in plan.run_again:
            write(f"   {stage.identifier}: {', '.join(stage.steps)}")
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
