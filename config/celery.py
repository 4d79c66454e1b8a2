"""The Celery application. Tasks live in ``executions.tasks``; settings come from Django."""

import os
import sys

from celery import Celery, signals
from django.core.exceptions import ImproperlyConfigured
from django.db import close_old_connections

import config.broker  # noqa: F401  (registers the embedded localfs:// broker)
from config.runtime import freeze_startup_heap
from executions import launcher

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("stageline")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@signals.worker_init.connect
def _choose_step_isolation(**kwargs) -> None:
    """Choose how steps are isolated, once, before the pool starts, and say it in the start-up
    output; an explicit mode that cannot be honoured stops the worker here."""
    try:
        launcher.configure()
    except ImproperlyConfigured as exc:
        print(f"stageline worker: cannot start: {exc}", file=sys.__stderr__, flush=True)
        raise SystemExit(1) from exc  # Celery logs and ignores an Exception from a signal


@signals.worker_process_init.connect
def _freeze_startup_heap(**kwargs) -> None:
    """A pool process starts with Django and the apps loaded: keep full collections off them."""
    freeze_startup_heap()


@signals.worker_process_init.connect
def _start_the_sandbox(**kwargs) -> None:
    """A pool process starts its long-lived sandbox (executions/launcher.py) before its first
    step needs it."""
    launcher.current().prepare()


@signals.task_prerun.connect
@signals.task_postrun.connect
def _recycle_database_connections(**kwargs) -> None:
    """Between tasks, close connections the way Django does between requests (too old, or
    broken): with CELERY_DB_REUSE_MAX set, Celery's Django fix-up no longer closes every
    connection around every task, so a step claim does not open a new PostgreSQL connection."""
    close_old_connections()
