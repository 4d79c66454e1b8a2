"""Navigation: log in and out, the projects a user sees, a project's pipelines and executions."""

from __future__ import annotations

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from executions.models import Execution, Status
from tests.helpers import factories

pytestmark = pytest.mark.django_db

MEMBERS = ["admin", "executor", "viewer", "approver"]


def simple_pipeline(identifier: str) -> str:
    return factories.serial_pipeline(identifier, [factories.shell_stage("build", "echo hi")])


def add_execution(pipeline, status: str, user=None) -> Execution:
    pipeline.last_sequence += 1
    pipeline.save(update_fields=["last_sequence"])
    return Execution.objects.create(
        pipeline=pipeline,
        version=pipeline.current_version,
        sequence=pipeline.last_sequence,
        status=status,
        triggered_by=user,
    )


@pytest.fixture
def project_url(personas) -> str:
    return reverse("project", args=["acme", "web"])


# --- logging in and out -----------------------------------------------------------------------


def test_anonymous_visitors_are_sent_to_the_login_page(client, personas):
    factories.make_pipeline(personas.project, simple_pipeline("web_deploy"))
    for url in (
        reverse("home"),
        reverse("project", args=["acme", "web"]),
        reverse("pipeline", args=["acme", "web", "web_deploy"]),
    ):
        response = client.get(url)
        assert response.status_code == 302
        assert response.url.startswith(reverse("login") + "?next=")


def test_the_login_page_logs_in_and_lands_on_the_projects(client, personas):
    page = client.get(reverse("login"))
    assert page.status_code == 200
    assert 'name="username"' in page.content.decode() and 'name="password"' in page.content.decode()
    response = client.post(reverse("login"), {"username": "viewer", "password": "pw"}, follow=True)
    assert response.redirect_chain[-1][0] == reverse("home")
    assert ">viewer<" in response.content.decode()


def test_a_wrong_password_is_refused_with_a_message(client, personas):
    response = client.post(reverse("login"), {"username": "viewer", "password": "nope"})
    assert response.status_code == 200
    assert "Please enter a correct username and password" in response.content.decode()
    assert "_auth_user_id" not in client.session


def test_log_out_is_a_post_that_ends_the_session(client, personas):
    client.force_login(personas.viewer)
    home = client.get(reverse("home")).content.decode()
    assert f'action="{reverse("logout")}"' in home
    response = client.post(reverse("logout"))
    assert response.status_code == 302 and response.url == reverse("login")
    assert client.get(reverse("home")).status_code == 302


# --- home ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("persona", MEMBERS)
def test_members_see_their_project_on_the_home_page(client, personas, persona):
    client.force_login(getattr(personas, persona))
    html = client.get(reverse("home")).content.decode()
    assert reverse("project", args=["acme", "web"]) in html
    assert reverse("project", args=["globex", "ops"]) not in html


def test_a_stranger_sees_only_their_own_project(client, personas):
    client.force_login(personas.stranger)
    html = client.get(reverse("home")).content.decode()
    assert reverse("project", args=["globex", "ops"]) in html
    assert reverse("project", args=["acme", "web"]) not in html


def test_a_user_without_roles_is_told_how_to_get_one(client, personas):
    client.force_login(factories.make_user("newcomer"))
    html = client.get(reverse("home")).content.decode()
    assert "You have no access to any project yet" in html
    assert "/p/" not in html


# --- project page -------------------------------------------------------------------------------


@pytest.mark.parametrize("persona", MEMBERS)
def test_the_project_page_lists_pipelines_with_their_last_execution(
    client, personas, project_url, persona
):
    web = factories.make_pipeline(personas.project, simple_pipeline("web_deploy"))
    factories.make_pipeline(personas.project, simple_pipeline("data_refresh"))
    add_execution(web, Status.SUCCESS)
    last = add_execution(web, Status.FAILED)
    client.force_login(getattr(personas, persona))
    response = client.get(project_url)
    html = response.content.decode()
    assert response.status_code == 200
    row = re.search(
        r"<tr>\s*<td data-label=\"Pipeline\"><a href=\"[^\"]*/web_deploy/\">.*?</tr>", html, re.S
    ).group(0)
    assert f'<a href="/executions/{last.pk}/">#{last.sequence}</a>' in row
    assert '<span class="badge status-failed">Failed</span>' in row
    data_row = re.search(
        r"<tr>\s*<td data-label=\"Pipeline\"><a href=\"[^\"]*/data_refresh/\">.*?</tr>", html, re.S
    ).group(0)
    assert "Never run" in data_row


def test_a_stranger_gets_404_for_the_project(client, personas, project_url):
    client.force_login(personas.stranger)
    assert client.get(project_url).status_code == 404
    assert client.get(reverse("project", args=["acme", "missing"])).status_code == 404


def test_run_is_offered_to_executors_and_disabled_with_the_reason_for_viewers(
    client, personas, project_url
):
    factories.make_pipeline(personas.project, simple_pipeline("web_deploy"))
    run_url = reverse("pipeline_run", args=["acme", "web", "web_deploy"])
    client.force_login(personas.executor)
    html = client.get(project_url).content.decode()
    assert f'hx-get="{run_url}" hx-target="#modal-body"' in html
    for persona in ("viewer", "approver"):
        client.force_login(getattr(personas, persona))
        html = client.get(project_url).content.decode()
        assert f'hx-get="{run_url}"' not in html
        assert re.search(r"<button[^>]*disabled[^>]*>Run</button>", html)
        assert "You need the Execute permission on pipeline web_deploy." in html


def test_only_a_project_admin_sees_the_access_link(client, personas, project_url):
    access = reverse("project_access", args=["acme", "web"])
    client.force_login(personas.admin)
    assert access in client.get(project_url).content.decode()
    for persona in ("executor", "viewer", "approver"):
        client.force_login(getattr(personas, persona))
        assert access not in client.get(project_url).content.decode()


def test_a_pipeline_grant_shows_the_project_with_that_pipeline_only(client, personas, project_url):
    web = factories.make_pipeline(personas.project, simple_pipeline("web_deploy"))
    factories.make_pipeline(personas.project, simple_pipeline("data_refresh"))
    solo = factories.make_user("solo")
    factories.grant(solo, personas.project, "executor", pipeline=web)
    client.force_login(solo)
    assert project_url in client.get(reverse("home")).content.decode()
    html = client.get(project_url).content.decode()
    assert "web_deploy" in html
    assert "data_refresh" not in html


def test_the_project_page_costs_the_same_queries_for_2_and_8_pipelines(
    client, personas, project_url
):
    client.force_login(personas.viewer)
    for name in ("p1", "p2"):
        pipeline = factories.make_pipeline(personas.project, simple_pipeline(name))
        add_execution(pipeline, Status.SUCCESS, personas.executor)

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert client.get(project_url).status_code == 200
        return len(captured.captured_queries)

    small = queries()
    for name in ("p3", "p4", "p5", "p6", "p7", "p8"):
        pipeline = factories.make_pipeline(personas.project, simple_pipeline(name))
        add_execution(pipeline, Status.FAILED, personas.admin)
    assert queries() == small
