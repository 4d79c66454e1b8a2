"""``manage.py backfill_insights``: recompute the retry insights rollup from the executions.

The rollup (``executions.rollup``) is kept as executions end and was filled by migration
0008 (which added its hours); this rebuilds it from scratch, in one transaction, a chunk of
executions at a time (for data loaded or edited around the engine, e.g. restored or generated
rows). On PostgreSQL executions that end meanwhile wait for it to finish.
"""

from __future__ import annotations

import time

from django.core.management.base import BaseCommand, CommandError

from executions import rollup
from stageline.numbers import int_argument


class Command(BaseCommand):
    help = "Recompute the retry insights rollup (per pipeline, stage and day) from the executions."

    def add_arguments(self, parser):
        parser.add_argument(
            "--chunk",
            type=int_argument,
            default=rollup.CHUNK,
            help=f"execution ids per statement ({rollup.CHUNK:,})",
        )

    def handle(self, *args, chunk: int, **options):
        if chunk < 1:
            raise CommandError(f"--chunk must be at least 1, not {chunk}")
        started = time.monotonic()
        count = rollup.rebuild(self.stdout.write, chunk=chunk)
        self.stdout.write(
            f"counted {count:,} ended executions in {time.monotonic() - started:.1f} s"
        )
