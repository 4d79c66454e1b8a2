"""The project's secret store: secrets referenced in YAML as ``<+secrets.NAME>`` (SPEC §2).

Project Admins (the Edit permission on the whole project) create, replace and delete secrets;
a value is encrypted (``stageline.crypto``) before it is stored and never shown again, not even
to them. Every change is an ``AuditEvent`` naming the secret, never its value. Values are read
only by ``secret_values``, which the engine calls on the worker that runs a step.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from django.db import IntegrityError, transaction

from pipelines import permissions
from pipelines.models import AuditEvent, Project, ProjectSecret
from stageline import crypto
from stageline.errors import Invalid, NotFound

NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
MAX_VALUE_CHARS = 64 * 1024


def check_name(name: str) -> str:
    name = (name or "").strip()
    if not NAME_RE.match(name):
        raise Invalid(
            f"'{name[:64]}' is not a valid secret name: a letter or _, then letters, digits "
            "and _ (at most 64)",
            field_errors={"name": "A letter or _, then letters, digits and _ (at most 64)."},
        )
    return name


def _check_value(value: str) -> None:
    if not value:
        raise Invalid("The value is empty.", field_errors={"value": "Enter the secret's value."})
    if len(value) > MAX_VALUE_CHARS:
        raise Invalid(
            f"The value is longer than {MAX_VALUE_CHARS} characters.",
            field_errors={"value": f"At most {MAX_VALUE_CHARS} characters."},
        )
    if "\x00" in value:
        raise Invalid(
            "The value contains a NUL character.", field_errors={"value": "No NUL character."}
        )


def set_secret(*, project: Project, name: str, value: str, user) -> tuple[ProjectSecret, bool]:
    """Create secret ``name`` of ``project``, or replace its value; returns (secret, created).

    ``user`` needs Edit on the whole project (``None``: the system, e.g. ``seed_demo``)."""
    if user is not None:
        permissions.check(user, "change", project)
    name = check_name(name)
    _check_value(value)
    token = crypto.encrypt(value)
    with transaction.atomic():
        secret = (
            ProjectSecret.objects.select_for_update().filter(project=project, name=name).first()
        )
        created = secret is None
        if secret is None:
            try:
                with transaction.atomic():
                    secret = ProjectSecret.objects.create(
                        project=project, name=name, value=token, created_by=user, updated_by=user
                    )
            except IntegrityError:  # created a moment ago by someone else: replace it
                secret = ProjectSecret.objects.select_for_update().get(project=project, name=name)
                created = False
        if not created:
            secret.value, secret.updated_by = token, user
            secret.save(update_fields=["value", "updated_by", "updated_at"])
        AuditEvent.objects.create(
            actor=user,
            project=project,
            action="secret.created" if created else "secret.replaced",
            detail=f"secret {name}",
        )
    return secret, created


def delete_secret(*, project: Project, name: str, user) -> None:
    """Delete secret ``name`` of ``project`` (a pipeline still referring to it fails to run)."""
    if user is not None:
        permissions.check(user, "change", project)
    with transaction.atomic():
        deleted, _ = ProjectSecret.objects.filter(project=project, name=name).delete()
        if not deleted:
            raise NotFound(f"Project {project} has no secret named '{name[:64]}'.")
        AuditEvent.objects.create(
            actor=user, project=project, action="secret.deleted", detail=f"secret {name}"
        )


def secret_names(project_id: int) -> set[str]:
    """The names of the project's secrets (no value is decrypted)."""
    return set(ProjectSecret.objects.filter(project_id=project_id).values_list("name", flat=True))


def pipeline_secret_values(pipeline_id: int, names: Iterable[str]) -> dict[str, str]:
    """The decrypted values of ``names`` in the store of the pipeline's project (for the step
    that uses them; a name the store does not hold is left out)."""
    rows = ProjectSecret.objects.filter(project__pipelines=pipeline_id, name__in=set(names))
    return {name: crypto.decrypt(token) for name, token in rows.values_list("name", "value")}
