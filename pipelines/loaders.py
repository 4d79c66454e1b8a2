"""The one loader per object type for pages, commands and the admin's helpers.

``load_project`` / ``load_pipeline`` return the object when ``user`` may do ``action`` to it
and raise otherwise: ``NotFound`` when the user may not see it, whether or not it exists (the
message never says which), ``Forbidden`` naming the missing permission when they may see it
but not do ``action``. Views let the refusal reach ``stageline.errors.RefusalMiddleware`` (or
catch it to show it in place); commands turn it into exit status 2.

Executions are loaded by ``executions.loaders.load_execution`` (this app does not know them).
"""

from __future__ import annotations

from pipelines import permissions
from pipelines.models import Pipeline, Project
from stageline.errors import NotFound


def _hidden(kind: str, path: str, user) -> str:
    who = f"{user}" if user is not None and user.is_authenticated else "you"
    return f"no {kind} {path}, or {who} may not see it"


def load_project(user, org: str, project: str, action: str = "view") -> Project:
    """Project ``org/project`` (with its organization) if ``user`` may do ``action`` to it."""
    found = (
        Project.objects.select_related("organization")
        .filter(organization__slug=org, slug=project)
        .first()
    )
    missing = _hidden("project", f"{org}/{project}", user)
    if found is None:
        raise NotFound(missing)
    permissions.check(user, action, found, missing=missing)
    return found


def load_pipeline(user, org: str, project: str, identifier: str, action: str = "view") -> Pipeline:
    """Pipeline ``org/project/identifier`` (with its project, organization and current
    version) if ``user`` may do ``action`` to it."""
    found = (
        Pipeline.objects.select_related("project__organization", "current_version")
        .filter(project__organization__slug=org, project__slug=project, identifier=identifier)
        .first()
    )
    missing = _hidden("pipeline", f"{org}/{project}/{identifier}", user)
    if found is None:
        raise NotFound(missing)
    permissions.check(user, action, found, missing=missing)
    return found
