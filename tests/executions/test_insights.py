"""The retry insights page (issue 17 point 4): each figure against executions whose failures,
retries and times are known; the period filter; a bad period.

Executions are run with the real engine and runners (``drive``), retried with ``create_retry``;
their times are then set to known values (the rows, not the engine, decide what is read)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from django.urls import reverse
from django.utils import timezone

from executions import insights, rollup
from executions.models import Execution, StageRun, Status
from executions.retry import create_retry, wall_clock_seconds
from tests.helpers.factories import grant, make_pipeline, make_user, serial_pipeline, shell_stage
from tests.helpers.pages import as_user, run
from tests.helpers.runs import drive

pytestmark = pytest.mark.database

T0 = timezone.now().replace(microsecond=0) - timedelta(days=2)


def flow_yaml(flag: Path) -> str:
    """build → check → deploy; check passes once ``flag`` exists (a flaky test, by hand)."""
    return serial_pipeline(
        "flow",
        [
            shell_stage("build", "echo build"),
            shell_stage("check", f"test -f {flag}"),
            shell_stage("deploy", "echo deploy"),
        ],
    )


def set_times(execution: Execution, stage: str, start: float, end: float) -> None:
    """The stage run's span, in seconds after T0."""
    StageRun.objects.filter(execution=execution, identifier=stage).update(
        started_at=T0 + timedelta(seconds=start), finished_at=T0 + timedelta(seconds=end)
    )


def ended_at(execution: Execution, seconds: float) -> None:
    Execution.objects.filter(pk=execution.pk).update(finished_at=T0 + timedelta(seconds=seconds))


def retry(execution: Execution, user, stage: str, **inputs) -> Execution:
    return drive(create_retry(execution=execution, user=user, from_stage=stage, inputs=inputs))


@pytest.fixture
def flow(personas, shared_dir):
    """Two failures of ``check``: the first passes on its retry (unchanged inputs); the second
    fails again on its first retry and passes on the second. One more run passes at once.

    build spans 40 s (first) and 30 s (second) before each retry carries it over; the chains
    recover 600 s and 1,800 s after their original ended."""
    flag = shared_dir / "pass"
    pipeline = make_pipeline(personas.project, flow_yaml(flag))
    user = personas.executor

    first = run(pipeline, user)
    assert first.status == Status.FAILED
    set_times(first, "build", 0, 40)
    ended_at(first, 50)
    flag.touch()
    first_retry = retry(first, user, "check")
    assert first_retry.status == Status.SUCCESS
    ended_at(first_retry, 650)

    flag.unlink()
    second = run(pipeline, user)
    set_times(second, "build", 1000, 1030)
    ended_at(second, 1040)
    second_retry = retry(second, user, "check")
    assert second_retry.status == Status.FAILED
    flag.touch()
    third_retry = retry(second_retry, user, "check")
    assert third_retry.status == Status.SUCCESS
    ended_at(third_retry, 2840)

    passed = run(pipeline, user)
    assert passed.status == Status.SUCCESS
    # Times were set on ended executions by hand, which nothing in Stageline does: the rollup
    # (added to as each ended) is recomputed as backfill_insights does.
    rollup.rebuild()
    return pipeline


def figures(personas, pipeline, days: int = 30) -> insights.PipelineFigures:
    result = insights.project_insights(personas.viewer, personas.project, days)
    return next(p for p in result.pipelines if p.pipeline.pk == pipeline.pk)


def by_stage(entry: insights.PipelineFigures) -> dict[str, insights.StageFigures]:
    return {s.identifier: s for s in entry.stages}


def test_failure_rate_counts_the_runs_of_a_stage_that_ended_carried_ones_excluded(personas, flow):
    stages = by_stage(figures(personas, flow))
    assert [s.identifier for s in figures(personas, flow).stages] == ["build", "check", "deploy"]
    # check ran in 3 executions and 3 retries, failing in 2 originals and 1 retry.
    assert (stages["check"].runs, stages["check"].failures) == (6, 3)
    assert stages["check"].failure_rate == 0.5
    # build ran in the 3 originals only (the retries carried it over); deploy after each pass.
    assert (stages["build"].runs, stages["build"].failures) == (3, 0)
    assert (stages["deploy"].runs, stages["deploy"].failures) == (3, 0)
    assert stages["deploy"].failure_rate == 0.0


