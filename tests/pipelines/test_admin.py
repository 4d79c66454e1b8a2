"""The Django admin: a staff Project Admin sees and edits only their projects; role
assignments edited there grant and revoke guardian permissions like everywhere else."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.contrib.auth.models import Group
from django.urls import reverse

from executions.models import Event, Execution, StageRun, StepRun
from executions.services import run_pipeline
from pipelines import permissions
from pipelines.models import AuditEvent, Pipeline, PipelineVersion, Project, RoleAssignment
from pipelines.roles import assign_role
from tests.helpers.factories import (
    make_pipeline,
    make_project,
    make_user,
    serial_pipeline,
    shell_stage,
)

SCOPED_MODELS = [
    Project,
    Pipeline,
    PipelineVersion,
    RoleAssignment,
    AuditEvent,
    Execution,
    StageRun,
    StepRun,
    Event,
]


def pipeline_in(project, identifier: str = "deploy") -> Pipeline:
    return make_pipeline(
        project, serial_pipeline(identifier, [shell_stage("build", "echo building")])
    )


def changelist(model) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")


def change(obj) -> str:
    return reverse(f"admin:{obj._meta.app_label}_{obj._meta.model_name}_change", args=[obj.pk])


@pytest.fixture
def world(personas):
    pipeline = pipeline_in(personas.project)
    other_pipeline = pipeline_in(personas.other_project)
    run_pipeline(pipeline=pipeline, user=personas.admin, inputs={})
    run_pipeline(pipeline=other_pipeline, user=personas.stranger, inputs={})
    # The stranger administers the other project from the admin too.
    personas.stranger.is_staff = True
    personas.stranger.save(update_fields=["is_staff"])
    return personas, pipeline, other_pipeline


@pytest.mark.parametrize("model", SCOPED_MODELS, ids=lambda m: m.__name__)
def test_every_changelist_shows_a_project_admin_the_rows_of_their_projects_only(
    client, world, model
):
    personas, _, _ = world
    client.force_login(personas.admin)
    response = client.get(changelist(model))
    assert response.status_code == 200
    model_admin = admin.site._registry[model]
    rows = list(response.context["cl"].result_list)
    assert rows, f"{model.__name__}: the project admin should see their own rows"
    assert {model_admin.project_of(row) for row in rows} == {personas.project}


@pytest.mark.parametrize("model", SCOPED_MODELS, ids=lambda m: m.__name__)
def test_the_change_page_of_another_projects_row_is_404(client, world, model):
    personas, _, _ = world
    client.force_login(personas.admin)
    model_admin = admin.site._registry[model]
    foreign = next(
        row for row in model.objects.all() if model_admin.project_of(row) == personas.other_project
    )
    assert client.get(change(foreign)).status_code == 404
    assert client.post(change(foreign), {}).status_code == 404


def test_a_superuser_sees_every_project(client, world):
    client.force_login(make_user("root", is_superuser=True, is_staff=True))
    response = client.get(changelist(Project))
    assert set(response.context["cl"].result_list) == set(Project.objects.all())


def test_a_staff_user_who_administers_no_project_sees_no_stageline_models(client, world):
    personas, _, _ = world
    staff = make_user("clerk", is_staff=True)
    assign_role(project=personas.project, role="executor", user=staff)
    client.force_login(staff)
    index = client.get(reverse("admin:index"))
    assert index.status_code == 200
    assert not [
        app for app in index.context["app_list"] if app["app_label"] in ("pipelines", "executions")
    ]
    assert client.get(changelist(Pipeline)).status_code == 403


@pytest.mark.parametrize("name", ["executor", "viewer", "approver"])
def test_users_who_are_not_staff_are_sent_to_the_admin_login(client, world, name):
    personas, _, _ = world
    client.force_login(personas.all()[name])
    response = client.get(changelist(Project))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


def test_the_admin_index_lists_the_models_a_project_admin_may_open(client, world):
    personas, _, _ = world
    client.force_login(personas.admin)
    index = client.get(reverse("admin:index"))
    listed = {m["object_name"] for app in index.context["app_list"] for m in app["models"]}
    assert {"Project", "Pipeline", "RoleAssignment", "Execution"} <= listed
    assert "Organization" not in listed and "User" not in listed


@pytest.mark.parametrize("model", [Pipeline, RoleAssignment], ids=lambda m: m.__name__)
def test_the_project_filter_offers_only_administered_projects(client, world, model):
    personas, _, _ = world
    second = make_project("acme", "api")
    pipeline_in(second)
    assign_role(project=second, role="admin", user=personas.admin)
    client.force_login(personas.admin)
    specs = client.get(changelist(model)).context["cl"].filter_specs
    project_filter = next(spec for spec in specs if getattr(spec, "field_path", "") == "project")
    assert sorted(label for _, label in project_filter.lookup_choices) == ["acme/api", "acme/web"]


def test_adding_a_role_assignment_in_the_admin_grants_its_permissions(client, world):
    personas, pipeline, _ = world
    bob = make_user("bob")
    client.force_login(personas.admin)
    response = client.post(
        reverse("admin:pipelines_roleassignment_add"),
        {
            "project": personas.project.pk,
            "user": bob.pk,
            "group": "",
            "pipeline": pipeline.pk,
            "role": "executor",
        },
    )
    assert response.status_code == 302
    assignment = RoleAssignment.objects.get(user=bob)
    assert assignment.granted_by == personas.admin
    assert permissions.can(bob, "execute", pipeline)


def test_the_assignment_form_offers_only_administered_projects_and_their_pipelines(client, world):
    personas, pipeline, _ = world
    client.force_login(personas.admin)
    form = client.get(reverse("admin:pipelines_roleassignment_add")).context["adminform"].form
    assert list(form.fields["project"].queryset) == [personas.project]
    assert list(form.fields["pipeline"].queryset) == [pipeline]


@pytest.mark.parametrize(
    "data, message",
    [
        ({"project": "OTHER", "user": "BOB", "role": "viewer"}, "Select a valid choice"),
        (
            {"project": "OWN", "user": "BOB", "pipeline": "OTHER_PIPELINE", "role": "viewer"},
            "Select a valid choice",
        ),
        ({"project": "OWN", "role": "viewer"}, "Choose a user or a group"),
        (
            {"project": "OWN", "user": "BOB", "group": "OPS", "role": "viewer"},
            "Choose a user or a group",
        ),
        ({"project": "OWN", "user": "VIEWER", "role": "admin"}, "already exists"),
    ],
)
def test_a_bad_assignment_in_the_admin_is_refused_with_a_message_and_changes_nothing(
    client, world, data, message
):
    personas, _, other_pipeline = world
    values = {
        "OWN": personas.project.pk,
        "OTHER": personas.other_project.pk,
        "OTHER_PIPELINE": other_pipeline.pk,
        "BOB": make_user("bob").pk,
        "VIEWER": personas.viewer.pk,
        "OPS": Group.objects.create(name="ops").pk,
    }
    posted = {"user": "", "group": "", "pipeline": ""} | {
        k: values.get(v, v) for k, v in data.items()
    }
    before = list(RoleAssignment.objects.values_list("id", "role"))
    client.force_login(personas.admin)
    response = client.post(reverse("admin:pipelines_roleassignment_add"), posted)
    assert response.status_code == 200
    assert message in response.content.decode()
    assert list(RoleAssignment.objects.values_list("id", "role")) == before


def test_changing_a_role_in_the_admin_changes_only_the_role(client, world):
    personas, _, _ = world
    assignment = RoleAssignment.objects.get(user=personas.viewer)
    client.force_login(personas.admin)
    response = client.post(
        change(assignment),
        {
            "project": personas.other_project.pk,
            "user": personas.executor.pk,
            "group": "",
            "pipeline": "",
            "role": "approver",
        },
    )
    assert response.status_code == 302
    assignment.refresh_from_db()
    assert (assignment.project, assignment.user, assignment.role) == (
        personas.project,
        personas.viewer,
        "approver",
    )
    assert permissions.can(personas.viewer, "approve", personas.project)
    assert RoleAssignment.objects.get(user=personas.executor).role == "executor"


def test_deleting_an_assignment_in_the_admin_revokes_its_permissions(client, world):
    personas, _, _ = world
    assignment = RoleAssignment.objects.get(user=personas.executor)
    client.force_login(personas.admin)
    response = client.post(
        reverse("admin:pipelines_roleassignment_delete", args=[assignment.pk]), {"post": "yes"}
    )
    assert response.status_code == 302
    assert not RoleAssignment.objects.filter(pk=assignment.pk).exists()
    assert not permissions.can(personas.executor, "view", personas.project)


def test_the_bulk_action_revokes_through_roles_and_bulk_delete_is_not_offered(client, world):
    personas, _, _ = world
    chosen = list(RoleAssignment.objects.filter(user__in=[personas.executor, personas.viewer]))
    client.force_login(personas.admin)
    page = client.get(changelist(RoleAssignment))
    assert "delete_selected" not in page.context["action_form"].fields["action"].choices.__repr__()
    response = client.post(
        changelist(RoleAssignment),
        {"action": "revoke_selected", "_selected_action": [a.pk for a in chosen]},
        follow=True,
    )
    assert "Revoked 2 role assignment(s)." in [str(m) for m in response.context["messages"]]
    assert not RoleAssignment.objects.filter(pk__in=[a.pk for a in chosen]).exists()
    assert not permissions.can(personas.executor, "view", personas.project)
    assert not permissions.can(personas.viewer, "view", personas.project)


def test_a_project_admin_cannot_remove_or_demote_the_last_project_admin_in_the_admin(client, world):
    personas, _, _ = world
    assignment = RoleAssignment.objects.get(user=personas.admin)
    client.force_login(personas.admin)
    demote = client.post(
        change(assignment),
        {"project": personas.project.pk, "user": personas.admin.pk, "role": "viewer"},
    )
    assert demote.status_code == 200
    assert "no Project Admin left" in demote.content.decode()
    delete = client.post(
        reverse("admin:pipelines_roleassignment_delete", args=[assignment.pk]), {"post": "yes"}
    )
    assert delete.status_code == 302
    bulk = client.post(
        changelist(RoleAssignment),
        {"action": "revoke_selected", "_selected_action": [assignment.pk]},
    )
    assert bulk.status_code == 302
    assert RoleAssignment.objects.get(pk=assignment.pk).role == "admin"
    assert permissions.can(personas.admin, "manage_access", personas.project)


def inline_data(project, rows: list[dict], initial: int) -> dict:
    data = {
        "name": project.name,
        "slug": project.slug,
        "description": project.description,
        "role_assignments-TOTAL_FORMS": str(len(rows)),
        "role_assignments-INITIAL_FORMS": str(initial),
        "role_assignments-MIN_NUM_FORMS": "0",
        "role_assignments-MAX_NUM_FORMS": "1000",
    }
    for index, row in enumerate(rows):
        for key, value in row.items():
            data[f"role_assignments-{index}-{key}"] = "" if value is None else value
    return data


def existing_rows(project) -> list[dict]:
    return [
        {
            "id": a.pk,
            "project": project.pk,
            "user": a.user_id,
            "group": a.group_id,
            "pipeline": a.pipeline_id,
            "role": a.role,
        }
        for a in RoleAssignment.objects.filter(project=project).order_by("project_id", "role", "id")
    ]


def test_the_project_page_edits_role_assignments_inline_through_roles(client, world):
    personas, pipeline, _ = world
    bob = make_user("bob")
    rows = existing_rows(personas.project)
    for row in rows:
        if row["user"] == personas.viewer.pk:
            row["role"] = "executor"
        if row["user"] == personas.approver.pk:
            row["DELETE"] = "on"
    rows.append(
        {"project": personas.project.pk, "user": bob.pk, "pipeline": pipeline.pk, "role": "viewer"}
    )
    client.force_login(personas.admin)
    response = client.post(
        change(personas.project), inline_data(personas.project, rows, initial=len(rows) - 1)
    )
    assert response.status_code == 302, response.context["inline_admin_formsets"][0].formset.errors
    assert permissions.can(personas.viewer, "execute", personas.project)
    assert not permissions.can(personas.approver, "view", personas.project)
    assert permissions.can(bob, "view", pipeline)
    assert list(permissions.visible_pipelines(bob)) == [pipeline]
    assert set(
        AuditEvent.objects.filter(actor=personas.admin).values_list("action", flat=True)
    ) == {"role.assigned", "role.changed", "role.revoked"}


def test_the_inline_refuses_a_pipeline_of_another_project_and_the_last_admins_removal(
    client, world
):
    personas, _, other_pipeline = world
    client.force_login(personas.admin)
    rows = existing_rows(personas.project) + [
        {
            "project": personas.project.pk,
            "user": make_user("bob").pk,
            "pipeline": other_pipeline.pk,
            "role": "viewer",
        }
    ]
    response = client.post(
        change(personas.project), inline_data(personas.project, rows, initial=len(rows) - 1)
    )
    assert response.status_code == 200
    assert "Select a valid choice" in response.content.decode()

    rows = existing_rows(personas.project)
    for row in rows:
        if row["user"] == personas.admin.pk:
            row["DELETE"] = "on"
    response = client.post(
        change(personas.project), inline_data(personas.project, rows, initial=len(rows))
    )
    assert response.status_code == 200
    assert "no Project Admin left" in response.content.decode()
    assert permissions.can(personas.admin, "manage_access", personas.project)


def test_a_project_admin_cannot_move_a_project_or_a_pipeline_elsewhere(client, world):
    personas, pipeline, _ = world
    elsewhere = make_project("globex", "moved")
    client.force_login(personas.admin)
    client.post(
        change(pipeline), {"project": elsewhere.pk, "identifier": "renamed", "name": "Renamed"}
    )
    pipeline.refresh_from_db()
    assert (pipeline.project, pipeline.identifier) == (personas.project, "deploy")
    rows = existing_rows(personas.project)
    data = inline_data(personas.project, rows, initial=len(rows)) | {
        "organization": elsewhere.organization.pk
    }
    client.post(change(personas.project), data)
    personas.project.refresh_from_db()
    assert personas.project.organization.slug == "acme"


@pytest.mark.parametrize("model", [Project, Pipeline], ids=lambda m: m.__name__)
def test_guardians_object_permission_pages_are_for_superusers_only(client, world, model):
    """Roles are the only way a Project Admin grants rights (issue 15, finding 4)."""
    personas, pipeline, other_pipeline = world
    own, foreign = {
        Project: (personas.project, personas.other_project),
        Pipeline: (pipeline, other_pipeline),
    }[model]
    name = f"admin:pipelines_{model._meta.model_name}_permissions"
    user_page = f"admin:pipelines_{model._meta.model_name}_permissions_manage_user"
    client.force_login(personas.admin)
    for obj, status in ((own, 403), (foreign, 404)):
        assert client.get(reverse(name, args=[obj.pk])).status_code == status
        page = reverse(user_page, args=[obj.pk, personas.viewer.pk])
        assert client.get(page).status_code == status
    client.force_login(make_user("root", is_superuser=True, is_staff=True))
    assert client.get(reverse(name, args=[own.pk])).status_code == 200


def test_a_superusers_grant_on_guardians_page_counts_at_once(client, world):
    personas, pipeline, _ = world
    sibling = pipeline_in(personas.project, "sibling")
    bob = make_user("bob")
    client.force_login(make_user("root", is_superuser=True, is_staff=True))
    url = reverse("admin:pipelines_pipeline_permissions_manage_user", args=[pipeline.pk, bob.pk])
    response = client.post(url, {"permissions": ["view_pipeline", "execute_pipeline"]})
    assert response.status_code == 302
    assert permissions.can(bob, "execute", pipeline)
    assert not permissions.can(bob, "view", sibling)
