"""Nothing is lost: history survives deletes, migrations apply to an empty database, the demo
round-trips through dumpdata/loaddata."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db.models import ProtectedError

from executions.models import Execution, LogChunk, StageRun, Status, StepRun
from executions.services import run_pipeline
from pipelines.models import Pipeline, PipelineVersion, Project, RoleAssignment
from pipelines.secrets import pipeline_secret_values
from tests.helpers.factories import make_pipeline, serial_pipeline, shell_stage
from tests.helpers.runs import wait_for_status

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.engine
def test_deleting_a_pipeline_or_project_with_history_is_refused(worker, personas):
    pipeline = make_pipeline(
        personas.project, serial_pipeline("keep", [shell_stage("a", "echo kept")])
    )
    wait_for_status(
        run_pipeline(pipeline=pipeline, user=personas.executor, inputs={}), Status.SUCCESS
    )
    with pytest.raises(ProtectedError):
        pipeline.delete()
    with pytest.raises(ProtectedError):
        Project.objects.get(pk=personas.project.pk).delete()
    assert Execution.objects.filter(pipeline=pipeline).count() == 1
    assert LogChunk.objects.filter(step_run__execution__pipeline=pipeline).exists()


def test_the_admin_refuses_to_delete_a_project_with_history(client, personas):
    make_pipeline(personas.project, serial_pipeline("keep", [shell_stage("a", "true")]))
    root = personas.admin.__class__.objects.create_superuser("root", "root@example.com", "pw")
    client.force_login(root)
    url = f"/admin/pipelines/project/{personas.project.pk}/delete/"
    page = client.get(url)
    assert (
        page.status_code == 200
        and b"would require deleting the following protected" in page.content
    )
    client.post(url, {"post": "yes"})
    assert Project.objects.filter(pk=personas.project.pk).exists()


def test_migrations_apply_to_an_empty_database_and_match_the_models(tmp_path):
    env = dict(
        os.environ,
        DATABASE_URL=f"sqlite:///{tmp_path}/empty.sqlite3".replace("sqlite:///", "sqlite:////"),
        STAGELINE_VAR_DIR=str(tmp_path),
    )
    migrate = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert migrate.returncode == 0, migrate.stderr
    check = subprocess.run(
        [sys.executable, "manage.py", "makemigrations", "--check", "--dry-run"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.returncode == 0, "models changed without a migration:\n" + check.stdout


@pytest.mark.engine
def test_the_demo_round_trips_through_dumpdata_and_loaddata(worker, tmp_path):
    call_command("seed_demo", "--no-worker", stdout=io.StringIO())
    # The demo keeps its fixed secret in the project's store; add a run with a secret input.
    project = Project.objects.get(slug="web")
    holder = make_pipeline(
        project,
        serial_pipeline(
            "holder",
            [shell_stage("noop", "true")],
            variables="- {name: token, type: Secret, value: <+input>}",
        ),
    )
    admin = get_user_model().objects.get(username="admin")
    run_pipeline(pipeline=holder, user=admin, inputs={"token": "demo-token-456"})
    statuses = set(Execution.objects.values_list("status", flat=True))
    assert {
        Status.SUCCESS,
        Status.FAILED,
        Status.ABORTED,
        Status.EXPIRED,
        Status.REJECTED,
    } <= statuses
    models = [
        Project,
        Pipeline,
        PipelineVersion,
        RoleAssignment,
        Execution,
        StageRun,
        StepRun,
        LogChunk,
    ]
    before = {m.__name__: m.objects.count() for m in models}
    dump = tmp_path / "demo.json"
    call_command(
        "dumpdata",
        "auth.user",
        "auth.group",
        "pipelines",
        "executions",
        "guardian",
        "--natural-foreign",
        "-o",
        str(dump),
        verbosity=0,
    )
    assert any(row["model"] == "executions.execution" for row in json.loads(dump.read_text()))
    secrets = {e.pk: dict(e.secret_inputs) for e in Execution.objects.exclude(secret_inputs={})}
    assert secrets, "the demo has executions with a secret input"
    rows = [row for row in json.loads(dump.read_text()) if row["model"] == "executions.execution"]
    assert not [row for row in rows if "demo-token-456" in json.dumps(row)], (
        "a dump holds secret input values in plain text"
    )
    assert "demo-token-123" not in dump.read_text(), "a dump holds a project secret in plain text"
    call_command("flush", "--noinput", verbosity=0)
    assert Execution.objects.count() == 0
    call_command("loaddata", str(dump), verbosity=0)
    assert {m.__name__: m.objects.count() for m in models} == before
    # loaded as tokens, not encrypted twice: the values read back as they were
    assert {
        e.pk: dict(e.secret_inputs) for e in Execution.objects.filter(pk__in=secrets)
    } == secrets
    assert pipeline_secret_values(holder.pk, ["api_token"]) == {"api_token": "demo-token-123"}
    failed = Execution.objects.filter(status=Status.FAILED).first()
    assert failed.stage_runs.filter(status=Status.FAILED).exists()
