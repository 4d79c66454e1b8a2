"""The broker stops and starts again (empty: a Redis without persistence) while executions run.

Running steps go on (their state is in the database); a stage queued while the broker was away
stays QUEUED in the database and the reaper sends it again
(``STAGELINE_REDISPATCH_AFTER_SECONDS``) once the broker is back: none is lost, none runs twice.
This runs on a Redis server of its own: the machine's Redis is shared.
"""

from __future__ import annotations

import re
import time

import pytest

from executions.models import Execution, Status, StepRun
from tests.faults.checks import assert_each_step_ran_at_most_once, assert_nothing_active
from tests.faults.servers import Gunicorn, logged_in
from tests.helpers.factories import make_pipeline, serial_pipeline, shell_stage
from tests.helpers.runs import log_of, wait_for, wait_for_status

pytestmark = pytest.mark.integration

REDISPATCH_AFTER = 3
STAGES = ("s1", "s2", "s3")


def start_run(browser, pipeline) -> tuple[Execution, float]:
    """Press Run on the pipeline's page (a real POST to gunicorn); the new execution and how
    long the request took."""
    answer = browser.post(f"/p/acme/web/pipelines/{pipeline.identifier}/run/", {})
    assert answer.status == 302, f"Run answered {answer.status}: {answer.text[:500]}"
    found = re.search(r"/executions/(\d+)/", answer.location)
    assert found, f"Run sent the browser to {answer.location!r}"
    return Execution.objects.get(pk=int(found.group(1))), answer.elapsed


def test_executions_finish_after_a_broker_restart_and_stages_queued_meanwhile_are_sent_again(
    fault_workers, redis_server, personas
):
    group = fault_workers(
        env={
            "CELERY_BROKER_URL": redis_server.url(),
            "STAGELINE_REDISPATCH_AFTER_SECONDS": str(REDISPATCH_AFTER),
            # Every next stage through the broker: the engine's fast path (a task runs the next
            # serial step itself) would carry the running executions through the outage, and
            # no stage would wait in the database for the broker to come back.
            "STAGELINE_TASK_BUDGET_SECONDS": "0",
        }
    )
    group.start("broker_w", "default", concurrency=2, wait=False)
    group.start_beat("broker_beat", wait=False)
    web = Gunicorn(group.env(), workers=1, threads=4, name="web-broker")
    web.start()
    try:
        group.wait_until_ready("broker_w", "broker_beat")
        pipeline = make_pipeline(
            personas.project,
            serial_pipeline(
                "steady", [shell_stage(s, f"sleep 1\necho stage {s} done") for s in STAGES]
            ),
        )
        browser = logged_in(web.base_url, personas.executor)
        first = [start_run(browser, pipeline)[0] for _ in range(2)]
        for execution in first:
            wait_for(
                lambda e=execution: StepRun.objects.filter(
                    execution=e, status=Status.RUNNING
                ).exists(),
                timeout=30,
                message="the first executions to be running",
            )

        redis_server.stop()
        stopped_at = time.monotonic()
        during, run_took = start_run(browser, pipeline)  # Run pressed while the broker is away
        time.sleep(
            max(0.0, 4 - (time.monotonic() - stopped_at))
        )  # steps end; their next stages cannot be sent
        executions = [*first, during]
        queued = StepRun.objects.filter(execution__in=executions, status=Status.QUEUED).count()
        down_for = time.monotonic() - stopped_at
        redis_server.start()
        back_at = time.monotonic()

        finished = [wait_for_status(e, Status.SUCCESS, timeout=90) for e in executions]
        all_done = time.monotonic() - back_at
        print(
            f"broker down {down_for:.1f}s; Run while down answered in {run_took:.1f}s; "
            f"{queued} steps were QUEUED in the database meanwhile; all {len(executions)} executions "
            f"succeeded {all_done:.1f}s after the broker came back"
        )
        assert queued >= 2, "no stage was queued while the broker was away: nothing was tested"
        for execution in finished:
            for stage in STAGES:
                assert log_of(execution, stage).count(f"stage {stage} done") == 1
            assert_each_step_ran_at_most_once(execution)
        assert_nothing_active()
        log = group.log_text("broker_w")
        resent = sum(int(n) for n in re.findall(r"'redispatched': (\d+)", log))
        assert resent >= queued, f"the reaper sent {resent} stages again, {queued} were waiting"
        assert run_took < 15, f"pressing Run while the broker was away took {run_took:.1f}s"
    finally:
        web.stop()
