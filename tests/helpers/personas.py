"""The fixed personas every view is tested for (the ``personas`` fixture, tests/conftest.py):
``admin``, ``executor``, ``viewer`` and ``approver`` of acme/web, and ``stranger``, admin of
another project (globex/ops)."""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth.models import User

from pipelines.models import Project


@dataclass
class Personas:
    project: Project
    other_project: Project
    admin: User
    executor: User
    viewer: User
    approver: User
    stranger: User

    def all(self) -> dict[str, User]:
        return {
            "admin": self.admin,
            "executor": self.executor,
            "viewer": self.viewer,
            "approver": self.approver,
            "stranger": self.stranger,
        }
