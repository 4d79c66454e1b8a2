"""Start an execution of ORG/PROJECT/PIPELINE as a user, optionally following it to the end."""

from django.core.management.base import BaseCommand

from executions.inputs import InputErrors, parse_assignments
from executions.services import ServiceError, run_pipeline
from pipelines import permissions
from pipelines.cli import Refused, follow, user_named


class Command(BaseCommand):
    help = (
        "Run a pipeline; prints the execution id. With --wait, exits non-zero unless it succeeded."
    )

    def add_arguments(self, parser):
        parser.add_argument("pipeline", metavar="ORG/PROJECT/PIPELINE")
        parser.add_argument("--input", action="append", default=[], metavar="[STAGE.]NAME=VALUE")
        parser.add_argument(
            "--stages", default="", help="comma-separated stages to run (others are skipped)"
        )
        parser.add_argument("--as", dest="as_user", required=True)
        parser.add_argument("--wait", action="store_true")

    def handle(self, *args, pipeline, input, stages, as_user, wait, **options):
        user = user_named(as_user)
        parts = pipeline.split("/")
        if len(parts) != 3:
            raise Refused(f"'{pipeline}' is not ORG/PROJECT/PIPELINE")
        found = (
            permissions.visible_pipelines(user)
            .filter(
                project__organization__slug=parts[0], project__slug=parts[1], identifier=parts[2]
            )
            .first()
        )
        if found is None:
            raise Refused(f"no pipeline {pipeline}, or {user} may not see it")
        try:
            inputs = parse_assignments(input)
            execution = run_pipeline(
                pipeline=found,
                user=user,
                inputs=inputs,
                stages=[s.strip() for s in stages.split(",") if s.strip()] or None,
            )
        except (ServiceError, InputErrors) as exc:
            raise Refused(getattr(exc, "message", str(exc))) from None
        self.stdout.write(str(execution.pk))
        if wait:
            self.stdout.write(f"{found.identifier} #{execution.sequence} started")
            status = follow(execution, self.stdout.write)
            self.stdout.write(f"{found.identifier} #{execution.sequence} ended {status}")
            if status != "SUCCESS":
                raise Refused(f"execution ended {status}")
