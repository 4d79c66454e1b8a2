"""Builders for test data: organizations, projects, pipelines from YAML, users with roles."""

from __future__ import annotations

import itertools
import textwrap
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, User

from pipelines.models import Organization, Pipeline, PipelineVersion, Project
from pipelines.roles import assign_role
from pipelines.services import save_pipeline
from pipelines.spec.validate import parse_pipeline

_counter = itertools.count(1)


def make_user(username: str | None = None, *, password: str = "pw", **extra: Any) -> User:
    username = username or f"user{next(_counter)}"
    return get_user_model().objects.create_user(username=username, password=password, **extra)


def make_project(org_slug: str = "acme", slug: str | None = None) -> Project:
    org, _ = Organization.objects.get_or_create(slug=org_slug, defaults={"name": org_slug.title()})
    slug = slug or f"project{next(_counter)}"
    return Project.objects.create(organization=org, slug=slug, name=slug.title())


def make_pipeline(project: Project, yaml_text: str, user=None) -> Pipeline:
    return save_pipeline(project=project, yaml_text=textwrap.dedent(yaml_text), user=user).pipeline


def stored_pipeline(project: Project, *yaml_texts: str) -> Pipeline:
    """A pipeline whose versions were stored as they are, without today's save-time checks: a
    definition saved before literal secrets were refused (versions are immutable and stay)."""
    texts = [textwrap.dedent(text) for text in yaml_texts]
    spec = parse_pipeline(texts[0])
    pipeline = Pipeline.objects.create(project=project, identifier=spec.identifier, name=spec.name)
    for number, text in enumerate(texts, start=1):
        pipeline.current_version = PipelineVersion.objects.create(
            pipeline=pipeline, number=number, yaml=text
        )
    pipeline.save(update_fields=["current_version"])
    return pipeline


def grant(user_or_group, project: Project, role: str, pipeline: Pipeline | None = None):
    if isinstance(user_or_group, Group):
        return assign_role(project=project, role=role, group=user_or_group, pipeline=pipeline)
    return assign_role(project=project, role=role, user=user_or_group, pipeline=pipeline)


def shell_stage(identifier: str, script: str, *, timeout: str = "1m", extra: str = "") -> str:
    """YAML for a one-step ShellScript stage (for building pipelines in tests)."""
    body = textwrap.indent(textwrap.dedent(script).strip(), " " * 18)
    return f"""
    - stage:
        identifier: {identifier}
        name: {identifier.replace("_", " ").title()}{extra}
        steps:
          - step:
              identifier: run
              type: ShellScript
              timeout: {timeout}
              spec:
                script: |
{body}
"""


def serial_pipeline(
    identifier: str, stages: list[str], variables: str = "", allow_selection: bool = False
) -> str:
    head = f"""pipeline:
  name: {identifier.replace("_", " ").title()}
  identifier: {identifier}
  allow_stage_selection: {"true" if allow_selection else "false"}
"""
    if variables:
        head += (
            "  variables:\n" + textwrap.indent(textwrap.dedent(variables).strip(), "    ") + "\n"
        )
    return head + "  stages:\n" + "".join(textwrap.indent(textwrap.dedent(s), "  ") for s in stages)
