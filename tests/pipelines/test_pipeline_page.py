"""The pipeline page: definition (read-only and editor), version history and the Run dialog."""

from __future__ import annotations

import re
import textwrap

import pytest
from django.urls import reverse

from executions.models import Execution
from pipelines.models import AuditEvent, Pipeline, PipelineVersion
from pipelines.secrets import set_secret
from pipelines.services import save_pipeline
from tests.helpers import factories

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}
MEMBERS = ["admin", "executor", "viewer", "approver"]

RELEASE = textwrap.dedent(
    """\
    pipeline:
      name: Release
      identifier: release
      allow_stage_selection: true
      variables:
        - name: version
          type: String
          value: <+input>
          allowed_values: ["1.0", "2.0"]
          required: true
        - name: replicas
          type: Number
          value: <+input>
          default: "2"
        - name: token
          type: Secret
          value: <+input>
          required: true
        - name: api_key
          type: Secret
          value: <+secrets.api_key>
      stages:
        - stage:
            identifier: build
            name: Build
            variables:
              - {name: target, type: String, value: <+input>, default: linux}
            steps:
              - step:
                  identifier: compile
                  type: ShellScript
                  timeout: 1m
                  spec:
                    script: |
                      echo "image=web:<+pipeline.variables.version>" >> "$STAGELINE_OUTPUT"
        - stage:
            identifier: deploy
            name: Deploy
            steps:
              - step:
                  identifier: roll
                  type: ShellScript
                  timeout: 1m
                  spec:
                    script: echo "deploying <+pipeline.stages.build.output.image>"
    """
)


@pytest.fixture
def release(personas) -> Pipeline:
    set_secret(project=personas.project, name="api_key", value="fixed-secret-value", user=None)
    return factories.make_pipeline(personas.project, RELEASE, user=personas.admin)


def url(name: str) -> str:
    return reverse(name, args=["acme", "web", "release"])


def good_inputs(**overrides) -> dict[str, str | list[str]]:
    values: dict[str, str | list[str]] = {
        "input-version": "2.0",
        "input-replicas": "3",
        "input-token": "hunter2",
        "input-build.target": "arm64",
        "stages": ["build", "deploy"],  # the picker's start: every stage ticked
    }
    values.update(overrides)
    return values


# --- pipeline page ----------------------------------------------------------------------------


@pytest.mark.parametrize("persona", MEMBERS)
def test_members_see_every_pipeline_tab(client, personas, release, persona):
    client.force_login(getattr(personas, persona))
    for name in ("pipeline", "pipeline_definition", "pipeline_history"):
        response = client.get(url(name))
        assert response.status_code == 200, name
        assert "<h1>Release</h1>" in response.content.decode()


def test_a_stranger_gets_404_on_every_pipeline_url(client, personas, release):
    client.force_login(personas.stranger)
    for name in (
        "pipeline",
        "pipeline_definition",
        "pipeline_history",
        "pipeline_edit",
        "pipeline_run",
    ):
        assert client.get(url(name)).status_code == 404, name
        assert client.get(url(name), **HTMX).status_code == 404, name
    assert client.post(url("pipeline_run"), good_inputs()).status_code == 404
    assert client.post(url("pipeline_edit"), {"yaml": RELEASE}).status_code == 404
    assert not Execution.objects.exists()


def test_run_is_a_dialog_button_for_executors_and_disabled_with_the_reason_for_others(
    client, personas, release
):
    for persona in ("admin", "executor"):
        client.force_login(getattr(personas, persona))
        html = client.get(url("pipeline")).content.decode()
        assert f'hx-get="{url("pipeline_run")}" hx-target="#modal-body"' in html
    for persona in ("viewer", "approver"):
        client.force_login(getattr(personas, persona))
        html = client.get(url("pipeline")).content.decode()
        assert f'hx-get="{url("pipeline_run")}"' not in html
        assert re.search(
            r'<button type="button" class="btn btn-primary" disabled aria-describedby="run-reason">',
            html,
        )
        assert (
            '<span class="disabled-reason" id="run-reason">You need the Execute permission on pipeline release.</span>'
            in html
        )


def test_edit_is_offered_only_to_users_with_the_edit_permission(client, personas, release):
    client.force_login(personas.admin)
    assert url("pipeline_edit") in client.get(url("pipeline_definition")).content.decode()
    for persona in ("executor", "viewer", "approver"):
        client.force_login(getattr(personas, persona))
        assert url("pipeline_edit") not in client.get(url("pipeline_definition")).content.decode()


# --- read-only definition ---------------------------------------------------------------------


