"""``pipelines.roles``: a role assignment grants and revokes exactly its guardian permissions,
atomically, and every change is in the audit trail."""

from __future__ import annotations

import threading

import pytest
from django.contrib.auth.models import Group
from django.db import connection, transaction
from guardian.shortcuts import assign_perm, get_group_perms, get_user_perms

from pipelines.models import AuditEvent, Pipeline, Project, RoleAssignment
from pipelines.roles import (
    ROLE_ACTIONS,
    RoleError,
    assign_role,
    change_role,
    revoke_role,
)
from stageline.errors import Conflict, Forbidden, NotFound
from tests.helpers.factories import make_pipeline, make_user, serial_pipeline, shell_stage
from tests.helpers.runs import wait_for

# Row locks and constraints differ between SQLite and PostgreSQL: the integration suite runs
# these again on PostgreSQL.
pytestmark = pytest.mark.database


def pipeline_in(project, identifier: str = "deploy") -> Pipeline:
    return make_pipeline(
        project, serial_pipeline(identifier, [shell_stage("build", "echo building")])
    )


def project_perms(user, project) -> set[str]:
    return set(get_user_perms(user, project))


@pytest.mark.parametrize(
    "role, codenames",
    [
        ("viewer", {"view_project"}),
        ("executor", {"view_project", "execute_project"}),
        ("approver", {"view_project", "approve_project"}),
        (
            "admin",
            {
                "view_project",
                "execute_project",
                "approve_project",
                "change_project",
                "manage_access_project",
            },
        ),
    ],
)
def test_each_role_grants_exactly_its_guardian_permissions_on_the_project(db, role, codenames):
    from tests.helpers.factories import make_project

    project = make_project("acme", "web")
    user = make_user("bob")
    assign_role(project=project, role=role, user=user)
    assert project_perms(user, project) == codenames
    assert {c.removesuffix("_project") for c in codenames} == set(ROLE_ACTIONS[role])


def test_a_pipeline_role_grants_pipeline_permissions_and_nothing_on_the_project(personas):
    pipeline = pipeline_in(personas.project)
    user = make_user("bob")
    assign_role(project=personas.project, role="executor", user=user, pipeline=pipeline)
    assert set(get_user_perms(user, pipeline)) == {"view_pipeline", "execute_pipeline"}
    assert project_perms(user, personas.project) == set()


def test_a_group_role_grants_the_group_not_its_members_one_by_one(personas):
    group = Group.objects.create(name="ops")
    member = make_user("bob")
    member.groups.add(group)
    assign_role(project=personas.project, role="approver", group=group)
    assert set(get_group_perms(group, personas.project)) == {"view_project", "approve_project"}
    assert project_perms(member, personas.project) == set()


def test_changing_a_role_grants_what_the_new_role_adds_and_removes_what_it_drops(personas):
    assignment = RoleAssignment.objects.get(user=personas.executor)
    change_role(assignment=assignment, role="approver", changed_by=personas.admin)
    assert project_perms(personas.executor, personas.project) == {
        "view_project",
        "approve_project",
    }
    assignment.refresh_from_db()
    assert assignment.role == "approver"
    assert assignment.granted_by == personas.admin


def test_revoking_a_role_removes_its_permissions_and_the_assignment(personas):
    assignment = RoleAssignment.objects.get(user=personas.executor)
    revoke_role(assignment=assignment, revoked_by=personas.admin)
    assert project_perms(personas.executor, personas.project) == set()
    assert not RoleAssignment.objects.filter(pk=assignment.pk).exists()


def test_revoking_a_role_keeps_a_permission_granted_directly_on_guardians_page(personas):
    assign_perm("pipelines.approve_project", personas.viewer, personas.project)
    revoke_role(assignment=RoleAssignment.objects.get(user=personas.viewer))
    assert project_perms(personas.viewer, personas.project) == {"approve_project"}


def test_revoking_a_project_role_keeps_the_users_pipeline_role(personas):
    pipeline = pipeline_in(personas.project)
    assign_role(project=personas.project, role="executor", user=personas.viewer, pipeline=pipeline)
    revoke_role(assignment=RoleAssignment.objects.get(user=personas.viewer, pipeline=None))
    assert set(get_user_perms(personas.viewer, pipeline)) == {"view_pipeline", "execute_pipeline"}


