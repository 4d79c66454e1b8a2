"""Approve (or with --reject, reject) the approval waiting in a stage of an execution."""

from django.core.management.base import BaseCommand

from executions.services import ServiceError, answer_approval
from pipelines import permissions
from pipelines.cli import Refused, user_named


class Command(BaseCommand):
    help = "Answer a waiting approval as a user with Approve rights."

    def add_arguments(self, parser):
        parser.add_argument("execution_id", type=int)
        parser.add_argument("stage")
        parser.add_argument("--as", dest="as_user", required=True)
        parser.add_argument("--reject", action="store_true")
        parser.add_argument("--comment", default="")

    def handle(self, *args, execution_id, stage, as_user, reject, comment, **options):
        user = user_named(as_user)
        execution = permissions.visible_executions(user).filter(pk=execution_id).first()
        if execution is None:
            raise Refused(f"no execution {execution_id}, or {user} may not see it")
        try:
            answer_approval(
                execution=execution, stage=stage, user=user, approve=not reject, comment=comment
            )
        except ServiceError as exc:
            raise Refused(exc.message) from None
        self.stdout.write(
            f"{'rejected' if reject else 'approved'} stage {stage} of #{execution.sequence}"
        )
