"""Management commands that act for a user (``--as USER``) follow the same access rules as the
pages: a refusal exits with status 2 and says why, never confirms that a hidden object exists,
and changes nothing. (Every command × persona is in ``tests/test_access_matrix.py``; these
are the cases around it: groups, revocations, unknown users, superusers.)"""

from __future__ import annotations

import io

import pytest
from django.contrib.auth.models import Group
from django.core.management import CommandError, call_command

from executions.models import Execution, Status
from executions.services import run_pipeline
from pipelines.models import RoleAssignment
from pipelines.roles import assign_role, change_role, revoke_role
from tests.helpers.factories import make_pipeline, make_user

GATED = """
pipeline:
  name: Deploy
  identifier: {identifier}
  stages:
    - stage:
        identifier: approve
        name: Approve
        steps:
          - step: {{identifier: gate, type: Approval, timeout: 1h, spec: {{message: "Go?"}}}}
"""


def gated(project, identifier: str = "deploy"):
    return make_pipeline(project, GATED.format(identifier=identifier))


def command(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def refusal(*args: str) -> str:
    with pytest.raises(CommandError) as refused:
        command(*args)
    assert refused.value.returncode == 2
    return str(refused.value)


def test_a_refusal_does_not_say_whether_a_hidden_pipeline_exists(personas):
    gated(personas.project)
    hidden = refusal("run_pipeline", "acme/web/deploy", "--as", "stranger")
    missing = refusal("run_pipeline", "acme/web/nothing", "--as", "stranger")
    assert hidden == "no pipeline acme/web/deploy, or stranger may not see it"
    assert missing == "no pipeline acme/web/nothing, or stranger may not see it"
    assert not Execution.objects.exists()


def test_a_refusal_names_the_permission_that_is_missing(personas):
    pipeline = gated(personas.project)
    assert refusal("run_pipeline", "acme/web/deploy", "--as", "viewer") == (
        "You need the Execute permission on pipeline deploy."
    )
    execution = run_pipeline(pipeline=pipeline, user=personas.executor, inputs={})
    assert refusal("approve", str(execution.pk), "approve", "--as", "executor") == (
        "You need the Approve permission on pipeline deploy."
    )
    assert refusal("abort_execution", str(execution.pk), "--as", "approver") == (
        "You need the Execute permission on pipeline deploy."
    )
    assert Execution.objects.get(pk=execution.pk).status == Status.WAITING


@pytest.mark.parametrize("who", ["nobody", "retired"])
def test_an_unknown_or_inactive_user_may_not_act(personas, who):
    gated(personas.project)
    retired = make_user("retired", is_active=False)
    assign_role(project=personas.project, role="admin", user=retired)
    assert (
        refusal("run_pipeline", "acme/web/deploy", "--as", who) == f"no active user named '{who}'"
    )
    assert not Execution.objects.exists()


def test_a_group_executor_runs_and_aborts_and_a_group_approver_approves(personas):
    gated(personas.project)
    operators, approvers = (
        Group.objects.create(name="operators"),
        Group.objects.create(name="approvers"),
    )
    carol, dave = make_user("carol"), make_user("dave")
    carol.groups.add(operators)
    dave.groups.add(approvers)
    assign_role(project=personas.project, role="executor", group=operators)
    assign_role(project=personas.project, role="approver", group=approvers)

    first = int(command("run_pipeline", "acme/web/deploy", "--as", "carol"))
    assert Execution.objects.get(pk=first).triggered_by == carol
    assert "approved stage approve" in command("approve", str(first), "approve", "--as", "dave")
    assert Execution.objects.get(pk=first).status == Status.SUCCESS

    second = int(command("run_pipeline", "acme/web/deploy", "--as", "carol"))
    assert "aborted" in command("abort_execution", str(second), "--as", "carol")
    assert Execution.objects.get(pk=second).status == Status.ABORTED


def test_a_revoked_or_demoted_executor_is_refused_at_the_next_command(personas):
    gated(personas.project)
    command("run_pipeline", "acme/web/deploy", "--as", "executor")
    assignment = RoleAssignment.objects.get(user=personas.executor)

    change_role(assignment=assignment, role="viewer")
    assert "You need the Execute permission" in refusal(
        "run_pipeline", "acme/web/deploy", "--as", "executor"
    )

    revoke_role(assignment=assignment)
    assert "may not see it" in refusal("run_pipeline", "acme/web/deploy", "--as", "executor")
    assert Execution.objects.count() == 1


def test_leaving_the_group_ends_a_group_role_at_the_next_command(personas):
    gated(personas.project)
    operators = Group.objects.create(name="operators")
    carol = make_user("carol")
    carol.groups.add(operators)
    assign_role(project=personas.project, role="executor", group=operators)
    command("run_pipeline", "acme/web/deploy", "--as", "carol")
    carol.groups.remove(operators)
    assert "may not see it" in refusal("run_pipeline", "acme/web/deploy", "--as", "carol")


def test_a_pipeline_only_executor_runs_that_pipeline_and_cannot_see_its_sibling(personas):
    pipeline, sibling = gated(personas.project), gated(personas.project, "sibling")
    deployer = make_user("deployer")
    assign_role(project=personas.project, role="executor", user=deployer, pipeline=pipeline)
    sibling_run = run_pipeline(pipeline=sibling, user=personas.admin, inputs={})

    own = int(command("run_pipeline", "acme/web/deploy", "--as", "deployer"))
    assert Execution.objects.get(pk=own).pipeline == pipeline
    assert "may not see it" in refusal("run_pipeline", "acme/web/sibling", "--as", "deployer")
    assert "may not see it" in refusal("abort_execution", str(sibling_run.pk), "--as", "deployer")
    assert Execution.objects.get(pk=sibling_run.pk).status == Status.WAITING


def test_a_superuser_acts_everywhere_without_a_role(personas):
    gated(personas.other_project)
    make_user("root", is_superuser=True)
    execution = int(command("run_pipeline", "globex/ops/deploy", "--as", "root"))
    assert "rejected stage approve" in command(
        "approve", str(execution), "approve", "--reject", "--as", "root"
    )
    assert Execution.objects.get(pk=execution).status == Status.REJECTED
