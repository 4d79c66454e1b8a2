"""PostgreSQL restarts while executions run: web requests answer 503 during the outage and
recover within seconds (persistent connections are health-checked: ``CONN_HEALTH_CHECKS``), workers ride the outage out (lease
renewals, log writes and results are retried), every execution ends, nothing is left active.

This runs on a PostgreSQL cluster and a Redis of its own (the machine's are shared): the
whole application, web (gunicorn), worker and beat, points at them.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time

import pytest

from stageline.workers import ROOT
from tests.faults.servers import Gunicorn, HttpSession
from tests.helpers.factories import serial_pipeline, shell_stage
from tests.helpers.workers import ProcessWorkers

pytestmark = pytest.mark.integration

ACTIVE = ("QUEUED", "RUNNING", "WAITING")
STAGES = ("s1", "s2", "s3")
PASSWORD = "correct horse battery staple"
SEED = """
import os, sys
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
import django
django.setup()
from django.core.management import call_command
call_command("migrate", verbosity=0, interactive=False)
from tests.helpers import factories
project = factories.make_project("acme", "web")
user = factories.make_user("operator", password=sys.argv[1])
factories.grant(user, project, "executor")
factories.make_pipeline(project, sys.argv[2])
"""


class Poller(threading.Thread):
    """GETs a page every 0.2 s and remembers (time, HTTP status or the error's name)."""

    def __init__(self, browser: HttpSession, path: str):
        super().__init__(daemon=True)
        self.browser, self.path = browser, path
        self.answers: list[tuple[float, object]] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            at = time.monotonic()
            try:
                status: object = self.browser.get(self.path).status
            except OSError as exc:
                status = type(exc).__name__
            self.answers.append((at, status))
            time.sleep(0.2)


def test_web_and_workers_recover_from_a_database_restart_and_every_execution_ends(
    fault_workers, postgres_cluster, redis_server
):
    cluster = postgres_cluster
    cluster.sql("CREATE DATABASE stageline", dbname="postgres")
    database_url = cluster.url("stageline")
    group: ProcessWorkers = fault_workers(
        database_url=database_url,
        lease_seconds=10,
        env={"CELERY_BROKER_URL": redis_server.url(), "STAGELINE_REDISPATCH_AFTER_SECONDS": "5"},
    )
    yaml_text = serial_pipeline(
        "sturdy", [shell_stage(s, f"sleep 2\necho stage {s} done") for s in STAGES]
    )
    seeded = subprocess.run(
        [sys.executable, "-c", SEED, PASSWORD, textwrap.dedent(yaml_text)],
        cwd=ROOT,
        env=group.env(),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert seeded.returncode == 0, seeded.stdout + seeded.stderr
    group.start("db_w", "default", concurrency=2, wait=False)
    group.start_beat("db_beat", wait=False)
    web = Gunicorn(group.env(), workers=2, threads=4, name="web-db")
    web.start()
    try:
        group.wait_until_ready("db_w", "db_beat")
        browser = HttpSession(web.base_url)
        browser.login("operator", PASSWORD)  # a real log-in: the password is checked by the web
        pages = []
        for _ in range(3):
            answer = browser.post("/p/acme/web/pipelines/sturdy/run/", {})
            assert answer.status == 302, f"Run answered {answer.status}"
            pages.append(answer.location)
        deadline = time.monotonic() + 30
        while (
            cluster.sql("SELECT count(*) FROM executions_steprun WHERE status = 'RUNNING'")[0][0]
            < 2
        ):
            assert time.monotonic() < deadline, "the executions did not start"
            time.sleep(0.2)

        poller = Poller(HttpSession(web.base_url, cookies=dict(browser.cookies)), pages[0])
        poller.start()
        time.sleep(0.5)
        stopped_at = time.monotonic()
        cluster.stop("fast")
        time.sleep(3)  # the outage
        cluster.start()
        back_at = time.monotonic()
        try:
            deadline = back_at + 30
            while not any(at > back_at and status == 200 for at, status in poller.answers):
                assert time.monotonic() < deadline, (
                    f"the web never recovered: {poller.answers[-10:]}"
                )
                time.sleep(0.1)
        finally:
            poller.done.set()
            poller.join()
        web_back = (
            min(at for at, status in poller.answers if at > back_at and status == 200) - back_at
        )
        during = [status for at, status in poller.answers if stopped_at <= at < back_at]
        after = [status for at, status in poller.answers if at >= back_at]
        failed_after = [status for status in after if status != 200]

        deadline = time.monotonic() + 120
        while cluster.sql(
            "SELECT count(*) FROM executions_execution WHERE status = ANY(%s)", (list(ACTIVE),)
        )[0][0]:
            assert time.monotonic() < deadline, (
                "executions still active 2 minutes after the restart: "
                f"{cluster.sql('SELECT id, status FROM executions_execution')}"
            )
            time.sleep(0.5)
        all_done = time.monotonic() - back_at
        statuses = cluster.sql("SELECT status, error FROM executions_execution ORDER BY id")
        print(
            f"database down {back_at - stopped_at:.1f}s; web answers during the outage: "
            f"{sorted(set(map(str, during)))}; first 200 {web_back:.1f}s after it was back "
            f"({len(failed_after)} failures after); executions {statuses}, all ended "
            f"{all_done:.1f}s after the restart"
        )
        assert web_back < 5, f"the web took {web_back:.1f}s to answer again"
        # the outage is said as such: 503 with the plain page, never a 500 (issue 15, finding 6)
        assert 503 in during and 500 not in during + after, sorted(set(map(str, during)))
        assert len(failed_after) <= 2, f"the web kept failing after the restart: {after[:20]}"
        for table in ("executions_execution", "executions_stagerun", "executions_steprun"):
            left = cluster.sql(
                f"SELECT id, status FROM {table} WHERE status = ANY(%s)", (list(ACTIVE),)
            )
            assert not left, f"{table}: left active {left}"
        assert [status for status, _ in statuses] == ["SUCCESS"] * 3, statuses
        twice = cluster.sql(
            "SELECT step_run_id, count(*) FROM executions_event WHERE to_status = 'RUNNING' "
            "AND step_run_id IS NOT NULL GROUP BY step_run_id HAVING count(*) > 1"
        )
        assert not twice, f"steps started more than once: {twice}"
        logs = cluster.sql(
            "SELECT string_agg(text, '' ORDER BY step_run_id, seq) FROM executions_logchunk"
        )[0][0]
        assert all(logs.count(f"stage {stage} done") == 3 for stage in STAGES), logs
    finally:
        web.stop()
        group.stop_all_but()
