"""Start an execution of ORG/PROJECT/PIPELINE as a user, optionally following it to the end."""

from django.core.management.base import BaseCommand

from executions.cli import follow
from executions.inputs import InputErrors, parse_assignments
from executions.selection import parse_stage_list
from executions.services import run_pipeline
from pipelines.cli import user_named
from pipelines.loaders import load_pipeline
from stageline.errors import Conflict, Invalid, refusals_exit_2


class Command(BaseCommand):
    help = (
        "Run a pipeline; prints the execution id. With --wait, exits non-zero unless it succeeded."
    )

    def add_arguments(self, parser):
        parser.add_argument("pipeline", metavar="ORG/PROJECT/PIPELINE")
        parser.add_argument("--input", action="append", default=[], metavar="[STAGE.]NAME=VALUE")
        parser.add_argument(
            "--stages",
            default=None,
            metavar="STAGE[,STAGE...]",
            help="the stages to run (the others are skipped); without it every stage runs",
        )
        parser.add_argument("--as", dest="as_user", required=True)
        parser.add_argument("--wait", action="store_true")

    @refusals_exit_2
    def handle(self, *args, pipeline, input, stages, as_user, wait, **options):
        user = user_named(as_user)
        parts = pipeline.split("/")
        if len(parts) != 3:
            raise Invalid(f"'{pipeline}' is not ORG/PROJECT/PIPELINE")
        found = load_pipeline(user, *parts)
        try:
            inputs = parse_assignments(input)
            execution = run_pipeline(
                pipeline=found,
                user=user,
                inputs=inputs,
                stages=parse_stage_list(stages),
            )
        except InputErrors as exc:
            raise Invalid(str(exc)) from None
        self.stdout.write(str(execution.pk))
        if wait:
            self.stdout.write(f"{found.identifier} #{execution.sequence} started")
            status = follow(execution, self.stdout.write)
            self.stdout.write(f"{found.identifier} #{execution.sequence} ended {status}")
            if status != "SUCCESS":
                raise Conflict(f"execution ended {status}")
