"""``manage.py load_pipelines ORG/PROJECT DIR``: one pipeline per YAML file, created then
updated, and every refused file reported as ``file:line: message`` with a non-zero exit."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from pipelines.models import Organization, Pipeline, PipelineVersion, Project
from pipelines.secrets import set_secret

pytestmark = pytest.mark.django_db

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "pipelines"

GOOD = """\
pipeline:
  name: Nightly
  identifier: nightly
  stages:
    - stage:
        identifier: build
        steps:
          - step: {identifier: run, type: ShellScript, timeout: 1m, spec: {script: echo hi}}
"""

BAD = """\
pipeline:
  name: Broken
  identifier: broken
  stages:
    - stage:
        identifier: build
        steps:
          - step: {identifier: run, type: ShellScript, timeout: soon, spec: {script: echo hi}}
          - step: {identifier: gate, type: Docker}
"""


def load(project: str, folder: Path, *args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("load_pipelines", project, str(folder), *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def load_refused(project: str, folder: Path, *args: str) -> tuple[CommandError, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(CommandError) as caught:
        call_command("load_pipelines", project, str(folder), *args, stdout=out, stderr=err)
    assert caught.value.returncode == 2
    return caught.value, out.getvalue(), err.getvalue()


def test_load_creates_the_organization_the_project_and_one_pipeline_per_file(tmp_path):
    for path in EXAMPLES.glob("*.yaml"):
        shutil.copy(path, tmp_path / path.name)
    # data_refresh refers to <+secrets.api_token>: refused until the project's store holds it.
    _, _, err = load_refused("acme/web-tools", tmp_path)
    assert "data_refresh.yaml:13: the project has no secret 'api_token'" in err

    org = Organization.objects.get(slug="acme")
    project = Project.objects.get(organization=org, slug="web-tools")
    assert (org.name, project.name) == ("Acme", "Web Tools")
    set_secret(project=project, name="api_token", value="t0ken", user=None)
    out, err = load("acme/web-tools", tmp_path)
    pipelines = {p.identifier: p for p in Pipeline.objects.filter(project=project)}
    assert set(pipelines) == {"web_deploy", "data_refresh", "release"}
    assert pipelines["web_deploy"].name == "Web deploy"
    assert pipelines["web_deploy"].current_version.number == 1
    assert (
        pipelines["web_deploy"].current_version.yaml == (EXAMPLES / "web_deploy.yaml").read_text()
    )
    assert out.splitlines() == [
        "data_refresh.yaml: data_refresh v1 created",
        "release.yaml: release v1 unchanged",
        "web_deploy.yaml: web_deploy v1 unchanged",
    ]
    assert err == ""


def test_loading_the_same_files_again_creates_no_new_version(tmp_path):
    (tmp_path / "nightly.yaml").write_text(GOOD)
    load("acme/web", tmp_path)
    out, _ = load("acme/web", tmp_path)
    assert out.strip() == "nightly.yaml: nightly v1 unchanged"
    assert PipelineVersion.objects.filter(pipeline__identifier="nightly").count() == 1
    assert Project.objects.filter(slug="web").count() == 1


def test_a_changed_file_becomes_a_new_version_of_the_same_pipeline(tmp_path):
    path = tmp_path / "nightly.yml"
    path.write_text(GOOD)
    load("acme/web", tmp_path)
    path.write_text(
        GOOD.replace("name: Nightly", "name: Nightly build").replace("echo hi", "echo hello")
    )
    out, _ = load("acme/web", tmp_path)

    assert out.strip() == "nightly.yml: nightly v2 updated"
    pipeline = Pipeline.objects.get(identifier="nightly")
    assert pipeline.name == "Nightly build"
    assert pipeline.current_version.number == 2
    assert pipeline.spec.stages[0].steps[0].script == "echo hello"
    assert list(pipeline.versions.values_list("number", flat=True)) == [2, 1]


def test_a_refused_file_is_reported_with_file_line_and_message_and_the_command_fails(tmp_path):
    (tmp_path / "good.yaml").write_text(GOOD)
    (tmp_path / "broken.yaml").write_text(BAD)
    error, out, err = load_refused("acme/web", tmp_path)

    assert str(error) == "1 of 2 file(s) refused"
    assert err.splitlines() == [
        "broken.yaml: refused",
        "  broken.yaml:8: timeout 'soon' of step 'run' is not a duration like 30s, 10m, 1h or 1h30m",
        "  broken.yaml:9: step 'gate' has unknown type 'Docker' (use ShellScript, Approval or Wait)",
    ]
    # the valid file is loaded all the same; the refused one left nothing behind
    assert out.strip() == "good.yaml: nightly v1 created"
    assert list(Pipeline.objects.values_list("identifier", flat=True)) == ["nightly"]


def test_every_refused_file_is_reported(tmp_path):
    (tmp_path / "a.yaml").write_text("pipeline: [\n")
    (tmp_path / "b.yaml").write_text("- not a pipeline\n")
    error, out, err = load_refused("acme/web", tmp_path)
    assert str(error) == "2 of 2 file(s) refused"
    lines = err.splitlines()
    assert lines[0] == "a.yaml: refused" and lines[1].startswith("  a.yaml:2: invalid YAML:")
    assert lines[2:] == [
        "b.yaml: refused",
        "  b.yaml:1: the definition must start with 'pipeline:'",
    ]
    assert out == ""
    assert not Pipeline.objects.exists()


def test_a_problem_without_a_line_is_reported_with_the_file_name(tmp_path, settings):
    settings.STAGELINE_MAX_YAML_BYTES = 100
    (tmp_path / "big.yaml").write_text(GOOD)
    _, _, err = load_refused("acme/web", tmp_path)
    assert err.splitlines() == [
        "big.yaml: refused",
        "  big.yaml: the definition is larger than 100 bytes",
    ]


def test_a_refused_update_keeps_the_current_version(tmp_path):
    path = tmp_path / "nightly.yaml"
    path.write_text(GOOD)
    load("acme/web", tmp_path)
    path.write_text(GOOD.replace("timeout: 1m", "timeout: whenever"))
    _, _, err = load_refused("acme/web", tmp_path)
    assert "  nightly.yaml:8: timeout 'whenever' of step 'run' is not a duration" in err
    pipeline = Pipeline.objects.get(identifier="nightly")
    assert pipeline.current_version.number == 1
    assert pipeline.versions.count() == 1


def test_a_long_load_shows_its_progress(tmp_path):
    for number in range(25):
        (tmp_path / f"p{number:02d}.yaml").write_text(
            GOOD.replace("identifier: nightly", f"identifier: nightly_{number:02d}")
        )
    out, err = load("acme/web", tmp_path)
    lines = out.splitlines()
    assert lines[0] == "[1/25] p00.yaml: nightly_00 v1 created"
    assert lines[-1] == "[25/25] p24.yaml: nightly_24 v1 created" and err == ""


def test_only_yaml_files_are_loaded(tmp_path):
    (tmp_path / "nightly.yaml").write_text(GOOD)
    (tmp_path / "README.md").write_text("# not a pipeline\n")
    (tmp_path / "notes.txt").write_text("pipeline: nope\n")
    out, err = load("acme/web", tmp_path)
    assert out.strip() == "nightly.yaml: nightly v1 created" and err == ""


@pytest.mark.parametrize("project", ["acme", "acme/", "/web", "acme/web/extra"])
def test_a_project_that_is_not_org_slash_project_is_refused(tmp_path, project):
    (tmp_path / "nightly.yaml").write_text(GOOD)
    error, _, _ = load_refused(project, tmp_path)
    assert str(error) == f"'{project}' is not ORG/PROJECT"
    assert not Organization.objects.exists() and not Pipeline.objects.exists()


def test_a_folder_that_does_not_exist_is_refused(tmp_path):
    missing = tmp_path / "missing"
    error, _, _ = load_refused("acme/web", missing)
    assert str(error) == f"{missing} is not a folder"
    assert not Organization.objects.exists()


def test_acting_as_a_user_who_may_not_edit_is_refused(tmp_path, personas):
    (tmp_path / "nightly.yaml").write_text(GOOD)
    error, _, _ = load_refused("acme/web", tmp_path, "--as", "viewer")
    assert "Edit" in str(error)
    assert not Pipeline.objects.filter(identifier="nightly").exists()


def test_acting_as_a_project_admin_records_who_saved(tmp_path, personas):
    (tmp_path / "nightly.yaml").write_text(GOOD)
    load("acme/web", tmp_path, "--as", "admin")
    version = Pipeline.objects.get(project=personas.project, identifier="nightly").current_version
    assert version.created_by == personas.admin


def test_acting_as_a_user_never_creates_a_project(tmp_path, personas):
    (tmp_path / "nightly.yaml").write_text(GOOD)
    error, _, _ = load_refused("acme/brand-new", tmp_path, "--as", "admin")
    assert "no project acme/brand-new" in str(error)
    assert not Project.objects.filter(slug="brand-new").exists()


def test_a_file_that_is_not_utf8_is_refused_and_the_others_load(tmp_path):
    (tmp_path / "nightly.yaml").write_text(GOOD)
    (tmp_path / "latin1.yaml").write_bytes(GOOD.replace("Nightly", "Caf\xe9").encode("latin-1"))
    _, _, err = load_refused("acme/ops", tmp_path)
    assert "latin1.yaml: the file is not UTF-8 text" in err
    assert Pipeline.objects.filter(identifier="nightly").exists()


def test_a_folder_named_like_a_yaml_file_is_ignored(tmp_path):
    (tmp_path / "nightly.yaml").write_text(GOOD)
    (tmp_path / "folder.yaml").mkdir()
    out, _ = load("acme/ops", tmp_path)
    assert "nightly.yaml: nightly v1 created" in out
