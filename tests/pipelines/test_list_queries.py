"""The project and pipeline lists are filtered by permission in the query: the number of
queries a page makes does not grow with the number of rows the user may see."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from executions.models import Execution
from executions.services import run_pipeline
from pipelines import permissions
from pipelines.roles import assign_role
from tests.helpers.factories import (
    make_pipeline,
    make_project,
    make_user,
    serial_pipeline,
    shell_stage,
)

SIZES = (5, 50)


def pipeline_in(project, identifier: str):
    return make_pipeline(
        project, serial_pipeline(identifier, [shell_stage("build", "echo building")])
    )


def queries(client, url: str) -> tuple[int, object]:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url)
    assert response.status_code == 200
    return len(captured), response


@pytest.fixture
def home_users(db):
    """One user per size, seeing that many projects: a third by their own role, a third by a
    group's role, a third by a role on one pipeline only; plus projects they may not see."""
    users = {}
    for size in SIZES:
        user = make_user(f"reader{size}")
        group = Group.objects.create(name=f"readers{size}")
        user.groups.add(group)
        for index in range(size):
            project = make_project(f"org{size}", f"p{index}")
            if index % 3 == 0:
                assign_role(project=project, role="viewer", user=user)
            elif index % 3 == 1:
                assign_role(project=project, role="viewer", group=group)
            else:
                assign_role(
                    project=project,
                    role="executor",
                    user=user,
                    pipeline=pipeline_in(project, "only"),
                )
        make_project(f"org{size}", "unseen")
        users[size] = user
    return users


def test_the_project_list_makes_as_many_queries_for_50_projects_as_for_5(client, home_users):
    counts = {}
    for size, user in home_users.items():
        client.force_login(user)
        counts[size], response = queries(client, reverse("home"))
        assert len(list(response.context["projects"])) == size
        assert "unseen" not in response.content.decode()
    assert counts[5] == counts[50]


@pytest.fixture
def projects(db):
    """A project per size with that many pipelines, each with an execution; the user sees them
    all through a project role, a second user through one role per pipeline."""
    admin = make_user("owner")
    by_project, by_pipeline = make_user("reader"), make_user("picker")
    result = {}
    for size in SIZES:
        project = make_project("acme", f"size{size}")
        assign_role(project=project, role="admin", user=admin)
        assign_role(project=project, role="viewer", user=by_project)
        for index in range(size):
            pipeline = pipeline_in(project, f"pipeline_{index}")
            run_pipeline(pipeline=pipeline, user=admin, inputs={})
            assign_role(project=project, role="executor", user=by_pipeline, pipeline=pipeline)
        pipeline_in(make_project("globex", f"other{size}"), "elsewhere")
        result[size] = project
    return result, by_project, by_pipeline


@pytest.mark.parametrize("reader", ["project role", "pipeline roles"])
def test_the_pipeline_list_makes_as_many_queries_for_50_pipelines_as_for_5(
    client, projects, reader
):
    by_size, by_project, by_pipeline = projects
    client.force_login(by_project if reader == "project role" else by_pipeline)
    counts = {}
    for size, project in by_size.items():
        counts[size], response = queries(client, reverse("project", args=["acme", project.slug]))
        assert len(list(response.context["pipelines"])) == size
        assert "elsewhere" not in response.content.decode()
    assert counts[5] == counts[50]


def test_the_visible_lists_take_a_fixed_number_of_queries_whatever_their_length(
    projects, django_assert_num_queries
):
    by_size, by_project, by_pipeline = projects
    for user in (by_project, by_pipeline):
        with django_assert_num_queries(1):
            assert len(list(permissions.visible_projects(user))) == 2
        with django_assert_num_queries(1):
            assert len(list(permissions.visible_pipelines(user))) == 55
        # the visible pipelines' ids first (cheaper for the planner than a sub-select), then the rows
        with django_assert_num_queries(2):
            assert len(list(Execution.objects.visible_to(user))) == 55


def test_every_admin_list_makes_as_many_queries_for_50_projects_as_for_5(client, db):
    from django.contrib import admin

    from pipelines.admin import ScopedAdmin

    staff = {}
    for size in SIZES:
        staff[size] = make_user(f"staff{size}", is_staff=True)
        for index in range(size):
            project = make_project(f"org{size}", f"p{index}")
            assign_role(project=project, role="admin", user=staff[size])
            run_pipeline(pipeline=pipeline_in(project, "deploy"), user=staff[size], inputs={})
    scoped = [
        m for m, model_admin in admin.site._registry.items() if isinstance(model_admin, ScopedAdmin)
    ]
    for model in scoped:
        url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
        counts = {}
        for size in SIZES:
            client.force_login(staff[size])
            counts[size], response = queries(client, url)
        assert counts[5] == counts[50], (
            f"{model.__name__}: {counts[5]} queries for 5 projects, {counts[50]} for 50"
        )
