"""Rerun an execution: the pipeline's current version, new inputs, optionally some stages (SPEC §5)."""

from django.core.management.base import BaseCommand

from executions.cli import follow
from executions.inputs import InputErrors, parse_assignments
from executions.loaders import load_execution
from executions.retry import create_rerun
from executions.selection import parse_stage_list
from pipelines.cli import user_named
from stageline.errors import Conflict, Invalid, refusals_exit_2
from stageline.numbers import id_argument


class Command(BaseCommand):
    help = "Rerun an execution with the pipeline's current version; prints the new execution id."

    def add_arguments(self, parser):
        parser.add_argument("execution_id", type=id_argument)
        parser.add_argument(
            "--stages",
            default=None,
            metavar="STAGE[,STAGE...]",
            help="the stages to run (the others are skipped); without it every stage runs",
        )
        parser.add_argument("--input", action="append", default=[], metavar="[STAGE.]NAME=VALUE")
        parser.add_argument("--as", dest="as_user", required=True)
        parser.add_argument("--wait", action="store_true")

    @refusals_exit_2
    def handle(self, *args, execution_id, stages, input, as_user, wait, **options):
        user = user_named(as_user)
        execution = load_execution(user, execution_id)
        try:
            typed = parse_assignments(input)
            current_keys = {v.key for v in execution.pipeline.current_version.spec.inputs}
            # Prefill from the old run where the input still exists; typed values win (and an
            # unknown typed name is refused by the service).
            submitted = {k: v for k, v in execution.inputs.items() if k in current_keys}
            submitted.update(typed)
            rerun = create_rerun(
                execution=execution,
                user=user,
                inputs=submitted,
                stages=parse_stage_list(stages),
            )
        except InputErrors as exc:
            raise Invalid(str(exc)) from None
        self.stdout.write(str(rerun.pk))
        if wait:
            status = follow(rerun, self.stdout.write)
            self.stdout.write(f"{rerun.pipeline.identifier} #{rerun.sequence} ended {status}")
            if status != "SUCCESS":
                raise Conflict(f"execution ended {status}")
