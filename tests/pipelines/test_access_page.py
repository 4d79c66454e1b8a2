"""The project's Access page: Project Admins list, add, change and remove role assignments;
everyone else gets a 403 (if they see the project) or a 404."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import Group
from django.urls import reverse

from pipelines import permissions
from pipelines.models import AuditEvent, Pipeline, RoleAssignment
from pipelines.roles import assign_role
from tests.helpers.factories import make_pipeline, make_user, serial_pipeline, shell_stage

# Row locks and constraints differ between SQLite and PostgreSQL: the integration suite runs
# these again on PostgreSQL.
pytestmark = pytest.mark.database


def pipeline_in(project, identifier: str = "deploy") -> Pipeline:
    return make_pipeline(
        project, serial_pipeline(identifier, [shell_stage("build", "echo building")])
    )


def access_url(project) -> str:
    return reverse("project_access", args=[project.organization.slug, project.slug])


def change_url(project, assignment) -> str:
    return reverse(
        "project_access_change", args=[project.organization.slug, project.slug, assignment.pk]
    )


def remove_url(project, assignment) -> str:
    return reverse(
        "project_access_remove", args=[project.organization.slug, project.slug, assignment.pk]
    )


def state() -> list[tuple]:
    return list(
        RoleAssignment.objects.order_by("id").values_list(
            "project", "pipeline", "user", "group", "role"
        )
    )


@pytest.fixture
def as_admin(client, personas):
    client.force_login(personas.admin)
    return client


def test_the_page_lists_every_assignment_with_role_target_and_who_granted_it(as_admin, personas):
    pipeline = pipeline_in(personas.project)
    assign_role(project=personas.project, role="executor", group=Group.objects.create(name="ops"))
    assign_role(
        project=personas.project,
        role="executor",
        user=make_user("deployer"),
        pipeline=pipeline,
        granted_by=personas.admin,
    )
    response = as_admin.get(access_url(personas.project))
    assert response.status_code == 200
    rows = list(response.context["assignments"])
    assert [(a.user.username if a.user else a.group.name, a.role, a.pipeline) for a in rows] == [
        ("admin", "admin", None),
        ("approver", "approver", None),
        ("executor", "executor", None),
        ("ops", "executor", None),
        ("viewer", "viewer", None),
        ("deployer", "executor", pipeline),
    ]
    page = response.content.decode()
    assert 'ops <span class="chip">group</span>' in page
    assert "Pipeline <code>deploy</code>" in page
    assert "stranger" not in page  # roles of other projects are not shown


def test_the_page_has_no_inline_script_or_style(as_admin, personas):
    page = as_admin.get(access_url(personas.project)).content.decode()
    assert not re.search(r"<script(?![^>]*\bsrc=)", page)
    assert "style=" not in page and "<style" not in page
    assert not re.search(r"<[^>]+\son[a-z]+=", page)


def test_adding_a_user_role_grants_it_at_once_and_says_so(as_admin, personas):
    bob = make_user("bob")
    response = as_admin.post(
        access_url(personas.project),
        {"kind": "user", "name": "bob", "role": "executor", "pipeline": ""},
        follow=True,
    )
    assert response.redirect_chain[-1] == (access_url(personas.project), 302)
    assert "Added user bob as Pipeline Executor on the whole project." in response.content.decode()
    assignment = RoleAssignment.objects.get(user=bob)
    assert assignment.granted_by == personas.admin
    assert permissions.can(bob, "execute", personas.project)
    assert AuditEvent.objects.filter(action="role.assigned", actor=personas.admin).exists()


def test_adding_a_group_role_grants_it_to_the_groups_members(as_admin, personas):
    ops = Group.objects.create(name="ops")
    member = make_user("carol")
    member.groups.add(ops)
    response = as_admin.post(
        access_url(personas.project), {"kind": "group", "name": "ops", "role": "approver"}
    )
    assert response.status_code == 302
    assert RoleAssignment.objects.get(group=ops).role == "approver"
    assert permissions.can(member, "approve", personas.project)


def test_a_role_on_one_pipeline_does_not_reach_the_projects_other_pipelines(as_admin, personas):
    pipeline, sibling = pipeline_in(personas.project), pipeline_in(personas.project, "sibling")
    bob = make_user("bob")
    response = as_admin.post(
        access_url(personas.project),
        {"kind": "user", "name": "bob", "role": "executor", "pipeline": pipeline.pk},
    )
    assert response.status_code == 302
    assert permissions.can(bob, "execute", pipeline)
    assert not permissions.can(bob, "view", sibling)
    assert list(permissions.visible_pipelines(bob)) == [pipeline]


@pytest.mark.parametrize(
    "data, message",
    [
        (
            {"kind": "user", "name": "nobody", "role": "viewer"},
            "No active user is named &#x27;nobody&#x27;.",
        ),
        (
            {"kind": "user", "name": "retired", "role": "viewer"},
            "No active user is named &#x27;retired&#x27;.",
        ),
        (
            {"kind": "group", "name": "ghosts", "role": "viewer"},
            "No group is named &#x27;ghosts&#x27;.",
        ),
        (
            {"kind": "user", "name": "bob", "role": "owner"},
            "Choose one of the roles: Project Viewer",
        ),
        ({"kind": "robot", "name": "bob", "role": "viewer"}, "Choose User or Group."),
        ({"kind": "user", "name": "", "role": "viewer"}, "This field is required."),
        (
            {"kind": "user", "name": "viewer", "role": "admin"},
            "user viewer as Project Viewer on the whole project already exists",
        ),
        (
            {"kind": "user", "name": "bob", "role": "viewer", "pipeline": "OTHER"},
            "one of this project&#x27;s pipelines",
        ),
        (
            {"kind": "user", "name": "bob", "role": "viewer", "pipeline": "not-a-number"},
            "one of this project&#x27;s pipelines",
        ),
    ],
)
def test_a_bad_addition_is_refused_with_a_400_naming_the_problem_and_changes_nothing(
    as_admin, personas, data, message
):
    make_user("bob")
    make_user("retired", is_active=False)
    if data.get("pipeline") == "OTHER":
        data = {**data, "pipeline": pipeline_in(personas.other_project).pk}
    before = state()
    response = as_admin.post(access_url(personas.project), data)
    assert response.status_code == 400
    assert message in response.content.decode()
    assert state() == before


def test_changing_a_role_changes_the_permissions(as_admin, personas):
    assignment = RoleAssignment.objects.get(user=personas.viewer)
    response = as_admin.post(
        change_url(personas.project, assignment), {"role": "executor"}, follow=True
    )
    assert (
        "Changed to user viewer as Pipeline Executor on the whole project."
        in response.content.decode()
    )
    assert permissions.can(personas.viewer, "execute", personas.project)


def test_changing_to_an_unknown_role_is_a_400_and_changes_nothing(as_admin, personas):
    assignment = RoleAssignment.objects.get(user=personas.viewer)
    response = as_admin.post(change_url(personas.project, assignment), {"role": "owner"})
    assert response.status_code == 400
    assert "Choose one of the roles" in response.content.decode()
    assert RoleAssignment.objects.get(pk=assignment.pk).role == "viewer"


def test_removing_an_assignment_revokes_its_permissions(as_admin, personas):
    assignment = RoleAssignment.objects.get(user=personas.executor)
    response = as_admin.post(remove_url(personas.project, assignment), follow=True)
    assert (
        "Removed user executor as Pipeline Executor on the whole project."
        in response.content.decode()
    )
    assert not permissions.can(personas.executor, "view", personas.project)


def test_the_last_project_admin_can_be_neither_removed_nor_demoted(as_admin, personas):
    assignment = RoleAssignment.objects.get(user=personas.admin)
    before = state()
    for response in (
        as_admin.post(remove_url(personas.project, assignment)),
        as_admin.post(change_url(personas.project, assignment), {"role": "viewer"}),
    ):
        assert response.status_code == 409
        assert "The project would have no Project Admin left" in response.content.decode()
    assert state() == before


def test_an_admin_who_steps_down_is_sent_to_the_project_page(as_admin, personas):
    assign_role(project=personas.project, role="admin", user=make_user("successor"))
    assignment = RoleAssignment.objects.get(user=personas.admin)
    response = as_admin.post(change_url(personas.project, assignment), {"role": "viewer"})
    assert response.status_code == 302
    assert response["Location"] == reverse("project", args=["acme", "web"])
    assert as_admin.get(access_url(personas.project)).status_code == 403


def test_an_assignment_of_another_project_is_404_through_this_projects_page(as_admin, personas):
    foreign = RoleAssignment.objects.get(user=personas.stranger)
    before = state()
    assert (
        as_admin.post(change_url(personas.project, foreign), {"role": "viewer"}).status_code == 404
    )
    assert as_admin.post(remove_url(personas.project, foreign)).status_code == 404
    assert (
        as_admin.post(change_url(personas.other_project, foreign), {"role": "viewer"}).status_code
        == 404
    )
    assert state() == before


@pytest.mark.parametrize("name", ["executor", "viewer", "approver"])
def test_members_without_manage_access_get_a_403_that_says_why(client, personas, name):
    client.force_login(personas.all()[name])
    assignment = RoleAssignment.objects.get(user=personas.viewer)
    before = state()
    responses = [
        client.get(access_url(personas.project)),
        client.post(access_url(personas.project), {"kind": "user", "name": name, "role": "admin"}),
        client.post(change_url(personas.project, assignment), {"role": "admin"}),
        client.post(remove_url(personas.project, assignment)),
    ]
    for response in responses:
        assert response.status_code == 403
        assert "You need the Manage access permission on project Web." in response.content.decode()
        assert "assignments" not in response.context  # no list leaks out
        assert "Who has a role" not in response.content.decode()
    assert state() == before


def test_a_user_from_another_project_gets_a_404_everywhere(client, personas):
    client.force_login(personas.stranger)
    assignment = RoleAssignment.objects.get(user=personas.viewer)
    before = state()
    assert client.get(access_url(personas.project)).status_code == 404
    assert (
        client.post(
            access_url(personas.project), {"kind": "user", "name": "stranger", "role": "admin"}
        ).status_code
        == 404
    )
    assert (
        client.post(change_url(personas.project, assignment), {"role": "admin"}).status_code == 404
    )
    assert client.post(remove_url(personas.project, assignment)).status_code == 404
    assert state() == before


def test_an_anonymous_visitor_is_sent_to_log_in(client, personas):
    response = client.get(access_url(personas.project))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_a_project_admin_by_group_manages_access(client, personas):
    admins = Group.objects.create(name="admins")
    carol = make_user("carol")
    carol.groups.add(admins)
    assign_role(project=personas.project, role="admin", group=admins)
    client.force_login(carol)
    assert client.get(access_url(personas.project)).status_code == 200
    response = client.post(
        access_url(personas.project), {"kind": "user", "name": "stranger", "role": "viewer"}
    )
    assert response.status_code == 302
    assert permissions.can(personas.stranger, "view", personas.project)


def test_a_superuser_manages_access_without_a_role(client, personas):
    client.force_login(make_user("root", is_superuser=True))
    assert client.get(access_url(personas.project)).status_code == 200
    assert client.get(access_url(personas.other_project)).status_code == 200


def test_other_http_methods_are_refused(as_admin, personas):
    assert as_admin.put(access_url(personas.project)).status_code == 405
    assignment = RoleAssignment.objects.get(user=personas.viewer)
    assert as_admin.get(change_url(personas.project, assignment)).status_code == 405
    assert as_admin.put(remove_url(personas.project, assignment)).status_code == 405


def test_removing_a_role_asks_first_and_says_what_is_lost(as_admin, personas):
    assignment = RoleAssignment.objects.get(user=personas.viewer)
    page = as_admin.get(access_url(personas.project)).content.decode()
    url = remove_url(personas.project, assignment)
    assert f'hx-get="{url}"' in page, "Remove opens a confirmation, it does not post at once"
    assert f'action="{url}"' not in page

    response = as_admin.get(url, headers={"HX-Request": "true"})
    html = response.content.decode()
    assert response.status_code == 200 and 'id="modal-title">Remove a role<' in html
    assert "Remove <strong>user viewer as Project Viewer on the whole project</strong>?" in html
    assert "viewer loses\n      <strong>View</strong>" in html
    assert RoleAssignment.objects.filter(pk=assignment.pk).exists(), "asking removed nothing"

    response = as_admin.post(url, headers={"HX-Request": "true"})
    assert response.status_code == 200 and response["HX-Redirect"] == access_url(personas.project)
    assert not RoleAssignment.objects.filter(pk=assignment.pk).exists()


def test_the_last_admin_shows_why_it_cannot_be_removed(as_admin, personas):
    admin = RoleAssignment.objects.get(user=personas.admin)
    page = as_admin.get(access_url(personas.project)).content.decode()
    reason = (
        "The project would have no Project Admin left (user admin as Project Admin on the "
        "whole project is the last one): make someone else Project Admin first."
    )
    assert reason in page, "the reason is on the page before anyone tries"
    assert f'hx-get="{remove_url(personas.project, admin)}"' not in page

    response = as_admin.get(remove_url(personas.project, admin), headers={"HX-Request": "true"})
    assert (
        reason in response.content.decode() and "Remove the role" not in response.content.decode()
    )
    response = as_admin.post(remove_url(personas.project, admin), headers={"HX-Request": "true"})
    assert response.status_code == 409 and reason in response.content.decode()
    assert RoleAssignment.objects.filter(pk=admin.pk).exists()

    assign_role(project=personas.project, role="admin", user=make_user("second"))
    page = as_admin.get(access_url(personas.project)).content.decode()
    assert reason not in page and f'hx-get="{remove_url(personas.project, admin)}"' in page
