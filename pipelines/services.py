"""Saving pipeline definitions: check, validate, then create a new immutable version if it
changed.

``save_pipeline`` is its own guard: the acting user needs the Edit permission (``change``) on
the pipeline, or on the project for a pipeline it creates (``NotFound`` / ``Forbidden``), and
an editor's save based on an older version than the current one is a ``Conflict`` (checked
again under the pipeline's row lock, so two editors saving at once cannot both win).
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import IntegrityError, transaction

from pipelines import permissions
from pipelines.models import AuditEvent, Pipeline, PipelineVersion, Project
from pipelines.secrets import secret_names
from pipelines.spec.errors import SpecError, SpecErrors
from pipelines.spec.validate import parse_pipeline
from stageline.errors import Conflict, Invalid


@dataclass
class SaveResult:
    pipeline: Pipeline
    version: PipelineVersion
    created_pipeline: bool
    created_version: bool
    warnings: tuple[SpecError, ...] = ()  # saved all the same: see ``PipelineSpec.warnings``


def _check_base(pipeline: Pipeline, current: PipelineVersion | None, base: int | None) -> None:
    number = current.number if current else 0
    if base is not None and base != number:
        raise Conflict(
            f"Someone saved version {number} while you were editing version {base}. "
            "Your text is kept below: compare it with the current definition, then save again.",
            current=number,
        )


def save_pipeline(
    *,
    project: Project,
    yaml_text: str,
    user=None,
    pipeline: Pipeline | None = None,
    base_version: int | None = None,
) -> SaveResult:
    """Validate ``yaml_text`` and store it as the pipeline's current version.

    ``user`` is the acting user (``None`` only for the system itself: seeding, benchmarks).
    With ``pipeline`` given (the editor), the YAML's identifier must match it, and
    ``base_version`` is the version number the editor started from (0: none yet). Saving the
    same YAML again creates no version. Refuses (``stageline.errors``: NotFound, Forbidden,
    Conflict, Invalid for an empty text) or raises ``SpecErrors``, and changes nothing.
    """
    if user is not None:
        permissions.check(user, "change", pipeline if pipeline is not None else project)
    if pipeline is not None:
        _check_base(pipeline, pipeline.current_version, base_version)
    if not yaml_text.strip():
        raise Invalid(
            "The definition is empty. Paste or write the pipeline's YAML.",
            field_errors={"yaml": "The definition is empty. Paste or write the pipeline's YAML."},
        )
    spec = parse_pipeline(yaml_text)
    refused = list(spec.save_errors)
    if spec.secret_references:
        stored = secret_names(project.pk)
        refused += [
            SpecError(
                f"the project has no secret '{name}' (<+secrets.{name}>): add it on the "
                "project's Secrets page first",
                line,
            )
            for name, line in spec.secret_references
            if name not in stored
        ]
    if refused:
        raise SpecErrors(refused)
    if pipeline is not None and spec.identifier != pipeline.identifier:
        raise SpecErrors(
            [
                SpecError(
                    f"the identifier must stay '{pipeline.identifier}' (got '{spec.identifier}')"
                )
            ]
        )
    with transaction.atomic():
        created_pipeline = False
        if pipeline is None:
            pipeline = Pipeline.objects.filter(project=project, identifier=spec.identifier).first()
        if pipeline is None:
            try:
                with transaction.atomic():
                    pipeline = Pipeline.objects.create(
                        project=project, identifier=spec.identifier, name=spec.name
                    )
                created_pipeline = True
            except IntegrityError:
                pipeline = Pipeline.objects.get(project=project, identifier=spec.identifier)
        pipeline = Pipeline.objects.select_for_update().get(pk=pipeline.pk)
        current = pipeline.current_version
        _check_base(pipeline, current, base_version)
        if current is not None and current.sha256 == PipelineVersion.hash_yaml(yaml_text):
            return SaveResult(pipeline, current, created_pipeline, False, spec.warnings)
        number = (current.number if current else 0) + 1
        version = PipelineVersion.objects.create(
            pipeline=pipeline, number=number, yaml=yaml_text, created_by=user
        )
        pipeline.current_version = version
        pipeline.name = spec.name
        pipeline.save(update_fields=["current_version", "name"])
        AuditEvent.objects.create(
            actor=user,
            project=project,
            action="pipeline.saved",
            detail=f"{pipeline.identifier} v{number}",
        )
    return SaveResult(pipeline, version, created_pipeline, True, spec.warnings)
