"""``manage.py bench``: Stageline's performance figures as one table (see ``benchmarks``).

It runs against a database of its own beside the configured one (never the configured data),
starts and stops its own worker processes, and prints; it asserts nothing about timings.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from pathlib import Path

import celery
import django
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from benchmarks import dashboard, database, dataset, engine, report, throughput
from benchmarks.workers import Workers
from stageline.numbers import NumberError, float_argument, int_argument, parse_int

PARTS = ("engine", "throughput", "dashboard")


def _broker_name(url: str) -> str:
    scheme = url.split(":", 1)[0]
    if scheme in ("localfs", "filesystem"):
        return "embedded (files in $STAGELINE_VAR_DIR/broker)"
    host = url.split("@")[-1]
    return f"{scheme} ({host})"


def _terminate(signum, frame):
    raise SystemExit(128 + signum)


class Command(BaseCommand):
    help = (
        "Measure engine overhead (against a bare Celery chain), throughput and dashboard timings "
        "at a million executions; print one table. --quick is the small version CI runs."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--quick", action="store_true", help="small sizes: a smoke run in well under a minute"
        )
        parser.add_argument(
            "--only",
            default=",".join(PARTS),
            help=f"comma-separated parts to run: {', '.join(PARTS)}",
        )
        parser.add_argument(
            "--database",
            default="",
            help="name of the benchmark database (default: <configured>_bench)",
        )
        parser.add_argument(
            "--fresh", action="store_true", help="drop and recreate the benchmark database first"
        )
        parser.add_argument(
            "--serial", type=int_argument, help="stages of the serial pipeline (50)"
        )
        parser.add_argument(
            "--groups", type=int_argument, help="parallel groups of the parallel pipeline (10)"
        )
        parser.add_argument("--width", type=int_argument, help="stages per parallel group (8)")
        parser.add_argument(
            "--repeat", type=int_argument, help="runs of each engine pipeline and of the chain (3)"
        )
        parser.add_argument(
            "--executions",
            type=int_argument,
            help="executions started at once for throughput (20)",
        )
        parser.add_argument(
            "--stages", type=int_argument, help="stages of the throughput pipeline (10)"
        )
        parser.add_argument(
            "--rounds",
            type=int_argument,
            help="throughput bursts of Stageline and of bare chains, alternating (3)",
        )
        parser.add_argument(
            "--lengths",
            default="",
            help="comma-separated serial pipeline lengths for per-stage time against length "
            "(10,100,500; --quick: 5,20)",
        )
        parser.add_argument("--workers", type=int_argument, default=2, help="worker processes (2)")
        parser.add_argument(
            "--concurrency", type=int_argument, default=1, help="pool processes per worker (1)"
        )
        parser.add_argument(
            "--worker-app",
            default="config",
            help="the Celery app module the workers load (default: config); another module that imports "
            "config.celery and changes something measures the effect of that change",
        )
        parser.add_argument(
            "--dataset", type=int_argument, help="executions in the dashboard dataset (1,000,000)"
        )
        parser.add_argument(
            "--pipelines",
            type=int_argument,
            help="pipelines in the dashboard dataset (100, at least 3)",
        )
        parser.add_argument("--requests", type=int_argument, help="timed requests per page (200)")
        parser.add_argument(
            "--timeout", type=float_argument, default=900.0, help="seconds to wait for any one run"
        )
        parser.add_argument(
            "--markdown", default="", help="also write the table as Markdown to this file"
        )

    def handle(self, *args, **options):

        # A polite kill (SIGTERM) unwinds like Ctrl-C, so the workers are stopped on the way out.
        signal.signal(signal.SIGTERM, _terminate)

        quick = options["quick"]
        sizes = {
            "serial": 5 if quick else 50,
            "groups": 2 if quick else 10,
            "width": 3 if quick else 8,
            "repeat": 1 if quick else 3,
            "executions": 6 if quick else 20,
            "stages": 5 if quick else 10,
            "rounds": 1 if quick else 3,
            "dataset": 1000 if quick else 1_000_000,
            "pipelines": 12 if quick else 100,
            "requests": 3 if quick else 200,
        }
        for key in sizes:
            if options.get(key) is not None:
                if options[key] < 1:
                    raise CommandError(f"--{key} must be at least 1, not {options[key]}")
                sizes[key] = options[key]
        only = [part.strip() for part in options["only"].split(",") if part.strip()]
        unknown = [part for part in only if part not in PARTS]
        if unknown:
            raise CommandError(f"unknown part(s) {', '.join(unknown)}: use {', '.join(PARTS)}")
        text = options["lengths"] or ("5,20" if quick else "10,100,500")
        try:
            lengths = tuple(parse_int(n.strip(), "--lengths", minimum=1) for n in text.split(","))
        except NumberError as exc:
            raise CommandError(str(exc)) from None
        if sizes["pipelines"] < 3:
            raise CommandError(f"--pipelines must be at least 3, not {sizes['pipelines']}")
        if options["workers"] < 1 or options["concurrency"] < 1:
            raise CommandError("--workers and --concurrency must be at least 1")

        name = options["database"] or database.default_name()
        if quick and not options["database"]:
            name = (
                name.replace("bench.sqlite3", "bench-quick.sqlite3")
                if name.endswith(".sqlite3")
                else f"{name}_quick"
            )
        self.progress(f"using the benchmark database {name}")
        url = database.use_bench_database(name, fresh=options["fresh"])
        if "dashboard" in only:
            if dataset.status(sizes["dataset"], sizes["pipelines"]) == "other":
                self.progress(
                    "it holds a dashboard dataset of another size (or an interrupted one): recreating it"
                )
                url = database.use_bench_database(name, fresh=True)

        table = report.Report(title=f"Stageline benchmark{' (quick)' if quick else ''}")
        table.context = {
            "machine": report.machine_description(),
            "database": database.describe(),
            "broker": _broker_name(settings.CELERY_BROKER_URL),
            "software": f"Python {sys.version.split()[0]}, Django {django.__version__}, Celery {celery.__version__}",
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        }
        if "engine" in only or "throughput" in only:
            table.context["workers"] = (
                f"{options['workers']} x celery -A {options['worker_app']} worker -P prefork "
                f"-c {options['concurrency']}, no beat"
            )
        started = time.monotonic()
        try:
            if "engine" in only or "throughput" in only:
                # A queue of this run's own: other workers on the same broker (a deployment, another
                # benchmark) neither take its tasks nor lose theirs to it.
                queue = f"bench_{socket.gethostname()}_{os.getpid()}"[:64]
                self.progress(f"starting {options['workers']} worker(s) on queue {queue}")
                with Workers(
                    url,
                    count=options["workers"],
                    concurrency=options["concurrency"],
                    app=options["worker_app"],
                    queues=queue,
                ):
                    if "engine" in only:
                        self.progress(
                            f"engine: {sizes['serial']} serial stages, {sizes['groups']}x{sizes['width']} parallel, "
                            f"bare chain; {sizes['repeat']} run(s) each"
                        )
                        engine.measure(
                            table,
                            serial=sizes["serial"],
                            groups=sizes["groups"],
                            width=sizes["width"],
                            repeat=sizes["repeat"],
                            timeout=options["timeout"],
                            queue=queue,
                            lengths=lengths,
                        )
                    if "throughput" in only:
                        self.progress(
                            f"throughput: {sizes['executions']} executions of {sizes['stages']} stages at once"
                        )
                        throughput.measure(
                            table,
                            executions=sizes["executions"],
                            stages=sizes["stages"],
                            workers=options["workers"] * options["concurrency"],
                            timeout=options["timeout"],
                            queue=queue,
                            rounds=sizes["rounds"],
                        )
            if "dashboard" in only:
                self.progress(f"dashboard: a dataset of {sizes['dataset']:,} executions")
                data = dataset.ensure(
                    sizes["dataset"], table, pipelines=sizes["pipelines"], progress=self.progress
                )
                self.progress(f"dashboard: {sizes['requests']} requests per page")
                dashboard.measure(
                    table,
                    data,
                    requests=sizes["requests"],
                    warmup=1 if quick else dashboard.WARMUP,
                    progress=self.progress,
                )
        except BaseException:
            table.title += " (INCOMPLETE: a part failed, see the error below)"
            raise
        finally:
            table.context["took"] = f"{time.monotonic() - started:.0f} s"
            self.stdout.write("")
            self.stdout.write(table.as_text())
            if options["markdown"]:
                path = Path(options["markdown"])
                lines = [f"- {key}: {value}" for key, value in table.context.items()]
                path.write_text(
                    table.title + "\n\n" + "\n".join(lines) + "\n\n" + table.as_markdown() + "\n"
                )
                self.progress(f"wrote {path}")

    def progress(self, message: str) -> None:
        self.stdout.write(f"== {message}")
        self.stdout.flush()
