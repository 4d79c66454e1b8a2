"""The project's secret store (issue 15, "Project secrets"): Project Admins set, replace and
delete secrets on a page and in the admin, values are encrypted and never shown again, every
change is audited, pipelines refer to them as ``<+secrets.NAME>`` and steps see them masked."""

from __future__ import annotations

import pytest
from django.db import connection
from django.urls import reverse

from executions.models import Execution, LogChunk, Status
from executions.services import run_pipeline
from pipelines.models import AuditEvent, ProjectSecret
from pipelines.secrets import delete_secret, set_secret
from pipelines.services import save_pipeline
from pipelines.spec.errors import SpecErrors
from tests.helpers.factories import make_pipeline, serial_pipeline, shell_stage
from tests.helpers.runs import drive, wait_for_status

VALUE = "s3cr3t-Deploy-Key-991"


def page_url(org: str = "acme", project: str = "web") -> str:
    return reverse("project_secrets", args=[org, project])


def stored_value(secret: ProjectSecret) -> str:
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT value FROM {ProjectSecret._meta.db_table} WHERE id = %s", [secret.pk]
        )
        return cursor.fetchone()[0]


# --- the page: who may use it ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("persona", "status"),
    [("admin", 200), ("executor", 403), ("viewer", 403), ("approver", 403), ("stranger", 404)],
)
def test_only_project_admins_may_use_the_page(client, personas, persona, status):
    set_secret(project=personas.project, name="token", value=VALUE, user=None)
    client.force_login(getattr(personas, persona))
    assert client.get(page_url()).status_code == status
    posts = [
        (page_url(), {"name": "other", "value": "x"}),
        (reverse("project_secret_replace", args=["acme", "web", "token"]), {"value": "y"}),
        (reverse("project_secret_delete", args=["acme", "web", "token"]), {}),
    ]
    for url, data in posts:
        assert client.post(url, data).status_code == (302 if status == 200 else status), url
    if status != 200:  # nothing changed, nothing audited but the first creation
        assert ProjectSecret.objects.get(project=personas.project).name == "token"
        actions = AuditEvent.objects.filter(action__startswith="secret.").values_list(
            "action", flat=True
        )
        assert list(actions) == ["secret.created"]


def test_the_project_and_access_pages_link_to_it_for_admins_only(client, personas):
    client.force_login(personas.admin)
    assert page_url() in client.get(reverse("project", args=["acme", "web"])).content.decode()
    assert (
        page_url() in client.get(reverse("project_access", args=["acme", "web"])).content.decode()
    )
    client.force_login(personas.executor)
    assert page_url() not in client.get(reverse("project", args=["acme", "web"])).content.decode()


# --- values: write-only, encrypted, audited -------------------------------------------------


def test_add_replace_delete_never_show_the_value_and_are_audited(client, personas):
    client.force_login(personas.admin)
    response = client.post(page_url(), {"name": "deploy_key", "value": VALUE}, follow=True)
    html = response.content.decode()
    assert "Added secret deploy_key" in html and VALUE not in html
    secret = ProjectSecret.objects.get(project=personas.project, name="deploy_key")
    assert VALUE not in stored_value(secret)  # encrypted at rest

    client.post(
        reverse("project_secret_replace", args=["acme", "web", "deploy_key"]),
        {"value": VALUE + "-2"},
    )
    html = client.get(page_url()).content.decode()
    assert "deploy_key" in html and "set" in html and VALUE not in html

    client.post(reverse("project_secret_delete", args=["acme", "web", "deploy_key"]))
    assert not ProjectSecret.objects.filter(project=personas.project).exists()
    events = list(
        AuditEvent.objects.filter(project=personas.project, action__startswith="secret.")
        .order_by("id")
        .values_list("action", "detail", "actor__username")
    )
    assert events == [
        ("secret.created", "secret deploy_key", "admin"),
        ("secret.replaced", "secret deploy_key", "admin"),
        ("secret.deleted", "secret deploy_key", "admin"),
    ]
    assert not AuditEvent.objects.filter(detail__contains=VALUE).exists()


def test_a_refused_form_does_not_echo_the_value(client, personas):
    set_secret(project=personas.project, name="token", value="one", user=None)
    client.force_login(personas.admin)
    for data in ({"name": "token", "value": VALUE}, {"name": "bad name", "value": VALUE}):
        response = client.post(page_url(), data)
        assert response.status_code == 400
        assert VALUE not in response.content.decode()