def test_retry_success_counts_the_retries_that_ran_the_failed_stage_again(personas, flow):
    check = by_stage(figures(personas, flow))["check"]
    assert (check.retries, check.retries_succeeded) == (3, 2)
    assert check.retry_success_percent == "67 %"
    assert by_stage(figures(personas, flow))["build"].retries == 0


def test_time_saved_is_the_carried_stages_wall_clock_time_each_retry_once(personas, flow):
    entry = figures(personas, flow)
    # 40 s (first retry) + 30 s (second) + 30 s (third: build carried on from the second).
    assert entry.retries == 3
    assert entry.saved_seconds == pytest.approx(100.0, abs=0.01)
    assert by_stage(entry)["check"].saved_seconds == pytest.approx(100.0, abs=0.01)


def test_median_time_to_recovery_runs_from_the_failure_to_the_chains_success(personas, flow):
    entry = figures(personas, flow)
    assert entry.recoveries == 2
    assert entry.recovery_median == pytest.approx(1200.0, abs=0.01)  # median of 600 s and 1,800 s
    check = by_stage(entry)["check"]
    assert (check.recoveries, check.recovery_median) == (2, pytest.approx(1200.0, abs=0.01))


def test_a_stage_that_passes_on_retry_with_unchanged_inputs_is_flagged_flaky(personas, flow):
    check = by_stage(figures(personas, flow))["check"]
    assert check.flaky_passes == 2
    assert check.flaky
    assert not by_stage(figures(personas, flow))["build"].flaky


def test_the_flaky_threshold_is_a_setting(personas, flow, settings):
    settings.STAGELINE_FLAKY_THRESHOLD_PERCENT = 70  # 2 passes of 3 failures: 67 %
    assert not by_stage(figures(personas, flow))["check"].flaky


def test_a_pass_after_changed_inputs_is_not_flaky(personas, shared_dir):
    flag = shared_dir / "pass"
    variables = "- {name: flavour, type: String, value: <+input>, default: plain}"
    yaml_text = serial_pipeline(
        "tuned",
        [
            shell_stage("build", "echo build"),
            shell_stage("check", f"test -f {flag}"),
        ],
    ).replace(
        "      name: Check\n",
        "      name: Check\n      variables:\n        " + variables + "\n",
    )
    pipeline = make_pipeline(personas.project, yaml_text)
    for _ in range(2):
        flag.unlink(missing_ok=True)
        failed = run(pipeline, personas.executor)
        flag.touch()
        assert retry(failed, personas.executor, "check", **{"check.flavour": "gold"}).status == (
            Status.SUCCESS
        )
    check = by_stage(figures(personas, pipeline))["check"]
    assert (check.retries, check.retries_succeeded, check.flaky_passes) == (2, 2, 0)
    assert not check.flaky


def test_time_saved_counts_parallel_carried_stages_once_and_no_gap(personas):
    """The SQL union against ``wall_clock_seconds``: build 0-10 s, then eu 20-30 s and us
    22-25 s in parallel: 20 s on the clock (not 23 s summed, not 30 s from first start to last end)."""
    yaml_text = """
pipeline:
  name: Fan
  identifier: fan
  stages:
    - stage: {identifier: build, name: Build, steps: [{step: {identifier: run, type: ShellScript, spec: {script: "true"}}}]}
    - parallel:
        - stage: {identifier: eu, name: EU, steps: [{step: {identifier: run, type: ShellScript, spec: {script: "true"}}}]}
        - stage: {identifier: us, name: US, steps: [{step: {identifier: run, type: ShellScript, spec: {script: "true"}}}]}
    - stage: {identifier: final, name: Final, steps: [{step: {identifier: run, type: ShellScript, spec: {script: "exit 3"}}}]}
"""
    pipeline = make_pipeline(personas.project, yaml_text)
    failed = run(pipeline, personas.executor)
    for stage, start, end in (("build", 0, 10), ("eu", 20, 30), ("us", 22, 25)):
        set_times(failed, stage, start, end)
    again = retry(failed, personas.executor, "final")
    carried = StageRun.objects.filter(execution=again, carried_from__isnull=False)
    assert wall_clock_seconds(carried) == 20.0
    entry = figures(personas, pipeline)
    assert entry.saved_seconds == pytest.approx(20.0, abs=0.01)
    assert by_stage(entry)["final"].saved_seconds == pytest.approx(20.0, abs=0.01)