def test_the_definition_is_shown_read_only_with_line_numbers(client, personas, release):
    client.force_login(personas.viewer)
    html = client.get(url("pipeline_definition")).content.decode()
    assert '<span class="line" id="L1">pipeline:</span>' in html
    assert '<span class="line" id="L3">  identifier: release</span>' in html
    assert html.count('class="line"') == len(RELEASE.splitlines())
    assert "<textarea" not in html
    assert "&lt;+input&gt;" in html  # escaped, never markup


def test_fixed_secret_values_are_masked_in_the_definition_and_history(client, personas, release):
    client.force_login(personas.viewer)
    for name in ("pipeline_definition", "pipeline_history"):
        html = client.get(url(name)).content.decode()
        assert "fixed-secret-value" not in html, name
    definition = client.get(url("pipeline_definition")).content.decode()
    assert "value: &lt;+secrets.api_key&gt;</span>" in definition  # a reference, not a value
    assert "value: &lt;+input&gt;" in definition  # other variables read unchanged


# --- editor -----------------------------------------------------------------------------------


def test_only_editors_may_open_or_post_the_editor(client, personas, release):
    for persona in ("executor", "viewer", "approver"):
        client.force_login(getattr(personas, persona))
        refused = client.get(url("pipeline_edit"))
        assert refused.status_code == 403
        assert "You need the Edit permission on pipeline release." in refused.content.decode()
        assert (
            client.post(
                url("pipeline_edit"), {"yaml": RELEASE.replace("Release", "Hacked")}
            ).status_code
            == 403
        )
    assert PipelineVersion.objects.filter(pipeline=release).count() == 1
    client.force_login(personas.admin)
    html = client.get(url("pipeline_edit")).content.decode()
    assert "<textarea" in html and "identifier: release" in html


def test_saving_a_valid_change_creates_a_version_and_returns_to_the_definition(
    client, personas, release
):
    client.force_login(personas.admin)
    changed = RELEASE.replace("name: Release", "name: Release train", 1)
    response = client.post(url("pipeline_edit"), {"yaml": changed, "base_version": "1"})
    assert response.status_code == 302 and response.url == url("pipeline_definition")
    release.refresh_from_db()
    assert release.current_version.number == 2 and release.name == "Release train"
    assert release.current_version.created_by == personas.admin
    page = client.get(response.url).content.decode()
    assert "Saved version 2 of Release train." in page


def test_saving_with_htmx_redirects_the_browser(client, personas, release):
    client.force_login(personas.admin)
    changed = RELEASE.replace("timeout: 1m", "timeout: 2m", 1)
    response = client.post(url("pipeline_edit"), {"yaml": changed, "base_version": "1"}, **HTMX)
    assert response.status_code == 200
    assert response.headers["HX-Redirect"] == url("pipeline_definition")


def test_saving_the_same_text_creates_no_version(client, personas, release):
    client.force_login(personas.admin)
    response = client.post(
        url("pipeline_edit"), {"yaml": RELEASE, "base_version": "1"}, follow=True
    )
    assert "No changes" in response.content.decode()
    assert PipelineVersion.objects.filter(pipeline=release).count() == 1


def test_invalid_yaml_shows_each_error_at_its_line_and_changes_nothing(client, personas, release):
    client.force_login(personas.admin)
    broken = RELEASE.replace("type: ShellScript", "type: Shell", 1)
    line = next(
        n
        for n, text in enumerate(broken.splitlines(), 1)
        if "type: Shell" in text and "Script" not in text
    )
    audit_before = AuditEvent.objects.count()
    for headers in ({}, HTMX):
        response = client.post(
            url("pipeline_edit"), {"yaml": broken, "base_version": "1"}, **headers
        )
        html = response.content.decode()
        assert response.status_code == 400
        assert f'<span class="line has-error" id="L{line}">' in html
        assert re.search(
            rf'<span class="line-error" role="note">line {line}: step &#x27;compile&#x27; has unknown type &#x27;Shell&#x27;',
            html,
        )
        assert f'<a href="#L{line}">line {line}</a>' in html
        assert "nothing was saved" in html
        assert "type: Shell\n" in html  # the user's text is kept in the editor
    assert html.lstrip().startswith('<section id="editor"')  # the HTMX answer is the editor only
    release.refresh_from_db()
    assert release.current_version.number == 1
    assert PipelineVersion.objects.filter(pipeline=release).count() == 1
    assert AuditEvent.objects.count() == audit_before


