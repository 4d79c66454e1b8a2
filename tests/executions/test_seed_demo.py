"""seed_demo (run by scripts/start every time) seeds only what is missing: an example pipeline
that was edited in the UI is never saved over, and the command says what it kept."""

import io

import pytest
from django.core.management import call_command

from executions.models import Execution
from pipelines.models import Pipeline, PipelineVersion
from pipelines.services import save_pipeline


@pytest.mark.engine
def test_running_the_seed_again_keeps_a_pipeline_edited_in_the_ui(worker, django_user_model):
    call_command("seed_demo", "--no-worker", stdout=io.StringIO())
    pipeline = Pipeline.objects.get(identifier="data_refresh")
    admin = django_user_model.objects.get(username="admin")
    edited = pipeline.current_version.yaml.replace(
        "name: Data refresh", "name: Data refresh (ours)"
    )
    assert edited != pipeline.current_version.yaml
    mine = save_pipeline(project=pipeline.project, yaml_text=edited, user=admin).version
    versions = PipelineVersion.objects.count()
    executions = Execution.objects.count()

    out = io.StringIO()
    call_command("seed_demo", "--no-worker", stdout=out)

    pipeline.refresh_from_db()
    assert pipeline.current_version_id == mine.pk and pipeline.name == "Data refresh (ours)"
    assert PipelineVersion.objects.count() == versions, "the seed saved a new version"
    assert Execution.objects.count() == executions
    assert "pipeline data_refresh exists already: kept as it is" in out.getvalue()
    assert "pipeline web_deploy exists already" in out.getvalue()