def test_the_period_counts_executions_created_in_it(personas, flow):
    old = Execution.objects.filter(pipeline=flow, retry_of__isnull=True).order_by("id").last()
    assert old is not None
    Execution.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=40))
    # An ended execution's creation moved back by hand, which nothing in Stageline does: its
    # contribution, added to today's rollup when it ended, is recomputed as backfill_insights does.
    rollup.rebuild()
    assert by_stage(figures(personas, flow, 30))["build"].runs == 2
    assert by_stage(figures(personas, flow, 90))["build"].runs == 3
    assert by_stage(figures(personas, flow, 7))["build"].runs == 2


def test_the_page_shows_the_figures_and_the_chart(client, personas, flow):
    url = reverse("project_insights", args=["acme", personas.project.slug])
    response = as_user(client, personas.viewer).get(url, {"days": "90"})
    assert response.status_code == 200
    html = response.content.decode()
    assert 'aria-current="page">Last 90 days' in html
    row = html[html.index('data-stage="check"') :]
    row = row[: row.index("</tr>")]
    assert "50 %" in row and "2 of 3" in row and "Flaky" in row and "1 min 40 s" in row
    assert "<svg" in html and 'class="chart-bar chart-bar-flaky"' in html
    assert "style=" not in html  # CSP: classes only


def test_the_project_page_links_to_the_insights(client, personas):
    url = reverse("project", args=["acme", personas.project.slug])
    html = as_user(client, personas.viewer).get(url).content.decode()
    assert reverse("project_insights", args=["acme", personas.project.slug]) in html


@pytest.mark.parametrize("days", ["5", "abc", "-7", "30.0"])
def test_an_unknown_period_is_refused_with_the_choices(client, personas, days):
    url = reverse("project_insights", args=["acme", personas.project.slug])
    response = as_user(client, personas.viewer).get(url, {"days": days})
    assert response.status_code == 400
    assert "choose the last 7, 30 or 90 days" in response.content.decode()


def summary(entry: insights.PipelineFigures) -> tuple:
    """What the page shows of a pipeline: its totals and each stage's figures."""
    stages = [
        (s.identifier, s.runs, s.failures, s.retries, s.retries_succeeded, s.flaky_passes)
        for s in entry.stages
    ]
    return entry.retries, entry.saved_seconds, entry.recoveries, entry.recovery_median, stages


def test_a_pipeline_only_grant_shows_the_granted_pipeline_alone(client, personas, flow):
    """A Pipeline Executor on ``flow`` alone (the deployer of tests/test_access_matrix.py) sees
    flow's figures, as a project member sees them, and nothing of the project's other pipeline,
    whose failing stage has the same identifier (``check``) as flow's."""
    payroll = make_pipeline(
        personas.project,
        serial_pipeline(
            "payroll", [shell_stage("ledger", "echo sums"), shell_stage("check", "exit 1")]
        ),
    )
    failed = run(payroll, personas.executor)
    assert failed.status == Status.FAILED
    assert retry(failed, personas.executor, "check").status == Status.FAILED
    rollup.rebuild()
    deployer = make_user("deployer")
    grant(deployer, personas.project, "executor", pipeline=flow)

    seen = insights.project_insights(deployer, personas.project, 30)
    member = insights.project_insights(personas.viewer, personas.project, 30)
    assert [p.pipeline.identifier for p in member.pipelines] == ["flow", "payroll"]
    assert [p.pipeline.identifier for p in seen.pipelines] == ["flow"]
    assert summary(seen.pipelines[0]) == summary(member.pipelines[0])
    check = by_stage(seen.pipelines[0])["check"]
    assert (check.runs, check.failures, check.retries) == (6, 3, 3), "payroll's check excluded"

    url = reverse("project_insights", args=["acme", personas.project.slug])
    html = as_user(client, deployer).get(url).content.decode()
    assert 'data-stage="check"' in html and ">Flow</a>" in html
    assert "Payroll" not in html and "ledger" not in html and "payroll" not in html
    member_html = as_user(client, personas.viewer).get(url).content.decode()
    assert "Payroll" in member_html and 'data-stage="ledger"' in member_html
