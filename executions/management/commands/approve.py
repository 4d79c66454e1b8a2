"""Approve (or with --reject, reject) the approval waiting in a stage of an execution."""

from django.core.management.base import BaseCommand

from executions.loaders import load_execution
from executions.services import answer_approval
from pipelines.cli import user_named
from stageline.errors import refusals_exit_2
from stageline.numbers import id_argument


class Command(BaseCommand):
    help = "Answer a waiting approval as a user with Approve rights."

    def add_arguments(self, parser):
        parser.add_argument("execution_id", type=id_argument)
        parser.add_argument("stage")
        parser.add_argument("--as", dest="as_user", required=True)
        parser.add_argument("--reject", action="store_true")
        parser.add_argument("--comment", default="")

    @refusals_exit_2
    def handle(self, *args, execution_id, stage, as_user, reject, comment, **options):
        user = user_named(as_user)
        execution = load_execution(user, execution_id)
        answer_approval(
            execution=execution, stage=stage, user=user, approve=not reject, comment=comment
        )
        self.stdout.write(
            f"{'rejected' if reject else 'approved'} stage {stage} of #{execution.sequence}"
        )
