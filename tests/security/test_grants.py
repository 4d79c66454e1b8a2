"""Finding 4: a staff Project Admin granted any user full rights through guardian's
object-permission admin page; the grant was not on the Access page, not audited, and removing
roles did not remove it. Now only superusers may use those pages, every permission written
outside the role functions is audited, and the Access page lists (and removes) it."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group
from django.urls import reverse
from guardian.shortcuts import assign_perm

from pipelines import permissions
from pipelines.models import AuditEvent, PipelineUserObjectPermission, ProjectUserObjectPermission
from pipelines.roles import assign_role, revoke_role
from tests.helpers.factories import make_pipeline, make_user

pytestmark = pytest.mark.django_db

YAML = """
pipeline:
  name: Web deploy
  identifier: web_deploy
  stages:
    - stage:
        identifier: build
        steps:
          - step: {identifier: s, type: ShellScript, spec: {script: "true"}}
"""


def perms_url(project, suffix: str = "") -> str:
    return f"/admin/pipelines/project/{project.pk}/permissions/{suffix}"


def access_url(project, name: str = "project_access") -> str:
    return reverse(name, args=[project.organization.slug, project.slug])


def fresh(user):
    """The user as the next request loads it (permissions are remembered per user object)."""
    return type(user).objects.get(pk=user.pk)


def rows_of(user) -> int:
    return (
        ProjectUserObjectPermission.objects.filter(user=user).count()
        + PipelineUserObjectPermission.objects.filter(user=user).count()
    )


@pytest.fixture
def root(db):
    return make_user("root", is_staff=True, is_superuser=True)


def test_a_staff_project_admin_cannot_grant_through_the_object_permission_pages(client, personas):
    """The attack of finding 4, on the user-manage page and the selection page."""
    client.force_login(personas.admin)
    before = rows_of(personas.stranger)
    manage_user = perms_url(personas.project, f"user-manage/{personas.stranger.pk}/")
    assert client.get(perms_url(personas.project)).status_code == 403
    assert client.get(manage_user).status_code == 403
    posted = client.post(manage_user, {"permissions": ["manage_access_project", "view_project"]})
    assert posted.status_code == 403
    assert "Only superusers may edit object permissions here" in posted.content.decode()
    picked = client.post(
        perms_url(personas.project), {"user": "stranger", "submit_manage_user": "1"}
    )
    assert picked.status_code == 403
    assert rows_of(personas.stranger) == before
    assert not permissions.can(fresh(personas.stranger), "view", personas.project)
    # the change form no longer offers the link
    page = client.get(f"/admin/pipelines/project/{personas.project.pk}/change/")
    assert page.status_code == 200 and "Object permissions" not in page.content.decode()


def test_the_object_permission_pages_refuse_every_persona(client, personas):
    for name, who in personas.all().items():
        client.force_login(who)
        response = client.get(perms_url(personas.project))
        # staff without superuser: 403; not staff: the admin's log-in page
        assert response.status_code == (403 if who.is_staff else 302), name


def test_a_superusers_direct_grant_is_audited_and_listed_on_the_access_page(client, personas, root):
    client.force_login(root)
    assert (
        "Object permissions"
        in client.get(f"/admin/pipelines/project/{personas.project.pk}/change/").content.decode()
    )
    manage_user = perms_url(personas.project, f"user-manage/{personas.stranger.pk}/")
    assert client.get(manage_user).status_code == 200
    response = client.post(manage_user, {"permissions": ["view_project", "execute_project"]})
    assert response.status_code == 302
    assert permissions.can(fresh(personas.stranger), "execute", personas.project)

    trail = AuditEvent.objects.filter(project=personas.project, action="permission.granted")
    assert sorted(trail.values_list("detail", flat=True)) == [
        "user stranger: Execute on the whole project (outside roles)",
        "user stranger: View on the whole project (outside roles)",
    ]
    assert {event.actor for event in trail} == {root}

    client.force_login(personas.admin)
    page = client.get(access_url(personas.project)).content.decode()
    assert "Permissions given outside roles" in page
    section = page[page.index("Permissions given outside roles") :]
    assert "stranger" in section and "Execute, View" in section


def test_a_project_admin_removes_a_direct_grant_on_the_access_page(client, personas, root):
    pipeline = make_pipeline(personas.project, YAML)
    assign_perm("pipelines.execute_pipeline", personas.stranger, pipeline)
    assign_perm("pipelines.view_pipeline", personas.stranger, pipeline)
    held = rows_of(personas.stranger)  # with its role in its own project
    key = f"user:{personas.stranger.pk}:pipeline:{pipeline.pk}"
    remove = access_url(personas.project, "project_access_remove_direct")

    for name, who, status in [
        ("executor", personas.executor, 403),
        ("viewer", personas.viewer, 403),
        ("stranger", personas.stranger, 403),  # may see the project only through this grant
    ]:
        client.force_login(who)
        assert client.post(remove, {"grant": key}).status_code == status, name
    assert rows_of(personas.stranger) == held

    client.force_login(personas.admin)
    assert client.post(remove, {"grant": "user:999999:project:1"}).status_code == 404
    response = client.post(remove, {"grant": key})
    assert response.status_code == 302
    assert rows_of(personas.stranger) == held - 2
    assert not permissions.can(fresh(personas.stranger), "view", pipeline)
    revoked = AuditEvent.objects.filter(project=personas.project, action="permission.revoked")
    assert sorted(revoked.values_list("detail", flat=True)) == [
        "user stranger: Execute on pipeline web_deploy (outside roles)",
        "user stranger: View on pipeline web_deploy (outside roles)",
    ]
    assert {event.actor for event in revoked} == {personas.admin}
    page = client.get(access_url(personas.project)).content.decode()
    assert "Permissions given outside roles" not in page


def test_revoking_a_role_leaves_a_direct_grant_listed_until_it_is_removed(client, personas):
    member = make_user("member")
    assignment = assign_role(project=personas.project, role="viewer", user=member)
    assign_perm("pipelines.change_project", member, personas.project)  # not from the role
    revoke_role(assignment=assignment, revoked_by=personas.admin)
    assert permissions.can(fresh(member), "change", personas.project)
    client.force_login(personas.admin)
    page = client.get(access_url(personas.project)).content.decode()
    section = page[page.index("Permissions given outside roles") :]
    assert "member" in section and "Edit" in section


def test_role_functions_audit_the_role_and_nothing_twice(personas):
    member = make_user("member")
    AuditEvent.objects.all().delete()
    assignment = assign_role(
        project=personas.project, role="admin", user=member, granted_by=personas.admin
    )
    revoke_role(assignment=assignment, revoked_by=personas.admin)
    assert list(AuditEvent.objects.order_by("id").values_list("action", flat=True)) == [
        "role.assigned",
        "role.revoked",
    ]


def test_a_permission_written_outside_roles_and_the_admin_is_audited_without_an_actor(personas):
    assign_perm("pipelines.manage_access_project", personas.viewer, personas.project)
    event = AuditEvent.objects.get(action="permission.granted")
    assert event.actor is None and event.project == personas.project
    assert event.detail == "user viewer: Manage access on the whole project (outside roles)"


def test_permissions_deleted_with_their_project_or_user_are_not_audited_one_by_one(personas):
    member = make_user("member")
    assign_perm("pipelines.view_project", member, personas.project)
    assign_perm("pipelines.execute_project", personas.viewer, personas.other_project)
    granted = AuditEvent.objects.filter(action__startswith="permission.").count()
    member.delete()
    personas.other_project.delete()  # no pipelines: a project with versions cannot be deleted
    assert (
        not ProjectUserObjectPermission.objects.filter(user=personas.viewer)
        .exclude(content_object=personas.project)
        .exists()
    )
    assert AuditEvent.objects.filter(action__startswith="permission.").count() == granted


def test_joining_or_leaving_a_group_with_rights_is_audited_in_its_projects(personas):
    ops, idle = Group.objects.create(name="ops"), Group.objects.create(name="idle")
    assign_role(project=personas.project, role="executor", group=ops)
    member = make_user("member")
    AuditEvent.objects.all().delete()

    member.groups.add(ops, idle)  # idle has no rights anywhere: nothing to say about it
    ops.user_set.remove(member)
    member.groups.add(ops)
    member.groups.clear()

    trail = AuditEvent.objects.order_by("id")
    assert [(e.action, e.project) for e in trail] == [
        ("group.member_added", personas.project),
        ("group.member_removed", personas.project),
        ("group.member_added", personas.project),
        ("group.member_removed", personas.project),
    ]
    assert trail[0].detail == "user member added to group ops, which has rights in this project"
    assert not permissions.can(fresh(member), "execute", personas.project)
