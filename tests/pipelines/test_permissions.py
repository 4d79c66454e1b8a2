"""``pipelines.permissions``: what each role may do, what each user may see, and that changes
take effect at once."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import AnonymousUser, Group
from guardian.shortcuts import assign_perm

from executions.models import Execution
from executions.services import run_pipeline
from pipelines import permissions
from pipelines.models import Pipeline, Project, RoleAssignment
from pipelines.roles import assign_role, change_role, revoke_role
from stageline.errors import Forbidden, NotFound
from tests.helpers.factories import (
    make_pipeline,
    make_project,
    make_user,
    serial_pipeline,
    shell_stage,
)

EXPECTED = {
    "admin": {"view", "execute", "approve", "change", "manage_access"},
    "executor": {"view", "execute"},
    "viewer": {"view"},
    "approver": {"view", "approve"},
    "stranger": set(),
}


def pipeline_in(project, identifier: str = "deploy") -> Pipeline:
    return make_pipeline(
        project, serial_pipeline(identifier, [shell_stage("build", "echo building")])
    )


def held(user, obj) -> set[str]:
    return {action for action in permissions.ACTIONS if permissions.can(user, action, obj)}


@pytest.fixture
def world(personas):
    pipeline = pipeline_in(personas.project)
    other_pipeline = pipeline_in(personas.other_project)
    execution = run_pipeline(pipeline=pipeline, user=personas.admin, inputs={})
    other_execution = run_pipeline(pipeline=other_pipeline, user=personas.stranger, inputs={})
    return personas, pipeline, other_pipeline, execution, other_execution


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_role_holds_exactly_its_actions_on_the_project_its_pipelines_and_executions(
    world, name
):
    personas, pipeline, _, execution, _ = world
    user = personas.all()[name]
    assert held(user, personas.project) == EXPECTED[name]
    assert held(user, pipeline) == EXPECTED[name]
    assert held(user, execution) == EXPECTED[name]


def test_the_stranger_holds_every_action_in_their_own_project_and_nothing_here(world):
    personas, pipeline, other_pipeline, execution, other_execution = world
    assert held(personas.stranger, other_pipeline) == EXPECTED["admin"]
    assert held(personas.stranger, other_execution) == EXPECTED["admin"]
    assert held(personas.admin, other_pipeline) == set()
    assert held(personas.admin, other_execution) == set()


def test_each_user_sees_the_projects_pipelines_and_executions_of_their_roles_only(world):
    personas, pipeline, other_pipeline, execution, other_execution = world
    for name in ("admin", "executor", "viewer", "approver"):
        user = personas.all()[name]
        assert list(permissions.visible_projects(user)) == [personas.project]
        assert list(permissions.visible_pipelines(user)) == [pipeline]
        assert list(Execution.objects.visible_to(user)) == [execution]
    assert list(permissions.visible_projects(personas.stranger)) == [personas.other_project]
    assert list(permissions.visible_pipelines(personas.stranger)) == [other_pipeline]
    assert list(Execution.objects.visible_to(personas.stranger)) == [other_execution]


def test_the_visible_lists_narrow_a_given_queryset_and_executions_follow_their_pipeline(world):
    personas, pipeline, _, execution, _ = world
    projects = Project.objects.filter(slug=personas.project.slug)
    assert list(permissions.visible_projects(personas.viewer, projects)) == [personas.project]
    assert list(permissions.visible_pipelines(personas.viewer, Pipeline.objects.all())) == [
        pipeline
    ]
    assert list(Execution.objects.visible_to(personas.viewer)) == [execution]
    assert list(Execution.objects.visible_to(make_user("nobody"))) == []


def test_a_superuser_may_do_everything_everywhere_without_any_role(world):
    personas, pipeline, other_pipeline, execution, other_execution = world
    root = make_user("root", is_superuser=True)
    for obj in (
        personas.project,
        personas.other_project,
        pipeline,
        other_pipeline,
        execution,
        other_execution,
    ):
        assert held(root, obj) == EXPECTED["admin"]
    assert permissions.visible_projects(root).count() == 2
    assert Execution.objects.visible_to(root).count() == 2


def test_an_inactive_user_holds_nothing_even_as_project_admin(world):
    personas, pipeline, _, execution, _ = world
    personas.admin.is_active = False
    personas.admin.save(update_fields=["is_active"])
    assert held(personas.admin, pipeline) == set()
    assert not permissions.visible_projects(personas.admin).exists()
    assert not Execution.objects.visible_to(personas.admin).exists()


def test_an_inactive_superuser_holds_nothing(world):
    personas, pipeline, _, _, _ = world
    root = make_user("root", is_superuser=True, is_active=False)
    assert held(root, pipeline) == set()
    assert not permissions.visible_pipelines(root).exists()


def test_an_anonymous_user_sees_nothing_and_may_do_nothing(world):
    personas, pipeline, _, execution, _ = world
    anonymous = AnonymousUser()
    assert held(anonymous, execution) == set()
    assert not permissions.visible_projects(anonymous).exists()
    assert not permissions.visible_pipelines(anonymous).exists()
    assert not Execution.objects.visible_to(anonymous).exists()


def test_a_pipeline_grant_shows_that_pipeline_and_its_project_but_not_the_sibling_pipelines(world):
    personas, pipeline, _, execution, _ = world
    sibling = pipeline_in(personas.project, "sibling")
    sibling_execution = run_pipeline(pipeline=sibling, user=personas.admin, inputs={})
    user = make_user("deployer")
    assign_role(project=personas.project, role="executor", user=user, pipeline=pipeline)

    assert held(user, pipeline) == {"view", "execute"}
    assert held(user, execution) == {"view", "execute"}
    assert held(user, sibling) == set()
    assert held(user, sibling_execution) == set()
    assert held(user, personas.project) == {"view"}  # the project page, listing one pipeline
    assert list(permissions.visible_projects(user)) == [personas.project]
    assert list(permissions.visible_pipelines(user)) == [pipeline]
    assert list(Execution.objects.visible_to(user)) == [execution]


def test_a_group_role_grants_its_members_and_stops_when_they_leave_the_group(world):
    personas, pipeline, _, execution, _ = world
    operators = Group.objects.create(name="operators")
    user = make_user("carol")
    assign_role(project=personas.project, role="executor", group=operators)
    assert held(user, pipeline) == set()

    user.groups.add(operators)
    assert held(user, pipeline) == {"view", "execute"}
    assert list(Execution.objects.visible_to(user)) == [execution]

    user.groups.remove(operators)
    assert held(user, pipeline) == set()
    assert not permissions.visible_projects(user).exists()


def test_a_user_holds_the_union_of_their_own_and_their_groups_roles(world):
    personas, pipeline, _, _, _ = world
    approvers = Group.objects.create(name="approvers")
    personas.executor.groups.add(approvers)
    assign_role(project=personas.project, role="approver", group=approvers)
    assert held(personas.executor, pipeline) == {"view", "execute", "approve"}


def test_revoking_or_changing_a_role_takes_effect_for_a_user_already_checked(world):
    personas, pipeline, _, _, _ = world
    user = personas.executor
    assert permissions.can(user, "execute", pipeline)
    assignment = RoleAssignment.objects.get(user=user)

    change_role(assignment=assignment, role="viewer")
    assert held(user, pipeline) == {"view"}

    revoke_role(assignment=assignment)
    assert held(user, pipeline) == set()
    assert not permissions.visible_pipelines(user).exists()


def test_a_group_revocation_takes_effect_for_a_member_already_checked(world):
    personas, pipeline, _, _, _ = world
    group = Group.objects.create(name="ops")
    member = make_user("dave")
    member.groups.add(group)
    assignment = assign_role(project=personas.project, role="executor", group=group)
    assert permissions.can(member, "execute", pipeline)
    revoke_role(assignment=assignment)
    assert not permissions.can(member, "view", pipeline)


def test_a_permission_granted_on_guardians_object_page_counts(world):
    personas, pipeline, _, _, _ = world
    user = make_user("eve")
    assign_perm("pipelines.view_pipeline", user, pipeline)
    assert held(user, pipeline) == {"view"}
    assert list(permissions.visible_pipelines(user)) == [pipeline]


def test_check_refuses_with_not_found_or_forbidden_and_never_confirms_a_hidden_object(world):
    personas, pipeline, _, execution, _ = world
    permissions.check(personas.viewer, "view", execution)
    with pytest.raises(Forbidden, match="You need the Execute permission on pipeline deploy"):
        permissions.check(personas.viewer, "execute", execution)
    with pytest.raises(Forbidden, match="You need the Approve permission"):
        permissions.check(personas.executor, "approve", pipeline)
    with pytest.raises(NotFound) as hidden:
        permissions.check(personas.stranger, "approve", pipeline)
    assert "deploy" not in str(hidden.value)
    with pytest.raises(NotFound):
        permissions.check(personas.stranger, "view", personas.project)
    permissions.check(personas.approver, "approve", pipeline)


def test_why_not_names_the_missing_permission_and_is_empty_when_allowed(world):
    personas, pipeline, _, _, _ = world
    assert permissions.why_not(personas.viewer, "change", pipeline) == (
        "You need the Edit permission on pipeline deploy."
    )
    assert permissions.why_not(personas.executor, "manage_access", personas.project) == (
        "You need the Manage access permission on project Web."
    )
    assert permissions.why_not(personas.admin, "change", pipeline) == ""


def test_an_unknown_action_is_a_programming_error(world):
    personas, pipeline, _, _, _ = world
    with pytest.raises(ValueError, match="unknown action"):
        permissions.can(personas.admin, "delete", pipeline)


def test_checking_one_object_costs_one_query_and_asking_again_costs_none(
    world, django_assert_num_queries
):
    personas, pipeline, _, _, _ = world
    user = make_user("frank")
    assign_role(project=personas.project, role="viewer", user=user)
    with django_assert_num_queries(1):
        assert permissions.can(user, "view", pipeline)
        assert not permissions.can(user, "execute", pipeline)
    with django_assert_num_queries(0):
        assert permissions.can(user, "view", pipeline)


def test_prefetch_answers_for_a_whole_list_of_pipelines_in_one_query(
    personas, django_assert_num_queries
):
    pipelines = [pipeline_in(personas.project, f"p{i}") for i in range(12)]
    granted = pipelines[3]
    user = make_user("grace")
    assign_role(project=personas.project, role="executor", user=user, pipeline=granted)
    with django_assert_num_queries(1):
        permissions.prefetch(user, pipelines)
    with django_assert_num_queries(0):
        allowed = [p for p in pipelines if permissions.can(user, "execute", p)]
    assert allowed == [granted]


def test_prefetch_sees_projects_made_visible_by_one_pipeline(personas, django_assert_num_queries):
    pipeline = pipeline_in(personas.project)
    empty = make_project("acme", "empty")
    user = make_user("heidi")
    assign_role(project=personas.project, role="viewer", user=user, pipeline=pipeline)
    projects = [personas.project, personas.other_project, empty]
    with django_assert_num_queries(2):
        permissions.prefetch(user, projects)
    assert [permissions.can(user, "view", p) for p in projects] == [True, False, False]
