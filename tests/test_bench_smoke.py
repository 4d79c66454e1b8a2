"""The benchmark keeps working: ``manage.py bench --quick`` runs from one command, prints every
row of its table, and leaves no process behind. Timings are printed, never asserted.

The first test runs it on the embedded default (SQLite + the file broker, in a fresh
``STAGELINE_VAR_DIR``), as a fresh clone would; the second, marked ``integration``, on the
PostgreSQL and Redis of ``DATABASE_URL`` / ``CELERY_BROKER_URL`` (its own ``*_bench_quick``
database beside the configured one).
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model

ROOT = Path(__file__).resolve().parent.parent

# Every figure of the table, by its label: a benchmark that silently stopped measuring one of
# them fails here.
ROWS = [
    "stage transition, p50",
    "stage transition, p95",
    "stage transition, p99",
    "engine: stage done -> step queued",
    "SQL statements per stage (claim, run, result, advance)",
    "same, every step through the broker",
    "dispatch: queued -> step started",
    "before it: step done -> stage done",
    "whole run - steps' own time",
    "hop (task end -> next task start)",
    "whole run - tasks' own time",
    "Stageline / bare chain (whole run)",
    "group transition (last done -> first started)",
    "whole run - time with a step running",
    "executions not SUCCESS",
    "stage transitions/s",
    "bare Celery chains at once, stages/s",
    "Stageline / bare chains (stages/s)",
    "serial stages, whole run / stages",
    "per stage, 20 stages / 5 stages",
    "dispatch latency (queued -> started), p95",
    "executions that did not succeed",
    "steps lost (never ran)",
    "steps run twice",
    "dashboard dataset",  # "executions generated" or, on a later run, "(reused)"
    "list: first page",
    "list: deep page (keyset, 90% back)",
    "list: deep page / first page (p50)",
    "list: filtered (pipeline + FAILED)",
    "retry insights, last 7 days",
    "retry insights, last 30 days",
    "retry insights, last 90 days",
    "execution page, 50 stages",
    "retry dialog, 200 stages",
    "retry submit, 200 stages",
    "retries created by the submits",
]


def processes_with_var_dir(var_dir: Path) -> list[int]:
    """Pids of live processes whose environment names ``var_dir`` as STAGELINE_VAR_DIR."""
    needle = f"STAGELINE_VAR_DIR={var_dir}".encode()
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if needle in environ.read_bytes().split(b"\0"):
                found.append(int(environ.parent.name))
        except OSError:
            continue
    return found


def run_bench(var_dir: Path, timeout: float = 240, **env: str) -> subprocess.CompletedProcess:
    """``manage.py bench --quick`` in a process of its own; if it hangs, it is stopped (SIGTERM
    makes it stop its workers) and whatever it left running is killed before the test fails."""
    environment = {
        k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CELERY_BROKER_URL")
    }
    environment.update(STAGELINE_VAR_DIR=str(var_dir), PYTHONUNBUFFERED="1", **env)
    args = [sys.executable, "manage.py", "bench", "--quick"]
    proc = subprocess.Popen(
        args,
        cwd=ROOT,
        env=environment,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.terminate()
        try:
            stdout, stderr = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
        for pid in processes_with_var_dir(var_dir):
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        pytest.fail(
            f"the quick benchmark did not finish within {timeout:.0f}s:\n{(stdout + stderr)[-4000:]}"
        )
    return subprocess.CompletedProcess(args, proc.returncode, stdout, stderr)


def assert_complete_table(result: subprocess.CompletedProcess) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "Traceback" not in output, output[-4000:]
    table = result.stdout[result.stdout.index("Stageline benchmark (quick)") :]
    missing = [row for row in ROWS if row not in table]
    assert not missing, f"rows missing from the table: {missing}\n{table}"
    assert "targets: " in table.splitlines()[-1]


def test_quick_benchmark_prints_every_figure_on_the_embedded_default(tmp_path):
    result = run_bench(tmp_path)

    assert_complete_table(result)
    assert "SQLite" in result.stdout and "embedded" in result.stdout
    assert processes_with_var_dir(tmp_path) == [], "the benchmark left worker processes running"
    assert not list((tmp_path / "bench").glob("*.pid"))


@pytest.mark.integration
def test_quick_benchmark_prints_every_figure_on_postgresql_and_redis(tmp_path):
    database, broker = os.environ.get("DATABASE_URL", ""), os.environ.get("CELERY_BROKER_URL", "")
    if not database.startswith(("postgres://", "postgresql://")) or not broker.startswith(
        "redis://"
    ):
        pytest.fail(
            "this test needs DATABASE_URL=postgres://… and CELERY_BROKER_URL=redis://… (see docs/performance.md)",
            pytrace=False,
        )

    result = run_bench(tmp_path, DATABASE_URL=database, CELERY_BROKER_URL=broker)

    assert_complete_table(result)
    assert "PostgreSQL" in result.stdout and "redis" in result.stdout
    assert processes_with_var_dir(tmp_path) == [], "the benchmark left worker processes running"


@pytest.mark.django_db
def test_generate_executions_writes_whole_executions_and_refuses_to_write_them_twice():
    from django.core.management import CommandError, call_command

    from executions.models import Execution, StageRun, Status, StepRun
    from executions.services import run_pipeline
    from pipelines.models import Pipeline

    out = io.StringIO()
    call_command("generate_executions", "--executions", "60", "--pipelines", "5", stdout=out)

    assert "wrote 60 executions" in out.getvalue()
    generated = Execution.objects.filter(pipeline__project__organization__slug="bench")
    assert generated.count() == 60
    assert Pipeline.objects.filter(project__organization__slug="bench").count() == 5
    assert set(generated.values_list("pipeline__project__slug", flat=True)) <= {
        "alpha",
        "beta",
        "gamma",
    }
    for execution in generated:
        stages = list(execution.stage_runs.order_by("position"))
        assert len(stages) == len(execution.version.spec.stages)
        assert StepRun.objects.filter(execution=execution).count() == len(stages)
        bad = [s for s in stages if s.status not in (Status.SUCCESS, Status.NOT_STARTED)]
        if execution.status == Status.SUCCESS:
            assert bad == [] and all(s.status == Status.SUCCESS for s in stages)
        else:
            assert [s.status for s in bad] == [execution.status], (execution.status, bad)
            assert execution.error
    # Sequences continue after the generated ones: the next run of a pipeline gets the next number.
    pipeline = Pipeline.objects.get(identifier="retry_200")
    newest = pipeline.executions.order_by("-sequence").first()
    runner = get_user_model().objects.create_superuser("root-runner", password="x")
    assert run_pipeline(pipeline=pipeline, user=runner, inputs={}).sequence == newest.sequence + 1
    assert StageRun.objects.filter(execution__pipeline=pipeline).count() >= 200 * 2

    with pytest.raises(CommandError, match="already holds generated executions"):
        call_command(
            "generate_executions", "--executions", "60", "--pipelines", "5", stdout=io.StringIO()
        )
    assert generated.all().count() == 61  # nothing written, nothing removed
