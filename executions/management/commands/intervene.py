"""Answer a step waiting for intervention (a failure strategy's manual_intervention)."""

from django.core.management.base import BaseCommand

from executions.loaders import load_execution
from executions.services import INTERVENTION_ANSWERS, answer_intervention
from pipelines.cli import user_named
from stageline.errors import refusals_exit_2
from stageline.numbers import id_argument


class Command(BaseCommand):
    help = "Answer a step waiting for intervention as a user with Execute rights."

    def add_arguments(self, parser):
        parser.add_argument("execution_id", type=id_argument)
        parser.add_argument("step", help="STEP, or STAGE.STEP when several stages have it")
        parser.add_argument("--action", required=True, choices=INTERVENTION_ANSWERS)
        parser.add_argument("--comment", default="")
        parser.add_argument("--as", dest="as_user", required=True)

    @refusals_exit_2
    def handle(self, *args, execution_id, step, action, comment, as_user, **options):
        user = user_named(as_user)
        execution = load_execution(user, execution_id)
        answer_intervention(
            execution=execution, step=step, user=user, action=action, comment=comment
        )
        self.stdout.write(f"{action}: step {step} of #{execution.sequence}")
