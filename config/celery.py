"""The Celery application. Tasks live in ``executions.tasks``; settings come from Django."""

import os

from celery import Celery

import config.broker  # noqa: F401  (registers the embedded localfs:// broker)

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("stageline")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