def test_changing_the_identifier_in_the_editor_is_refused(client, personas, release):
    client.force_login(personas.admin)
    response = client.post(
        url("pipeline_edit"),
        {"yaml": RELEASE.replace("identifier: release", "identifier: other"), "base_version": "1"},
    )
    assert response.status_code == 400
    assert "the identifier must stay &#x27;release&#x27;" in response.content.decode()
    assert not Pipeline.objects.filter(identifier="other").exists()


def test_an_empty_definition_is_refused_with_a_message(client, personas, release):
    client.force_login(personas.admin)
    response = client.post(url("pipeline_edit"), {"yaml": "   ", "base_version": "1"})
    assert response.status_code == 400
    assert "The definition is empty" in response.content.decode()
    assert PipelineVersion.objects.filter(pipeline=release).count() == 1


def test_a_save_based_on_an_old_version_is_refused_and_keeps_the_text(client, personas, release):
    save_pipeline(
        project=personas.project,
        yaml_text=RELEASE.replace("1m", "3m"),
        user=personas.admin,
        pipeline=release,
    )
    client.force_login(personas.admin)
    mine = RELEASE.replace("name: Release", "name: Mine", 1)
    response = client.post(url("pipeline_edit"), {"yaml": mine, "base_version": "1"})
    html = response.content.decode()
    assert response.status_code == 409
    assert "Someone saved version 2 while you were editing version 1" in html
    assert "name: Mine" in html
    assert 'name="base_version" value="2"' in html  # saving again is now based on version 2
    release.refresh_from_db()
    assert release.current_version.number == 2 and release.name == "Release"


# --- history ----------------------------------------------------------------------------------


def test_history_lists_versions_and_shows_what_a_version_changed(client, personas, release):
    save_pipeline(
        project=personas.project,
        yaml_text=RELEASE.replace('default: "2"', 'default: "5"'),
        user=personas.admin,
        pipeline=release,
    )
    client.force_login(personas.viewer)
    html = client.get(url("pipeline_history")).content.decode()
    assert "Version 2</a>" in html and "Version 1</a>" in html
    assert "Changes in version 2" in html
    assert '<span class="diff-del">-      default: &quot;2&quot;</span>' in html
    assert '<span class="diff-add">+      default: &quot;5&quot;</span>' in html
    first = client.get(url("pipeline_history") + "?version=1").content.decode()
    assert "(the first version)" in first
    assert '<span class="diff-add">+pipeline:</span>' in first


@pytest.mark.parametrize("value", ["7", "abc", "-1", "1.5"])
def test_history_refuses_an_unknown_version_with_a_message(client, personas, release, value):
    client.force_login(personas.viewer)
    response = client.get(url("pipeline_history") + f"?version={value}")
    assert response.status_code == 400
    assert "There is no version" in response.content.decode()


# --- the Run dialog ---------------------------------------------------------------------------


def test_the_run_dialog_is_a_fragment_for_htmx_and_a_page_without(client, personas, release):
    client.force_login(personas.executor)
    fragment = client.get(url("pipeline_run"), **HTMX)
    html = fragment.content.decode()
    assert fragment.status_code == 200
    assert "<html" not in html and '<h2 id="modal-title">Run Release</h2>' in html
    assert f'hx-post="{url("pipeline_run")}" hx-target="#modal-body"' in html
    assert "data-close-dialog" in html
    page = client.get(url("pipeline_run")).content.decode()
    assert "<html" in page and '<h1 id="modal-title">Run Release</h1>' in page
    assert f'method="post" action="{url("pipeline_run")}"' in page


def test_the_run_form_is_built_from_the_runtime_inputs(client, personas, release):
    client.force_login(personas.executor)
    html = client.get(url("pipeline_run"), **HTMX).content.decode()
    assert re.search(
        r'<select name="input-version"[^>]*>\s*<option value="" selected>— choose —</option>\s*<option value="1.0">1.0</option>',
        html,
    )
    assert re.search(
        r'<input type="text" name="input-replicas" value="2" inputmode="decimal"', html
    )
    assert re.search(r'<input type="password" name="input-token"', html)
    assert re.search(r'<input type="text" name="input-build.target" value="linux"', html)
    assert "<legend>Stage: Build</legend>" in html and "<legend>Pipeline inputs</legend>" in html
    assert 'name="input-api_key"' not in html  # a fixed value is not an input
    assert "fixed-secret-value" not in html
    assert 'name="stages" value="deploy"' in html  # allow_stage_selection


