"""Who ran, retried, aborted, approved and changed roles is recorded; secrets stay out of the
admin and of every prefill."""

from __future__ import annotations

import pytest
from django.urls import reverse

from executions.models import Event, Status
from executions.retry import create_retry, plan_rerun, plan_retry
from executions.services import abort_execution, answer_approval, run_pipeline
from pipelines.models import AuditEvent
from pipelines.roles import change_role, revoke_role
from tests.helpers.factories import make_pipeline
from tests.helpers.runs import wait_for_status

pytestmark = pytest.mark.engine

YAML = """
pipeline:
  name: Audited
  identifier: audited
  variables:
    - {name: token, type: Secret, value: <+input>, required: true}
  stages:
    - stage:
        identifier: build
        variables:
          - {name: fail, type: String, value: <+input>, default: "no"}
        steps:
          - step: {identifier: s, type: ShellScript, spec: {script: 'echo "<+pipeline.variables.token>"; [ "<+stage.variables.fail>" = no ]'}}
    - stage:
        identifier: gate
        steps:
          - step: {identifier: ok, type: Approval, spec: {message: "go?"}}
"""


def actions(execution) -> list[tuple[str, str]]:
    return [
        (e.action, e.actor.username if e.actor else "")
        for e in Event.objects.filter(execution=execution).exclude(action="").order_by("id")
    ]


def test_runs_retries_aborts_and_approvals_record_who_did_them(worker, personas):
    pipeline = make_pipeline(personas.project, YAML)
    first = run_pipeline(
        pipeline=pipeline,
        user=personas.executor,
        inputs={"token": "s3cr3t-token", "build.fail": "yes"},
    )
    first = wait_for_status(first, Status.FAILED)
    assert actions(first) == [("created", "executor")]

    retry = create_retry(
        execution=first,
        user=personas.admin,
        from_stage="build",
        inputs={"build.fail": "no"},
        reason="flake",
    )
    wait_for_status(retry, Status.WAITING)
    assert actions(retry)[:2] == [("created", "admin"), ("retried", "admin")]
    assert "flake" in Event.objects.get(execution=retry, action="retried").message
    answer_approval(
        execution=retry, stage="gate", user=personas.approver, approve=True, comment="ship it"
    )
    wait_for_status(retry, Status.SUCCESS)
    assert ("approved", "approver") in actions(retry)

    third = run_pipeline(
        pipeline=pipeline, user=personas.executor, inputs={"token": "s3cr3t-token"}
    )
    wait_for_status(third, Status.WAITING)
    abort_execution(execution=third, user=personas.executor)
    assert ("aborted", "executor") in actions(third)


def test_role_changes_are_recorded_with_who_made_them(personas):
    assignment = personas.viewer.role_assignments.get(project=personas.project)
    change_role(assignment=assignment, role="executor", changed_by=personas.admin)
    revoke_role(assignment=assignment, revoked_by=personas.admin)
    trail = list(
        AuditEvent.objects.filter(project=personas.project, actor=personas.admin).values_list(
            "action", flat=True
        )
    )
    assert trail[:2] == ["role.revoked", "role.changed"]  # newest first


def test_secrets_stay_out_of_the_admin_and_every_prefill(worker, personas, client):
    pipeline = make_pipeline(personas.project, YAML)
    execution = run_pipeline(
        pipeline=pipeline,
        user=personas.executor,
        inputs={"token": "s3cr3t-token", "build.fail": "yes"},
    )
    execution = wait_for_status(execution, Status.FAILED)
    root = personas.admin.__class__.objects.create_superuser("root", "root@example.com", "pw")
    client.force_login(root)
    page = client.get(f"/admin/executions/execution/{execution.pk}/change/")
    assert page.status_code == 200 and b"s3cr3t-token" not in page.content
    assert all("s3cr3t" not in f.value for f in plan_retry(execution, personas.executor).inputs)
    assert all("s3cr3t" not in f.value for f in plan_rerun(execution, personas.executor).inputs)
    client.force_login(personas.executor)
    for name in ("execution", "execution_retry", "execution_rerun"):
        page = client.get(reverse(name, args=[execution.pk]))
        assert page.status_code == 200 and b"s3cr3t-token" not in page.content, name