def test_the_admin_adds_and_replaces_write_only(client, personas):
    client.force_login(personas.admin)  # staff, Project Admin of acme/web
    response = client.post(
        reverse("admin:pipelines_projectsecret_add"),
        {"project": personas.project.pk, "name": "api_key", "new_value": VALUE},
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    secret = ProjectSecret.objects.get(name="api_key")
    change = reverse("admin:pipelines_projectsecret_change", args=[secret.pk])
    html = client.get(change).content.decode()
    assert VALUE not in html and VALUE not in stored_value(secret)
    client.post(change, {"new_value": "replaced-value"})
    assert AuditEvent.objects.filter(action="secret.replaced", actor=personas.admin).exists()
    other = set_secret(project=personas.other_project, name="theirs", value="x", user=None)[0]
    assert (
        client.get(reverse("admin:pipelines_projectsecret_change", args=[other.pk])).status_code
        == 404
    )


# --- YAML: references and literals ------------------------------------------------------------

USES_SECRET = serial_pipeline(
    "uses_secret",
    [
        shell_stage(
            "call",
            """
            echo "key is <+secrets.deploy_key>"
            [ "<+secrets.deploy_key>" = "s3cr3t-Deploy-Key-991" ] && echo "the step has the value"
            echo "leak=<+pipeline.variables.key>" >> "$STAGELINE_OUTPUT"
            """,
        )
    ],
    variables="- {name: key, type: Secret, value: <+secrets.deploy_key>}",
)


def test_a_reference_to_a_missing_secret_is_refused_at_save_with_its_line(personas):
    with pytest.raises(SpecErrors) as refused:
        save_pipeline(project=personas.project, yaml_text=USES_SECRET)
    messages = [str(error) for error in refused.value.errors]
    assert "line 6: the project has no secret 'deploy_key'" in messages[0]
    assert any(m.startswith("line 19: the project has no secret 'deploy_key'") for m in messages)


def test_a_literal_secret_is_refused_at_save_pointing_to_the_store(personas):
    literal = USES_SECRET.replace("<+secrets.deploy_key>}", '"hunter2"}')
    set_secret(project=personas.project, name="deploy_key", value=VALUE, user=None)
    with pytest.raises(SpecErrors) as refused:
        save_pipeline(project=personas.project, yaml_text=literal)
    assert str(refused.value.errors[0]).startswith(
        "line 6: the value of Secret variable 'key' is a literal secret in the YAML"
    )
    assert "<+secrets.key>" in str(refused.value) and "hunter2" not in str(refused.value)


def test_a_step_gets_the_value_and_logs_and_outputs_mask_it(personas):
    set_secret(project=personas.project, name="deploy_key", value=VALUE, user=None)
    pipeline = make_pipeline(personas.project, USES_SECRET)
    execution = drive(run_pipeline(pipeline=pipeline, user=personas.executor, inputs={}))
    assert execution.status == Status.SUCCESS
    log = "".join(
        LogChunk.objects.filter(step_run__execution=execution).values_list("text", flat=True)
    )
    assert "key is ***" in log and "the step has the value" in log and VALUE not in log
    assert execution.stage_runs.get().outputs == {"leak": "***"}


def test_a_secret_deleted_after_saving_fails_the_step_clearly(personas):
    set_secret(project=personas.project, name="deploy_key", value=VALUE, user=None)
    pipeline = make_pipeline(personas.project, USES_SECRET)
    delete_secret(project=personas.project, name="deploy_key", user=None)
    execution = drive(run_pipeline(pipeline=pipeline, user=personas.executor, inputs={}))
    assert execution.status == Status.FAILED
    step = execution.step_runs.get()
    assert "the project has no secret 'deploy_key' any more" in step.error


@pytest.mark.engine
def test_a_worker_runs_a_step_with_a_project_secret(worker, personas):
    """On the integration suite: a worker process on PostgreSQL + Redis decrypts the value."""
    set_secret(project=personas.project, name="deploy_key", value=VALUE, user=None)
    pipeline = make_pipeline(personas.project, USES_SECRET)
    execution = run_pipeline(pipeline=pipeline, user=personas.executor, inputs={})
    execution = wait_for_status(execution, Status.SUCCESS)
    log = "".join(
        LogChunk.objects.filter(step_run__execution=execution).values_list("text", flat=True)
    )
    assert "the step has the value" in log and VALUE not in log
    assert Execution.objects.get(pk=execution.pk).stage_runs.get().outputs == {"leak": "***"}