def test_bad_inputs_come_back_in_place_with_each_message_at_its_field(client, personas, release):
    client.force_login(personas.executor)
    posted = good_inputs(**{"input-version": "9.9", "input-replicas": "many", "input-token": ""})
    for headers in ({}, HTMX):
        response = client.post(url("pipeline_run"), posted, **headers)
        html = response.content.decode()
        assert response.status_code == 400
        assert re.search(r'name="input-version"[^>]*aria-invalid="true"', html)
        assert (
            '<p class="field-error" id="id_input-version_error">version must be one of 1.0, 2.0 (got &#x27;9.9&#x27;)</p>'
            in html
        )
        assert (
            '<p class="field-error" id="id_input-replicas_error">replicas must be a number (like 12 or -3.5), not &#x27;many&#x27;</p>'
            in html
        )
        assert '<p class="field-error" id="id_input-token_error">token is required</p>' in html
        assert 'value="many"' in html  # what was typed stays, to be fixed
        assert "Nothing was started" in html
    assert html.lstrip().startswith('<form id="run-form"')  # HTMX: the dialog's form only
    assert not Execution.objects.exists()


def test_a_secret_is_never_sent_back_to_the_browser(client, personas, release):
    client.force_login(personas.executor)
    response = client.post(
        url("pipeline_run"),
        good_inputs(**{"input-version": "nope", "input-token": "hunter2"}),
        **HTMX,
    )
    assert response.status_code == 400
    assert "hunter2" not in response.content.decode()


def test_an_input_the_pipeline_does_not_have_is_refused_by_name(client, personas, release):
    client.force_login(personas.executor)
    response = client.post(
        url("pipeline_run"), good_inputs(**{"input-api_key": "override"}), **HTMX
    )
    assert response.status_code == 400
    assert (
        "&#x27;api_key&#x27; is not a runtime input of pipeline release"
        in response.content.decode()
    )
    assert not Execution.objects.exists()


def test_a_good_run_creates_the_execution_and_redirects_to_it(client, personas, release):
    client.force_login(personas.executor)
    response = client.post(url("pipeline_run"), good_inputs(), **HTMX)
    execution = Execution.objects.get()
    assert response.status_code == 200
    assert response.headers["HX-Redirect"] == reverse("execution", args=[execution.pk])
    assert execution.triggered_by == personas.executor
    assert execution.version == release.current_version
    assert execution.inputs == {"version": "2.0", "replicas": "3", "build.target": "arm64"}
    assert execution.secret_inputs == {"token": "hunter2"}


def test_a_good_run_without_htmx_redirects_to_the_execution_page(client, personas, release):
    client.force_login(personas.admin)
    response = client.post(url("pipeline_run"), good_inputs(**{"input-replicas": ""}))
    execution = Execution.objects.get()
    assert response.status_code == 302 and response.url == reverse("execution", args=[execution.pk])
    assert execution.inputs["replicas"] == "2"  # blank takes the default


def test_a_stage_selection_that_needs_an_unpicked_output_is_refused(client, personas, release):
    client.force_login(personas.executor)
    response = client.post(url("pipeline_run"), {**good_inputs(), "stages": ["deploy"]}, **HTMX)
    assert response.status_code == 400
    assert (
        "Stage &#x27;deploy&#x27; needs the output of build, which is not selected."
        in response.content.decode()
    )
    assert not Execution.objects.exists()
    client.post(url("pipeline_run"), {**good_inputs(), "stages": ["build"]}, **HTMX)
    execution = Execution.objects.get()
    assert execution.selected_stages == ["build"]


@pytest.mark.parametrize("persona", ["viewer", "approver"])
def test_users_without_execute_get_403_with_the_reason_and_nothing_runs(
    client, personas, release, persona
):
    client.force_login(getattr(personas, persona))
    for method, headers in (("get", {}), ("get", HTMX), ("post", {}), ("post", HTMX)):
        response = getattr(client, method)(
            url("pipeline_run"), good_inputs() if method == "post" else {}, **headers
        )
        assert response.status_code == 403
        assert "You need the Execute permission on pipeline release." in response.content.decode()
    assert not Execution.objects.exists()


def test_a_pipeline_without_inputs_says_so(client, personas):
    factories.make_pipeline(
        personas.project, factories.serial_pipeline("plain", [factories.shell_stage("a", "true")])
    )
    client.force_login(personas.executor)
    html = client.get(
        reverse("pipeline_run", args=["acme", "web", "plain"]), **HTMX
    ).content.decode()
    assert "This pipeline has no runtime inputs." in html
    response = client.post(reverse("pipeline_run", args=["acme", "web", "plain"]), {}, **HTMX)
    assert response.headers["HX-Redirect"] == reverse(
        "execution", args=[Execution.objects.get().pk]
    )
