"""Abort a running execution: running steps are killed, waiting approvals cancelled."""

from django.core.management.base import BaseCommand

from executions.loaders import load_execution
from executions.services import abort_execution
from pipelines.cli import user_named
from stageline.errors import refusals_exit_2
from stageline.numbers import id_argument


class Command(BaseCommand):
    help = "Abort a running execution as a user with Execute rights."

    def add_arguments(self, parser):
        parser.add_argument("execution_id", type=id_argument)
        parser.add_argument("--as", dest="as_user", required=True)

    @refusals_exit_2
    def handle(self, *args, execution_id, as_user, **options):
        user = user_named(as_user)
        execution = load_execution(user, execution_id)
        abort_execution(execution=execution, user=user)
        self.stdout.write(f"aborted #{execution.sequence}")
