"""Saving pipeline definitions: validate, then create a new immutable version if it changed."""

from __future__ import annotations

from dataclasses import dataclass

from django.db import IntegrityError, transaction

from pipelines.models import AuditEvent, Pipeline, PipelineVersion, Project
from pipelines.spec.errors import SpecError, SpecErrors
from pipelines.spec.validate import parse_pipeline


@dataclass
class SaveResult:
    pipeline: Pipeline
    version: PipelineVersion
    created_pipeline: bool
    created_version: bool
    warnings: tuple[SpecError, ...] = ()  # saved all the same: see ``PipelineSpec.warnings``


def save_pipeline(
    *, project: Project, yaml_text: str, user=None, pipeline: Pipeline | None = None
) -> SaveResult:
    """Validate ``yaml_text`` and store it as the pipeline's current version.

    With ``pipeline`` given (the editor), the YAML's identifier must match it. Saving the same
    YAML again creates no version. Raises ``SpecErrors`` and changes nothing when invalid.
    """
    spec = parse_pipeline(yaml_text)
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