def test_assigning_again_to_the_same_user_and_target_changes_the_one_assignment(personas):
    again = assign_role(project=personas.project, role="admin", user=personas.viewer)
    assert RoleAssignment.objects.filter(user=personas.viewer).count() == 1
    assert again.role == "admin"
    assert "manage_access_project" in project_perms(personas.viewer, personas.project)


def test_changing_to_the_same_role_restores_permissions_removed_by_hand(personas):
    from guardian.shortcuts import remove_perm

    remove_perm("pipelines.execute_project", personas.executor, personas.project)
    events = AuditEvent.objects.count()
    change_role(assignment=RoleAssignment.objects.get(user=personas.executor), role="executor")
    assert project_perms(personas.executor, personas.project) == {"view_project", "execute_project"}
    assert AuditEvent.objects.count() == events  # nothing changed that the audit trail should show


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"role": "viewer"}, "a user or to a group"),
        ({"role": "viewer", "user": "bob", "group": "ops"}, "a user or to a group"),
        ({"role": "owner", "user": "bob"}, "Unknown role 'owner'"),
        ({"role": "viewer", "user": "bob", "pipeline": "elsewhere"}, "is not in project Web"),
    ],
)
def test_assign_role_refuses_a_bad_request_and_changes_nothing(personas, kwargs, message):
    bob = make_user("bob")
    ops = Group.objects.create(name="ops")
    objects = {"bob": bob, "ops": ops, "elsewhere": pipeline_in(personas.other_project)}
    resolved = {k: objects.get(v, v) for k, v in kwargs.items()}
    before = (RoleAssignment.objects.count(), AuditEvent.objects.count())
    with pytest.raises(RoleError, match=message):
        assign_role(project=personas.project, **resolved)
    assert (RoleAssignment.objects.count(), AuditEvent.objects.count()) == before
    assert project_perms(bob, personas.project) == set()


def test_change_role_refuses_to_hand_an_assignment_to_another_user(personas):
    assignment = RoleAssignment.objects.get(user=personas.viewer)
    assignment.user = personas.stranger
    with pytest.raises(RoleError, match="cannot change"):
        change_role(assignment=assignment, role="admin")
    assert project_perms(personas.stranger, personas.project) == set()
    assert project_perms(personas.viewer, personas.project) == {"view_project"}


