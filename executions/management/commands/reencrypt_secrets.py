"""Re-encrypt every stored secret with the newest key of STAGELINE_SECRET_KEYS (key rotation).

Rotation: put a new key first in STAGELINE_SECRET_KEYS (keep the old ones after it), restart,
run this command, then drop the old keys. Values already under the newest key are left alone,
so the command can be run again at any time (after an interruption, too).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from executions.models import Execution
from pipelines.models import ProjectSecret
from stageline import crypto
from stageline.crypto import SealedValues

BATCH = 500


def _execution_batches() -> Iterator[list[Execution]]:
    last = 0
    while True:
        batch = list(
            Execution.objects.exclude(secret_inputs={})
            .filter(pk__gt=last)
            .order_by("pk")
            .only("id", "secret_inputs")[:BATCH]
        )
        if not batch:
            return
        yield batch
        last = batch[-1].pk


def _reencrypt_execution(execution: Execution) -> bool:
    tokens = execution.secret_inputs.tokens
    if all(crypto.is_current(token) for token in tokens.values()):
        return False
    fresh = {name: crypto.reencrypt(token) for name, token in tokens.items()}
    Execution.objects.filter(pk=execution.pk).update(secret_inputs=SealedValues(fresh))
    return True


def _project_secret_batches() -> Iterator[list[ProjectSecret]]:
    last = 0
    while True:
        batch = list(ProjectSecret.objects.filter(pk__gt=last).order_by("pk")[:BATCH])
        if not batch:
            return
        yield batch
        last = batch[-1].pk


def _reencrypt_project_secret(secret: ProjectSecret) -> bool:
    if crypto.is_current(secret.value):
        return False
    ProjectSecret.objects.filter(pk=secret.pk).update(value=crypto.reencrypt(secret.value))
    return True


STORES: list[tuple[str, Callable[[], int], Callable[[], Iterator[list]], Callable[..., bool]]] = [
    (
        "secret inputs of executions",
        lambda: Execution.objects.exclude(secret_inputs={}).count(),
        _execution_batches,
        _reencrypt_execution,
    ),
    (
        "project secrets",
        lambda: ProjectSecret.objects.count(),
        _project_secret_batches,
        _reencrypt_project_secret,
    ),
]


class Command(BaseCommand):
    help = (
        "Re-encrypt every stored secret with the newest key (the first of STAGELINE_SECRET_KEYS)."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--new-key",
            action="store_true",
            help="Print a new random key for STAGELINE_SECRET_KEYS and change nothing.",
        )

    def handle(self, *args, new_key: bool = False, **options):
        if new_key:
            self.stdout.write(crypto.generate_key())
            return
        crypto.forget_keys()
        try:
            for label, count, batches, reencrypt in STORES:
                total = count()
                done = changed = 0
                for batch in batches():
                    with transaction.atomic():
                        changed += sum(1 for row in batch if reencrypt(row))
                    done += len(batch)
                    self.stdout.write(f"{label}: {done}/{total} read, {changed} re-encrypted")
                self.stdout.write(
                    f"{label}: {changed} re-encrypted, {done - changed} already under the newest key"
                )
        except crypto.SecretKeyError as exc:
            raise CommandError(str(exc), returncode=2) from None
