"""What every part of the benchmark stands on: its organization, users and pipeline definitions."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import User

from pipelines.models import Organization, Pipeline, Project, RoleAssignment
from pipelines.roles import assign_role
from pipelines.services import save_pipeline

ORG = "bench"
RUNNER = "bench-runner"  # a superuser: starts the engine benchmark's executions
OPERATOR = (
    "bench-operator"  # Pipeline Executor on every dashboard project: the pages are timed as them
)


def step_shared_dir() -> Path:
    """Where the benchmark's steps write their ledger: outside var/ (which steps cannot see,
    docs/security.md), passed to the workers as STAGELINE_STEP_SHARED_DIRS."""
    tag = hashlib.sha1(str(Path(settings.VAR_DIR).resolve()).encode()).hexdigest()[:10]
    path = Path(tempfile.gettempdir()) / f"stageline-bench-{os.getuid()}-{tag}"
    path.mkdir(exist_ok=True)
    path.chmod(0o1777)
    return path


def organization() -> Organization:
    org, _ = Organization.objects.get_or_create(slug=ORG, defaults={"name": "Benchmark"})
    return org


def project(slug: str, name: str | None = None) -> Project:
    found, _ = Project.objects.get_or_create(
        organization=organization(), slug=slug, defaults={"name": name or slug.title()}
    )
    return found


def user(username: str, *, superuser: bool = False):
    model = get_user_model()
    found = model.objects.filter(username=username).first()
    if found is None:
        found = model(username=username, is_superuser=superuser, is_staff=superuser)
        found.set_unusable_password()
        found.save()
    return found


def runner():
    return user(RUNNER, superuser=True)


def operator(projects: list[Project]) -> User:
    """The user the dashboard is timed as: an ordinary Pipeline Executor (not a superuser), so
    every page pays for its permission checks."""
    found = user(OPERATOR)
    for item in projects:
        # Only when missing: re-assigning an existing role locks the assignment with
        # select_related on nullable relations, which PostgreSQL refuses (pipelines.roles).
        if not RoleAssignment.objects.filter(project=item, pipeline=None, user=found).exists():
            assign_role(project=item, role="executor", user=found)
    return found


def stage_yaml(
    identifier: str, script: str, indent: int, variables: tuple[str, ...] = (), runs_on: str = ""
) -> str:
    """One stage with one ShellScript step; ``variables`` are YAML flow mappings."""
    pad = " " * indent
    text = (
        f"{pad}- stage:\n"
        f"{pad}    identifier: {identifier}\n"
        f"{pad}    name: {identifier.replace('_', ' ').title()}\n"
    )
    if runs_on:
        text += f"{pad}    runs_on: {runs_on}\n"
    if variables:
        text += f"{pad}    variables:\n" + "".join(f"{pad}      - {v}\n" for v in variables)
    return text + (
        f"{pad}    steps:\n"
        f"{pad}      - step:\n"
        f"{pad}          identifier: run\n"
        f"{pad}          type: ShellScript\n"
        f"{pad}          timeout: 5m\n"
        f"{pad}          spec:\n"
        f"{pad}            script: {json.dumps(script)}\n"
    )


def pipeline_yaml(
    identifier: str,
    groups: list[list[str]],
    script: str = "true",
    name: str = "",
    variables: tuple[str, ...] = (),
    stage_variables: dict[str, tuple[str, ...]] | None = None,
    runs_on: str = "",
) -> str:
    """A pipeline of one-step ShellScript stages; a group of one is a serial stage, a larger
    group a parallel one. ``variables`` / ``stage_variables`` are YAML flow mappings."""
    stage_variables = stage_variables or {}
    lines = [
        "pipeline:\n",
        f"  name: {json.dumps(name or identifier.replace('_', ' ').title())}\n",
        f"  identifier: {identifier}\n",
    ]
    if variables:
        lines.append("  variables:\n")
        lines.extend(f"    - {v}\n" for v in variables)
    lines.append("  stages:\n")
    for group in groups:
        if len(group) == 1:
            lines.append(
                stage_yaml(group[0], script, 4, stage_variables.get(group[0], ()), runs_on)
            )
        else:
            lines.append("    - parallel:\n")
            lines.extend(
                stage_yaml(stage, script, 8, stage_variables.get(stage, ()), runs_on)
                for stage in group
            )
    return "".join(lines)


def serial_groups(count: int, prefix: str = "s") -> list[list[str]]:
    return [[f"{prefix}{index:03d}"] for index in range(1, count + 1)]


def parallel_groups(groups: int, width: int) -> list[list[str]]:
    return [[f"g{g:02d}_s{s}" for s in range(1, width + 1)] for g in range(1, groups + 1)]


def pipeline(
    target: Project,
    identifier: str,
    groups: list[list[str]],
    script: str = "true",
    runs_on: str = "",
) -> Pipeline:
    """The pipeline ``identifier`` of ``target`` with this definition (a new version only when
    the definition changed); ``runs_on``: the queue of every stage."""
    yaml_text = pipeline_yaml(identifier, groups, script, runs_on=runs_on)
    return save_pipeline(project=target, yaml_text=yaml_text).pipeline