def test_an_assignment_is_all_or_nothing_when_something_fails_midway(personas, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("audit trail unavailable")

    bob = make_user("bob")
    monkeypatch.setattr(AuditEvent.objects, "create", broken)
    with pytest.raises(RuntimeError):
        assign_role(project=personas.project, role="admin", user=bob)
    assert not RoleAssignment.objects.filter(user=bob).exists()
    assert project_perms(bob, personas.project) == set()

    with pytest.raises(RuntimeError):
        revoke_role(assignment=RoleAssignment.objects.get(user=personas.executor))
    assert RoleAssignment.objects.filter(user=personas.executor).exists()
    assert project_perms(personas.executor, personas.project) == {"view_project", "execute_project"}

    with pytest.raises(RuntimeError):
        change_role(assignment=RoleAssignment.objects.get(user=personas.viewer), role="admin")
    assert project_perms(personas.viewer, personas.project) == {"view_project"}


def test_every_change_is_written_to_the_audit_trail_with_who_did_it(personas):
    bob = make_user("bob")
    assignment = assign_role(
        project=personas.project, role="viewer", user=bob, granted_by=personas.admin
    )
    change_role(assignment=assignment, role="executor", changed_by=personas.admin)
    revoke_role(assignment=assignment, revoked_by=personas.admin)
    trail = list(
        AuditEvent.objects.filter(actor=personas.admin)
        .order_by("id")
        .values_list("action", "detail")
    )
    assert trail == [
        ("role.assigned", "user bob as Project Viewer on the whole project"),
        ("role.changed", "user bob as Pipeline Executor on the whole project (was Project Viewer)"),
        ("role.revoked", "user bob as Pipeline Executor on the whole project"),
    ]


def admin_state(project) -> list:
    return list(
        RoleAssignment.objects.filter(project=project).order_by("pk").values_list("pk", "role")
    )


def test_the_last_project_admin_cannot_be_removed_or_demoted(personas):
    admin = RoleAssignment.objects.get(user=personas.admin)
    before = (admin_state(personas.project), AuditEvent.objects.count())
    with pytest.raises(Conflict, match="no Project Admin left"):
        revoke_role(assignment=admin, revoked_by=personas.admin)
    with pytest.raises(Conflict, match="no Project Admin left"):
        change_role(assignment=admin, role="viewer", changed_by=personas.admin)
    with pytest.raises(Conflict, match="no Project Admin left"):
        assign_role(project=personas.project, role="viewer", user=personas.admin)
    assert (admin_state(personas.project), AuditEvent.objects.count()) == before
    assert "manage_access_project" in project_perms(personas.admin, personas.project)
    change_role(assignment=admin, role="admin", changed_by=personas.admin)
    revoke_role(assignment=RoleAssignment.objects.get(user=personas.viewer))


def test_another_project_admin_by_group_lets_the_last_user_admin_go(personas):
    admins = Group.objects.create(name="admins")
    assign_role(project=personas.project, role="admin", group=admins)
    revoke_role(assignment=RoleAssignment.objects.get(user=personas.admin))
    assert project_perms(personas.admin, personas.project) == set()


def test_a_pipeline_admin_does_not_count_as_a_project_admin(personas):
    pipeline = pipeline_in(personas.project)
    assign_role(project=personas.project, role="admin", user=personas.viewer, pipeline=pipeline)
    with pytest.raises(Conflict, match="no Project Admin left"):
        revoke_role(assignment=RoleAssignment.objects.get(user=personas.admin, pipeline=None))


def test_only_a_user_with_manage_access_may_assign_change_or_revoke(personas):
    bob = make_user("bob")
    viewer = RoleAssignment.objects.get(user=personas.viewer)
    before = admin_state(personas.project)
    for actor, refusal in ((personas.executor, Forbidden), (personas.stranger, NotFound)):
        with pytest.raises(refusal):
            assign_role(project=personas.project, role="admin", user=bob, granted_by=actor)
        with pytest.raises(refusal):
            change_role(assignment=viewer, role="admin", changed_by=actor)
        with pytest.raises(refusal):
            revoke_role(assignment=viewer, revoked_by=actor)
    assert admin_state(personas.project) == before
    with pytest.raises(Forbidden, match="You need the Manage access permission on project Web"):
        revoke_role(assignment=viewer, revoked_by=personas.viewer)
    revoke_role(assignment=viewer, revoked_by=make_user("root", is_superuser=True))


@pytest.mark.skipif(
    connection.vendor != "postgresql", reason="row locks: runs on PostgreSQL (integration suite)"
)
def test_two_admins_demoting_each_other_at_once_leave_one_admin(transactional_db):
    """Each demotes the other in its own thread and connection at the same moment. Both have
    passed their permission check and wait for the project's lock (held here until both
    wait): the first to get it wins, the second then finds it would remove the last admin."""
    from tests.helpers.factories import make_project

    project = make_project("acme", "web")
    alice, bob = make_user("alice"), make_user("bob")
    assignments = {
        user: assign_role(project=project, role="admin", user=user) for user in (alice, bob)
    }
    outcomes: dict[str, str] = {}

    def demote(actor, other) -> None:
        try:
            change_role(assignment=assignments[other], role="viewer", changed_by=actor)
            outcomes[actor.username] = "done"
        except Conflict as refusal:
            outcomes[actor.username] = refusal.message
        finally:
            connection.close()

    def waiting_for_locks() -> bool:
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_locks WHERE NOT granted")
            return cursor.fetchone()[0] >= 2

    threads = [threading.Thread(target=demote, args=pair) for pair in ((alice, bob), (bob, alice))]
    with transaction.atomic():
        Project.objects.select_for_update().get(pk=project.pk)
        for thread in threads:
            thread.start()
        wait_for(waiting_for_locks, timeout=30, message="both demotions to wait for the lock")
    for thread in threads:
        thread.join(timeout=30)
    results = sorted(outcomes.values(), key=lambda outcome: outcome != "done")
    assert len(results) == 2 and results[0] == "done"
    assert "no Project Admin left" in results[1]
    admins = RoleAssignment.objects.filter(project=project, role="admin", pipeline=None)
    assert admins.count() == 1
