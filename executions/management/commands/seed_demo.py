"""Create the demo: users, roles, example pipelines, and real executions in every end state,
plus one that waits for an intervention.

The executions are produced by the engine (a worker runs their steps; approvals are answered
and an execution is aborted through the same services the pages use), never by writing rows.
By default the command starts a worker thread of its own for the duration, so it works before
any worker process is started; ``--no-worker`` relies on a running worker instead. While it
waits it also plays the scheduler's part (``engine.reap``, as beat does every few seconds), so
that a failure strategy's retry interval ends before any scheduler runs.
"""

from __future__ import annotations

import logging
import os
import time
from contextlib import nullcontext
from pathlib import Path

from celery import current_app
from celery.contrib.testing.worker import start_worker
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from executions import engine
from executions.models import Execution
from executions.services import abort_execution, answer_approval, run_pipeline
from executions.states import TERMINAL, Status
from pipelines.models import Organization, Pipeline, Project
from pipelines.roles import assign_role
from pipelines.secrets import secret_names, set_secret
from pipelines.services import save_pipeline
from pipelines.spec import parse_pipeline
from stageline.numbers import float_argument

EXAMPLES = Path(settings.BASE_DIR) / "examples" / "pipelines"
# The secrets the example pipelines refer to (<+secrets.NAME>): demo values, not real ones.
DEMO_SECRETS = {"api_token": "demo-token-123"}
USERS = [
    ("admin", "admin"),
    ("executor", "executor"),
    ("viewer", "viewer"),
    ("approver", "approver"),
]


class Command(BaseCommand):
    help = (
        "Create demo users, pipelines and real executions (SUCCESS, FAILED, ABORTED, EXPIRED, "
        "REJECTED, and one waiting for an intervention)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--no-worker", action="store_true", help="use the running workers")
        parser.add_argument("--timeout", type=float_argument, default=120.0)

    def handle(self, *args, no_worker=False, timeout=120.0, **options):
        password = os.environ.get("STAGELINE_DEMO_PASSWORD", "stageline")
        users = {}
        for username, _role in USERS:
            user, created = get_user_model().objects.get_or_create(username=username)
            if created:
                user.set_password(password)
                user.is_staff = username == "admin"
                user.save()
            users[username] = user
        org, _ = Organization.objects.get_or_create(slug="acme", defaults={"name": "Acme Corp"})
        project, _ = Project.objects.get_or_create(
            organization=org,
            slug="web",
            defaults={"name": "Web platform", "description": "The public web shop."},
        )
        for username, role in USERS:
            assign_role(project=project, role=role, user=users[username])
        for name, value in DEMO_SECRETS.items():
            if name not in secret_names(project.pk):  # never replaces a value set since
                set_secret(project=project, name=name, value=value, user=users["admin"])
                self.stdout.write(f"secret {name} stored (encrypted) in the project's store")
        pipelines = {}
        for path in sorted(EXAMPLES.glob("*.yaml")):
            text = path.read_text()
            # Seed only what is missing: a pipeline that exists (perhaps edited in the UI) is
            # never saved over, so running scripts/start again keeps every user's edit.
            existing = Pipeline.objects.filter(
                project=project, identifier=parse_pipeline(text).identifier
            ).first()
            if existing is not None:
                pipelines[existing.identifier] = existing
                self.stdout.write(
                    f"pipeline {existing.identifier} exists already: kept as it is "
                    f"({path.name} not saved over it)"
                )
                continue
            result = save_pipeline(project=project, yaml_text=text, user=users["admin"])
            pipelines[result.pipeline.identifier] = result.pipeline
            self.stdout.write(f"pipeline {result.pipeline.identifier} v{result.version.number}")

        if Execution.objects.filter(pipeline__project=project).exists():
            self.stdout.write("demo executions exist already; not running new ones")
        else:
            context = nullcontext() if no_worker else self.embedded_worker()
            with context:
                self.run_demo(pipelines, users, timeout)
        self.stdout.write(self.style.SUCCESS(f"Demo ready. Log in as (password '{password}'):"))
        for username, role in USERS:
            self.stdout.write(f"  {username:<9} {role}")

    def embedded_worker(self):
        logging.getLogger("celery").setLevel(logging.WARNING)  # one line per execution is enough
        return start_worker(
            current_app._get_current_object(),
            pool="threads",
            concurrency=4,
            perform_ping_check=False,
            loglevel="WARNING",
        )

    def run_demo(self, pipelines, users, timeout: float) -> None:
        web, data = pipelines["web_deploy"], pipelines["data_refresh"]
        release = pipelines["release"]
        executor, approver = users["executor"], users["approver"]
        started = {
            "success": run_pipeline(pipeline=web, user=executor, inputs={"version": "1.5.0"}),
            "parallel-failed": run_pipeline(
                pipeline=web, user=executor, inputs={"deploy_eu.fail": "yes"}
            ),
            "rejected": run_pipeline(pipeline=web, user=executor, inputs={"version": "1.6.0-rc1"}),
            "aborted": run_pipeline(pipeline=web, user=executor, inputs={}),
            "expired": run_pipeline(
                pipeline=data, user=executor, inputs={"transform.seconds": "30"}
            ),
            "failed": run_pipeline(
                pipeline=data, user=executor, inputs={"load.target_table": "staging.orders"}
            ),
            "data-success": run_pipeline(pipeline=data, user=executor, inputs={}),
            # The lint finding is ignored, the integration tests are retried until staging
            # answers, and the canary's error rate fails it: its rule waits for a person.
            "intervention": run_pipeline(
                pipeline=release, user=executor, inputs={"production.canary_error_rate": "4.2"}
            ),
        }
        self.stdout.write(f"running {len(started)} demo executions on the worker ...")
        answers = {"success": "approve", "rejected": "reject", "aborted": "abort"}
        deadline = time.monotonic() + timeout
        reaped = 0.0
        pending = dict(started)
        while pending:
            if time.monotonic() > deadline:
                raise CommandError(
                    f"demo executions did not finish in {timeout:.0f}s: {', '.join(pending)}"
                )
            for name, execution in list(pending.items()):
                execution.refresh_from_db()
                if execution.status == Status.WAITING and name in answers:
                    action = answers.pop(name)
                    if action == "abort":
                        abort_execution(execution=execution, user=executor)
                    else:
                        answer_approval(
                            execution=execution,
                            stage="approve_prod",
                            user=approver,
                            approve=action == "approve",
                            comment="Looks good"
                            if action == "approve"
                            else "Release candidate, not for production",
                        )
                elif execution.status in TERMINAL or (
                    execution.status == Status.INTERVENTION_WAITING and name == "intervention"
                ):
                    del pending[name]
                    done = len(started) - len(pending)
                    self.stdout.write(
                        f"[{done}/{len(started)}] execution {execution.pipeline.identifier} "
                        f"#{execution.sequence}: {execution.status}"
                    )
            if time.monotonic() - reaped >= 1.0:  # the scheduler's part: due retry waits start
                engine.reap()
                reaped = time.monotonic()
            time.sleep(0.2)
        waiting = started["intervention"]
        if waiting.status == Status.INTERVENTION_WAITING:
            self.stdout.write(
                f"execution {waiting.pipeline.identifier} #{waiting.sequence} waits for an "
                f"intervention: answer it on its page or with 'manage.py intervene {waiting.pk} "
                "canary --action retry|ignore|mark_as_success|mark_as_failure|abort --as executor'"
            )
