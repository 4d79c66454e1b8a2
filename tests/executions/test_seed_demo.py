"""seed_demo (run by scripts/start every time) seeds only what is missing: an example pipeline
that was edited in the UI is never saved over, and the command says what it kept. Its
executions are real: the release example's failure strategies really ignore, retry and wait
for a person."""

import io
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from executions.models import Event, Execution, LogChunk, PendingWait, StepRun
from executions.states import Status
from pipelines.models import Pipeline, PipelineVersion
from pipelines.services import save_pipeline


@pytest.mark.engine
def test_running_the_seed_again_keeps_a_pipeline_edited_in_the_ui(worker, django_user_model):
    call_command("seed_demo", "--no-worker", stdout=io.StringIO())
    pipeline = Pipeline.objects.get(identifier="data_refresh")
    admin = django_user_model.objects.get(username="admin")
    edited = pipeline.current_version.yaml.replace(
        "name: Data refresh", "name: Data refresh (ours)"
    )
    assert edited != pipeline.current_version.yaml
    mine = save_pipeline(project=pipeline.project, yaml_text=edited, user=admin).version
    versions = PipelineVersion.objects.count()
    executions = Execution.objects.count()

    out = io.StringIO()
    call_command("seed_demo", "--no-worker", stdout=out)

    pipeline.refresh_from_db()
    assert pipeline.current_version_id == mine.pk and pipeline.name == "Data refresh (ours)"
    assert PipelineVersion.objects.count() == versions, "the seed saved a new version"
    assert Execution.objects.count() == executions
    assert "pipeline data_refresh exists already: kept as it is" in out.getvalue()
    assert "pipeline web_deploy exists already" in out.getvalue()


@pytest.mark.engine
def test_the_demo_leaves_a_release_waiting_for_an_intervention_after_real_failures(worker):
    out = io.StringIO()
    call_command("seed_demo", "--no-worker", stdout=out)

    release = Execution.objects.get(pipeline__identifier="release")
    assert release.status == Status.INTERVENTION_WAITING
    assert f"execution release #{release.sequence}: INTERVENTION_WAITING" in out.getvalue()
    assert f"manage.py intervene {release.pk} canary --action" in out.getvalue()
    steps = {s.identifier: s for s in StepRun.objects.filter(execution=release)}
    # ignore: the advisory lint really failed, and the run went on past it.
    assert (steps["lint"].status, steps["lint"].exit_code) == (Status.IGNORED, 1)
    assert "line too long" in log_of_step(steps["lint"])
    # retry with intervals: staging did not answer the first attempt (exit 75); a later one passed.
    tests = steps["api_tests"]
    assert tests.status == Status.SUCCESS and tests.exit_code == 0
    assert tests.attempts in (2, 3, 4), "the warming staging should have refused attempt 1"
    # Each attempt kept its own log: the first was refused, the last one passed.
    first, last = log_of_step(tests, 1), log_of_step(tests, tests.attempts)
    assert "connection refused (still starting)" in first and "38 passed" not in first
    assert "38 passed" in last
    assert list(tests.earlier_attempts.values_list("number", "exit_code")) == [
        (number, 75) for number in range(1, tests.attempts)
    ]
    retried = PendingWait.objects.filter(step_run=tests, kind=PendingWait.Kind.RETRY)
    assert retried.count() == tests.attempts - 1
    assert set(retried.values_list("state", flat=True)) == {PendingWait.State.STARTED}
    # manual intervention: the canary really failed and waits, with its day-long timeout.
    canary = steps["canary"]
    assert (canary.status, canary.exit_code) == (Status.INTERVENTION_WAITING, 1)
    assert "canary error rate 4.2 % is over the limit" in log_of_step(canary)
    wait = PendingWait.objects.get(step_run=canary, state=PendingWait.State.PENDING)
    assert (wait.kind, wait.on_timeout) == (PendingWait.Kind.INTERVENTION, "abort")
    assert timedelta(hours=23) < wait.due_at - timezone.now() <= timedelta(days=1)
    assert steps["promote"].status == Status.NOT_STARTED
    actions = set(Event.objects.filter(execution=release).values_list("action", flat=True))
    assert {"strategy.ignored", "strategy.retry", "intervention.requested"} <= actions
    # The other demo states are still there.
    assert {
        Status.SUCCESS,
        Status.FAILED,
        Status.ABORTED,
        Status.EXPIRED,
        Status.REJECTED,
    } <= set(Execution.objects.values_list("status", flat=True))

    executions = Execution.objects.count()
    call_command("seed_demo", "--no-worker", stdout=io.StringIO())
    assert Execution.objects.count() == executions
    release.refresh_from_db()
    assert release.status == Status.INTERVENTION_WAITING, "a second seed answered or re-ran it"


def log_of_step(step: StepRun, attempt: int = 1) -> str:
    chunks = LogChunk.objects.filter(step_run=step, attempt=attempt).order_by("seq")
    return "".join(chunks.values_list("text", flat=True))
