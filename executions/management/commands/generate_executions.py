"""``manage.py generate_executions``: fill the configured database with a large, realistic history.

A million executions (with their stage and step runs) across 3 projects and 100 pipelines of
the organization ``bench``, written with bulk inserts (COPY on PostgreSQL) in minutes; see
``benchmarks.dataset`` for what the data looks like. The pages can then be tried at scale by
hand or with an HTTP load tool, logged in as ``bench-operator`` (a Pipeline Executor on the
three projects; give it a password with ``changepassword``). ``manage.py bench`` uses the same
generator on its own database.
"""

from __future__ import annotations

import time

from django.core.management.base import BaseCommand, CommandError

from benchmarks import dataset, fixtures
from stageline.numbers import int_argument


class Command(BaseCommand):
    help = (
        "Write N executions (default 1,000,000) with their stage and step runs into the configured "
        "database, across 3 projects and 100 pipelines of the organization 'bench'."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--executions", type=int_argument, default=1_000_000, help="how many (1,000,000)"
        )
        parser.add_argument(
            "--pipelines", type=int_argument, default=dataset.PIPELINES, help="how many (100)"
        )
        parser.add_argument(
            "--seed",
            type=int_argument,
            default=20251126,
            help="random seed (the same data each time)",
        )

    def handle(self, *args, executions: int, pipelines: int, seed: int, **options):
        if executions < 1:
            raise CommandError(f"--executions must be at least 1, not {executions}")
        if pipelines < 3:
            raise CommandError(f"--pipelines must be at least 3, not {pipelines}")
        state = dataset.status(executions, pipelines)
        if state != "absent":
            raise CommandError(
                f"the organization '{fixtures.ORG}' already holds generated executions; "
                "use a fresh database (or drop that organization's data) to generate again"
            )
        started = time.monotonic()
        data = dataset.generate(
            executions,
            pipelines=pipelines,
            seed=seed,
            progress=lambda text: self.stdout.write(text),
        )
        self.stdout.write(
            f"wrote {data.executions:,} executions ({data.rows:,} rows) in {time.monotonic() - started:.0f} s; "
            f"projects {', '.join(p.path for p in data.projects)}; timed pages use the user {fixtures.OPERATOR}"
        )
