"""Organizations, projects, pipelines and their immutable versions, and who may do what.

Organization ─< Project ─< Pipeline ─< PipelineVersion (immutable YAML, one per change)
                   │           │
                   └──< RoleAssignment (user or group, a role, the whole project or one pipeline)

Access is stored as django-guardian object permissions in direct foreign-key tables (the
``*ObjectPermission`` models below); ``RoleAssignment`` rows are the source of truth that
``pipelines.roles`` turns into those permissions. Which rows a user may see is answered by
``pipelines.permissions`` (``visible_projects`` / ``visible_pipelines``), which builds on this
module; this module imports nothing of it.
"""

from __future__ import annotations

import hashlib

from django.conf import settings
from django.contrib.auth.models import Group
from django.db import models
from django.db.models import Q
from guardian.models import GroupObjectPermissionBase, UserObjectPermissionBase

from pipelines.spec.model import PipelineSpec
from pipelines.spec.validate import parse_cached


class Organization(models.Model):
    """The top of the tree: a company or team owning projects."""

    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=100, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.name


class Project(models.Model):
    """A set of pipelines with one access policy (roles are granted per project)."""

    organization = models.ForeignKey(
        Organization, on_delete=models.PROTECT, related_name="projects"
    )
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=100)
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["organization__slug", "slug"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "slug"], name="project_slug_unique_in_org"
            )
        ]
        permissions = [
            ("execute_project", "Run, retry, rerun and abort the project's pipelines"),
            ("approve_project", "Answer approvals in the project's pipelines"),
            ("manage_access_project", "Assign roles in the project"),
        ]

    def __str__(self) -> str:
        return f"{self.organization.slug}/{self.slug}"

    @property
    def path(self) -> str:
        return f"{self.organization.slug}/{self.slug}"


class Pipeline(models.Model):
    """A named pipeline of a project; its definition lives in ``PipelineVersion`` rows."""

    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="pipelines")
    identifier = models.CharField(max_length=64)
    name = models.CharField(max_length=200)
    current_version = models.ForeignKey(
        "PipelineVersion", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    last_sequence = models.PositiveIntegerField(default=0, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["project_id", "identifier"]
        constraints = [
            models.UniqueConstraint(
                fields=["project", "identifier"], name="pipeline_identifier_unique_in_project"
            )
        ]
        permissions = [
            ("execute_pipeline", "Run, retry, rerun and abort the pipeline"),
            ("approve_pipeline", "Answer the pipeline's approvals"),
            ("manage_access_pipeline", "Assign roles on the pipeline"),
        ]

    def __str__(self) -> str:
        return f"{self.project.path}/{self.identifier}" if self.project_id else self.identifier

    @property
    def spec(self):
        return self.current_version.spec if self.current_version else None


class PipelineVersion(models.Model):
    """One immutable definition of a pipeline. Executions record the version they ran."""

    pipeline = models.ForeignKey(Pipeline, on_delete=models.PROTECT, related_name="versions")
    number = models.PositiveIntegerField()
    yaml = models.TextField()
    sha256 = models.CharField(max_length=64, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["pipeline_id", "-number"]
        constraints = [
            models.UniqueConstraint(
                fields=["pipeline", "number"], name="pipeline_version_number_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.pipeline} v{self.number}"

    def save(self, *args, **kwargs) -> None:
        if self.pk is not None:
            raise ValueError("a pipeline version is immutable; save a new version instead")
        self.sha256 = self.hash_yaml(self.yaml)
        super().save(*args, **kwargs)

    @staticmethod
    def hash_yaml(text: str) -> str:
        return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()

    @property
    def spec(self) -> PipelineSpec:
        return parse_cached(self.yaml)


class Role(models.TextChoices):
    VIEWER = "viewer", "Project Viewer"
    EXECUTOR = "executor", "Pipeline Executor"
    APPROVER = "approver", "Approver"
    ADMIN = "admin", "Project Admin"


class RoleAssignment(models.Model):
    """A role given to a user or a group on a whole project, or on one of its pipelines.

    Saving or deleting one (through ``pipelines.roles``) grants or revokes exactly the
    guardian permissions the role stands for, in the same transaction.
    """

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="role_assignments")
    pipeline = models.ForeignKey(
        Pipeline,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="role_assignments",
        help_text="Leave empty for the whole project.",
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="role_assignments",
    )
    group = models.ForeignKey(
        Group, null=True, blank=True, on_delete=models.CASCADE, related_name="role_assignments"
    )
    role = models.CharField(max_length=20, choices=Role.choices)
    granted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    granted_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["project_id", "role", "id"]
        constraints = [
            models.CheckConstraint(
                condition=(
                    Q(user__isnull=False, group__isnull=True)
                    | Q(user__isnull=True, group__isnull=False)
                ),
                name="role_assignment_user_xor_group",
            ),
            models.UniqueConstraint(
                fields=["project", "user"],
                condition=Q(pipeline__isnull=True, user__isnull=False),
                name="one_project_role_per_user",
            ),
            models.UniqueConstraint(
                fields=["project", "group"],
                condition=Q(pipeline__isnull=True, group__isnull=False),
                name="one_project_role_per_group",
            ),
            models.UniqueConstraint(
                fields=["pipeline", "user"],
                condition=Q(pipeline__isnull=False, user__isnull=False),
                name="one_pipeline_role_per_user",
            ),
            models.UniqueConstraint(
                fields=["pipeline", "group"],
                condition=Q(pipeline__isnull=False, group__isnull=False),
                name="one_pipeline_role_per_group",
            ),
        ]

    def __str__(self) -> str:
        who = self.user or self.group
        target = self.pipeline or self.project
        return f"{who}: {self.get_role_display()} on {target}"


class AuditEvent(models.Model):
    """Who did what, for actions that are not execution status changes (roles, definitions)."""

    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    project = models.ForeignKey(Project, null=True, blank=True, on_delete=models.SET_NULL)
    action = models.CharField(max_length=60)
    detail = models.TextField(blank=True)
    at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M} {self.actor}: {self.action}"


class ProjectSecret(models.Model):
    """A secret of a project's store, referenced in YAML as ``<+secrets.NAME>``.

    ``value`` is a Fernet token (``stageline.crypto``), never the text; it is decrypted only
    on the worker that runs a step referring to it. Written only through ``pipelines.secrets``
    (which audits every change); no page shows a value again once it is set.
    """

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="secrets")
    name = models.CharField(max_length=64)
    value = models.TextField(editable=False, help_text="Encrypted (a Fernet token).")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["project_id", "name"]
        constraints = [
            models.UniqueConstraint(fields=["project", "name"], name="project_secret_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.project}: {self.name}"


# Direct foreign-key object permissions (guardian): fast joins, no text object ids.
class ProjectUserObjectPermission(UserObjectPermissionBase):
    content_object = models.ForeignKey(Project, on_delete=models.CASCADE)


class ProjectGroupObjectPermission(GroupObjectPermissionBase):
    content_object = models.ForeignKey(Project, on_delete=models.CASCADE)


class PipelineUserObjectPermission(UserObjectPermissionBase):
    content_object = models.ForeignKey(Pipeline, on_delete=models.CASCADE)


class PipelineGroupObjectPermission(GroupObjectPermissionBase):
    content_object = models.ForeignKey(Pipeline, on_delete=models.CASCADE)
