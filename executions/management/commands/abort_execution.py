"""Abort a running execution: running steps are killed, waiting approvals cancelled."""

from django.core.management.base import BaseCommand

from executions.services import ServiceError, abort_execution
from pipelines import permissions
from pipelines.cli import Refused, user_named


class Command(BaseCommand):
    help = "Abort a running execution as a user with Execute rights."

    def add_arguments(self, parser):
        parser.add_argument("execution_id", type=int)
        parser.add_argument("--as", dest="as_user", required=True)

    def handle(self, *args, execution_id, as_user, **options):
        user = user_named(as_user)
        execution = permissions.visible_executions(user).filter(pk=execution_id).first()
        if execution is None:
            raise Refused(f"no execution {execution_id}, or {user} may not see it")
        try:
            abort_execution(execution=execution, user=user)
        except ServiceError as exc:
            raise Refused(exc.message) from None
        self.stdout.write(f"aborted #{execution.sequence}")
