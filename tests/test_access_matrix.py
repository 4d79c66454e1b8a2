"""Who gets what, everywhere: every page, endpoint and command, for every persona.

Each row is (name, method, url builder, expected status per persona, ``None`` where the row
decides nothing for that persona) and runs once per persona; a new view adds rows here. The
objects are built once for the module and every test runs in a savepoint that is rolled back. The personas (``tests/conftest.py``) hold one role each in
project acme/web, and the stranger is Project Admin of globex/ops only; ``deployer`` is a
Pipeline Executor on the pipeline ``deploy`` alone (not on its sibling ``sibling``), and
``anonymous`` is not logged in. Only ``admin`` is staff. The rules (SPEC §6): what a persona
may not see is 404 (and so are ids of other projects' objects, whatever the URL they are put
in); what they may see but not do is 403; the admin and the pages send anonymous visitors to
log in (302).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from django.contrib import admin
from django.contrib.auth.models import Group
from django.core.management import CommandError, call_command
from django.db import transaction
from django.db.models import Model
from django.urls import reverse

from api.models import AccessToken
from api.tokens import create_token
from executions.models import Event, Execution, StageRun, StepRun
from executions.services import abort_execution, run_pipeline
from pipelines.admin import ScopedAdmin
from pipelines.models import AuditEvent, Pipeline, PipelineVersion, Project, RoleAssignment
from pipelines.roles import assign_role, change_role, revoke_role
from tests.helpers.factories import make_pipeline, make_project, make_user
from tests.helpers.personas import Personas
from tests.helpers.runs import drive

PERSONAS = ("admin", "executor", "viewer", "approver", "stranger", "deployer", "anonymous")
MEMBERS = ("admin", "executor", "viewer", "approver")

GATED_PIPELINE = """
pipeline:
  name: {identifier}
  identifier: {identifier}
  stages:
    - stage:
        identifier: approve
        name: Approve
        steps:
          - step: {{identifier: gate, type: Approval, timeout: 1h, spec: {{message: "Go?"}}}}
    - stage:
        identifier: build
        name: Build
        steps:
          - step: {{identifier: run, type: ShellScript, spec: {{script: "echo building"}}}}
"""
# A step that fails and waits for a person's answer (a failure strategy, SPEC §9).
MEND_PIPELINE = """
pipeline:
  name: mend
  identifier: mend
  stages:
    - stage:
        identifier: flaky
        steps:
          - step:
              identifier: run
              type: ShellScript
              failure_strategies:
                - on_failure: {errors: [all], action: {type: manual_intervention, timeout: 1h}}
              spec: {script: "exit 1"}
"""


@dataclass
class World:
    """What the rows point at: objects of acme/web (``own``), of globex/ops (``other``)."""

    personas: Personas
    users: dict
    pipeline: Pipeline
    sibling: Pipeline
    other_pipeline: Pipeline
    execution: Execution  # deploy #1, waiting for approval
    sibling_execution: Execution
    other_execution: Execution
    finished: Execution  # deploy #2, aborted: may be retried and rerun
    other_finished: Execution
    intervening: Execution  # mend #1 (not the deployer's): step flaky.run waits for an answer
    other_intervening: Execution

    @property
    def project(self) -> Project:
        return self.personas.project

    @property
    def other_project(self) -> Project:
        return self.personas.other_project

    def own(self, model):
        """A row of ``model`` in acme/web; ``foreign`` gives one in globex/ops."""
        return self._row(model, self.project)

    def foreign(self, model):
        return self._row(model, self.other_project)

    def _row(self, model, project):
        model_admin = admin.site._registry[model]
        return next(
            row for row in model.objects.order_by("pk") if model_admin.project_of(row) == project
        )


def build_world() -> World:
    """The personas of ``tests/conftest.py``, the deployer, three pipelines and their executions."""
    project, other = make_project("acme", "web"), make_project("globex", "ops")
    users = {
        name: make_user(name)
        for name in ("admin", "executor", "viewer", "approver", "stranger", "deployer")
    }
    users["admin"].is_staff = True
    users["admin"].save(update_fields=["is_staff"])
    for name in MEMBERS:
        assign_role(project=project, role=name, user=users[name])
    assign_role(project=other, role="admin", user=users["stranger"])
    make_user("bob")  # someone to give a role to
    pipeline = make_pipeline(project, GATED_PIPELINE.format(identifier="deploy"))
    sibling = make_pipeline(project, GATED_PIPELINE.format(identifier="sibling"))
    other_pipeline = make_pipeline(other, GATED_PIPELINE.format(identifier="deploy"))
    assign_role(project=project, role="executor", user=users["deployer"], pipeline=pipeline)

    def started(p, user):
        return run_pipeline(pipeline=p, user=user, inputs={})

    def finished(p, user):
        return Execution.objects.get(pk=abort_execution(execution=started(p, user), user=user).pk)

    def intervening(project, user):
        execution = drive(started(make_pipeline(project, MEND_PIPELINE), user))
        assert execution.status == "INTERVENTION_WAITING"
        return execution

    return World(
        personas=Personas(
            project=project,
            other_project=other,
            **{k: v for k, v in users.items() if k != "deployer"},
        ),
        users={**users, "anonymous": None},
        pipeline=pipeline,
        sibling=sibling,
        other_pipeline=other_pipeline,
        execution=started(pipeline, users["admin"]),
        sibling_execution=started(sibling, users["admin"]),
        other_execution=started(other_pipeline, users["stranger"]),
        finished=finished(pipeline, users["admin"]),
        other_finished=finished(other_pipeline, users["stranger"]),
        intervening=intervening(project, users["admin"]),
        other_intervening=intervening(other, users["stranger"]),
    )


@pytest.fixture(scope="module")
def world(django_db_setup, django_db_blocker):
    """Built once for the module inside a transaction that is rolled back at its end; each test
    runs in a savepoint of it (the ``db`` fixture), like Django's ``setUpTestData``."""
    with django_db_blocker.unblock(), transaction.atomic():
        yield build_world()
        transaction.set_rollback(True)


def expect(default: int, **statuses: int | None) -> dict[str, int | None]:
    """Expected status per persona: ``default`` unless named (``members=`` names the four roles;
    ``None`` leaves a persona out of the row)."""
    result: dict[str, int | None] = dict.fromkeys(PERSONAS, default)
    if "members" in statuses:
        result.update(dict.fromkeys(MEMBERS, statuses.pop("members")))
    unknown = set(statuses) - set(PERSONAS)
    assert not unknown, f"unknown personas {unknown}"
    result.update(statuses)
    return result


@dataclass(frozen=True)
class Row:
    name: str
    method: str
    url: Callable[[World], str]
    expected: dict[str, int | None]
    data: Callable[[World, str], dict] = field(default=lambda world, persona: {})


def project_url(name: str, project: Callable[[World], Project], *extra) -> Callable[[World], str]:
    def build(w: World) -> str:
        p = project(w)
        return reverse(name, args=[p.organization.slug, p.slug, *(e(w) for e in extra)])

    return build


def pipeline_url(pipeline: Callable[[World], Pipeline]) -> Callable[[World], str]:
    def build(w: World) -> str:
        p = pipeline(w)
        return reverse("pipeline", args=[p.project.organization.slug, p.project.slug, p.identifier])

    return build


def execution_url(execution: Callable[[World], object]) -> Callable[[World], str]:
    return lambda w: reverse("execution", args=[execution(w)])


def own_row(model: type[Model]) -> Callable[[World], Model]:
    return lambda w: w.own(model)


def foreign_row(model: type[Model]) -> Callable[[World], Model]:
    return lambda w: w.foreign(model)


def admin_url(
    model, view: str, obj: Callable[[World], Model] | None = None
) -> Callable[[World], str]:
    name = f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}"
    return lambda w: reverse(name, args=[obj(w).pk] if obj else [])


OWN = lambda w: w.project  # noqa: E731
OTHER = lambda w: w.other_project  # noqa: E731
MISSING_PROJECT = lambda w: Project(organization=w.project.organization, slug="missing")  # noqa: E731
VIEWER_ASSIGNMENT = lambda w: RoleAssignment.objects.get(user=w.personas.viewer).pk  # noqa: E731
STRANGER_ASSIGNMENT = lambda w: RoleAssignment.objects.get(user=w.personas.stranger).pk  # noqa: E731
LOGIN_AS_ANONYMOUS = 302

PAGE_ROWS = [
    Row("home", "GET", lambda w: reverse("home"), expect(200, anonymous=302)),
    # lists only what each user may answer (tests/executions/test_waiting.py says what)
    Row("waiting for me", "GET", lambda w: reverse("waiting"), expect(200, anonymous=302)),
    Row("waiting count", "GET", lambda w: reverse("waiting_count"), expect(200, anonymous=302)),
    Row("waiting count POST", "POST", lambda w: reverse("waiting_count"), expect(405)),
    Row(
        "project page",
        "GET",
        project_url("project", OWN),
        expect(404, members=200, deployer=200, anonymous=302),
    ),
    Row(
        "project page of another project",
        "GET",
        project_url("project", OTHER),
        expect(404, stranger=200, anonymous=302),
    ),
    Row(
        "project page of no project",
        "GET",
        project_url("project", MISSING_PROJECT),
        expect(404, anonymous=302),
    ),
    Row(
        "retry insights",
        "GET",
        project_url("project_insights", OWN),
        expect(404, members=200, deployer=200, anonymous=302),
    ),
    Row(
        "retry insights of another project",
        "GET",
        project_url("project_insights", OTHER),
        expect(404, stranger=200, anonymous=302),
    ),
    Row(
        "retry insights of no project",
        "GET",
        project_url("project_insights", MISSING_PROJECT),
        expect(404, anonymous=302),
    ),
    Row("POST to the retry insights", "POST", project_url("project_insights", OWN), expect(405)),
    Row(
        "pipeline page",
        "GET",
        pipeline_url(lambda w: w.pipeline),
        expect(404, members=200, deployer=200, anonymous=302),
    ),
    Row(
        "pipeline page of an ungranted sibling",
        "GET",
        pipeline_url(lambda w: w.sibling),
        expect(404, members=200, anonymous=302),
    ),
    Row(
        "pipeline page of another project",
        "GET",
        pipeline_url(lambda w: w.other_pipeline),
        expect(404, stranger=200, anonymous=302),
    ),
    Row(
        "execution page",
        "GET",
        execution_url(lambda w: w.execution.pk),
        expect(404, members=200, deployer=200, anonymous=302),
    ),
    Row(
        "execution page of an ungranted sibling",
        "GET",
        execution_url(lambda w: w.sibling_execution.pk),
        expect(404, members=200, anonymous=302),
    ),
    Row(
        "execution page of another project",
        "GET",
        execution_url(lambda w: w.other_execution.pk),
        expect(404, stranger=200, anonymous=302),
    ),
    Row(
        "execution page of no execution",
        "GET",
        execution_url(lambda w: 999999),
        expect(404, anonymous=302),
    ),
    Row("POST to the home page", "POST", lambda w: reverse("home"), expect(405)),
    Row("POST to the project page", "POST", project_url("project", OWN), expect(405)),
    Row("POST to the pipeline page", "POST", pipeline_url(lambda w: w.pipeline), expect(405)),
    Row("POST to the execution page", "POST", execution_url(lambda w: w.execution.pk), expect(405)),
    Row("login page", "GET", lambda w: reverse("login"), expect(200)),
    Row(
        "logging in",
        "POST",
        lambda w: reverse("login"),
        expect(302, anonymous=200),  # the anonymous visitor's wrong password re-shows the form
        data=lambda w, persona: {
            "username": persona,
            "password": "pw" if persona != "anonymous" else "wrong",
        },
    ),
]

ADD_BOB = lambda w, persona: {"kind": "user", "name": "bob", "role": "viewer"}  # noqa: E731
ACCESS_ROWS = [
    Row(
        "access page",
        "GET",
        project_url("project_access", OWN),
        expect(403, admin=200, stranger=404, anonymous=302),
    ),
    Row(
        "access page of another project",
        "GET",
        project_url("project_access", OTHER),
        expect(404, stranger=200, anonymous=302),
    ),
    Row(
        "adding a role",
        "POST",
        project_url("project_access", OWN),
        expect(403, admin=302, stranger=404, anonymous=302),
        data=ADD_BOB,
    ),
    Row(
        "adding a role in another project",
        "POST",
        project_url("project_access", OTHER),
        expect(404, stranger=302, anonymous=302),
        data=ADD_BOB,
    ),
    Row(
        "changing a role",
        "POST",
        project_url("project_access_change", OWN, VIEWER_ASSIGNMENT),
        expect(403, admin=302, stranger=404, anonymous=302),
        data=lambda w, persona: {"role": "executor"},
    ),
    Row(
        "changing another project's role through this project",
        "POST",
        project_url("project_access_change", OWN, STRANGER_ASSIGNMENT),
        expect(403, admin=404, stranger=404, anonymous=302),
        data=lambda w, persona: {"role": "viewer"},
    ),
    Row(
        "changing a role of another project",
        "POST",
        project_url("project_access_change", OTHER, STRANGER_ASSIGNMENT),
        expect(404, stranger=409, anonymous=302),  # the stranger is that project's last admin
        data=lambda w, persona: {"role": "viewer"},
    ),
    Row(
        "asking to remove a role",
        "GET",
        project_url("project_access_remove", OWN, VIEWER_ASSIGNMENT),
        expect(403, admin=200, stranger=404, anonymous=302),
    ),
    Row(
        "removing a role",
        "POST",
        project_url("project_access_remove", OWN, VIEWER_ASSIGNMENT),
        expect(403, admin=302, stranger=404, anonymous=302),
    ),
    Row(
        "removing another project's role through this project",
        "POST",
        project_url("project_access_remove", OWN, STRANGER_ASSIGNMENT),
        expect(403, admin=404, stranger=404, anonymous=302),
    ),
    Row(
        "removing a permission given outside roles that is not there",
        "POST",
        project_url("project_access_remove_direct", OWN),
        expect(403, admin=404, stranger=404, anonymous=302),
        data=lambda w, persona: {"grant": f"user:{w.personas.stranger.pk}:project:{w.project.pk}"},
    ),
]

# The admin: only ``admin`` is staff; everyone else is sent to the admin's login page.
SCOPED = [
    model
    for model, model_admin in admin.site._registry.items()
    if isinstance(model_admin, ScopedAdmin)
]
UNSCOPED = [model for model in admin.site._registry if model not in SCOPED]  # superusers only
WITH_ROWS = [
    Project,
    Pipeline,
    PipelineVersion,
    RoleAssignment,
    AuditEvent,
    Execution,
    StageRun,
    StepRun,
    Event,
]
ADMIN_ROWS = [
    Row("admin index", "GET", lambda w: reverse("admin:index"), expect(302, admin=200)),
    *[
        Row(f"admin {m.__name__} list", "GET", admin_url(m, "changelist"), expect(302, admin=200))
        for m in SCOPED
    ],
    *[
        Row(
            f"admin {m.__name__} list (superusers only)",
            "GET",
            admin_url(m, "changelist"),
            expect(302, admin=403),
        )
        for m in UNSCOPED
    ],
    *[
        Row(
            f"admin {m.__name__} page",
            "GET",
            admin_url(m, "change", own_row(m)),
            expect(302, admin=200),
        )
        for m in WITH_ROWS
    ],
    *[
        Row(
            f"admin {m.__name__} page of another project",
            "GET",
            admin_url(m, "change", foreign_row(m)),
            expect(302, admin=404),
        )
        for m in WITH_ROWS
    ],
    *[
        Row(
            f"admin {m.__name__} change of another project",
            "POST",
            admin_url(m, "change", foreign_row(m)),
            expect(302, admin=404),
        )
        for m in WITH_ROWS
    ],
    Row(
        "admin role assignment added in another project",
        "POST",
        admin_url(RoleAssignment, "add"),
        expect(
            302, admin=200
        ),  # the form comes back with "Select a valid choice"; nothing is saved
        data=lambda w, persona: {
            "project": w.other_project.pk,
            "user": w.personas.viewer.pk,
            "role": "admin",
        },
    ),
    Row(
        "admin role assignment deleted in another project",
        "POST",
        admin_url(RoleAssignment, "delete", lambda w: w.foreign(RoleAssignment)),
        expect(302, admin=404),
        data=lambda w, p: {"post": "yes"},
    ),
    # guardian's object-permission pages: superusers only (roles are the way to grant)
    Row(
        "admin project permissions",
        "GET",
        admin_url(Project, "permissions", lambda w: w.project),
        expect(302, admin=403),
    ),
    Row(
        "admin project permissions of another project",
        "GET",
        admin_url(Project, "permissions", lambda w: w.other_project),
        expect(302, admin=404),
    ),
    Row(
        "admin pipeline permissions",
        "GET",
        admin_url(Pipeline, "permissions", lambda w: w.pipeline),
        expect(302, admin=403),
    ),
    Row(
        "admin pipeline permissions of another project",
        "GET",
        admin_url(Pipeline, "permissions", lambda w: w.other_pipeline),
        expect(302, admin=404),
    ),
    Row(
        "admin granting on another project's pipeline",
        "POST",
        lambda w: reverse(
            "admin:pipelines_pipeline_permissions_manage_user",
            args=[w.other_pipeline.pk, w.personas.viewer.pk],
        ),
        expect(302, admin=404),
        data=lambda w, persona: {"permissions": ["view_pipeline"]},
    ),
    Row(
        "admin granting on own project's pipeline",
        "POST",
        lambda w: reverse(
            "admin:pipelines_pipeline_permissions_manage_user",
            args=[w.pipeline.pk, w.personas.stranger.pk],
        ),
        expect(302, admin=403),
        data=lambda w, persona: {"permissions": ["view_pipeline"]},
    ),
]


def named_pipeline_url(name: str, pipeline: Callable[[World], Pipeline]) -> Callable[[World], str]:
    def build(w: World) -> str:
        p = pipeline(w)
        return reverse(name, args=[p.project.organization.slug, p.project.slug, p.identifier])

    return build


def named_execution_url(
    name: str, execution: Callable[[World], Execution]
) -> Callable[[World], str]:
    return lambda w: reverse(name, args=[execution(w).pk])


def step_log_url(
    execution: Callable[[World], Execution], name: str = "execution_step_log"
) -> Callable[[World], str]:
    def build(w: World) -> str:
        step = StepRun.objects.filter(execution=execution(w)).order_by("pk").first()
        assert step is not None, "the execution has no step run"
        return reverse(name, args=[step.execution_id, step.pk])

    return build


# Dialogs and endpoints of the pipeline and execution pages: whatever they answer to those who
# may see their object (their own tests say), an object the persona may not see is a 404 for
# every method (``None``: not decided here).
HIDDEN_IN_OTHER_PROJECT = expect(404, anonymous=302, stranger=None)
HIDDEN_FROM_DEPLOYER = expect(404, anonymous=302, members=None)
PIPELINE_ENDPOINTS = [
    ("pipeline_definition", ("GET",)),
    ("pipeline_history", ("GET",)),
    ("pipeline_edit", ("GET", "POST")),
    ("pipeline_run", ("GET", "POST")),
    ("pipeline_bulk_retry", ("GET", "POST")),
]
EXECUTION_ENDPOINTS = [
    ("execution_retry", ("GET", "POST")),
    ("execution_rerun", ("GET", "POST")),
    ("execution_approval", ("GET", "POST")),
    ("execution_abort", ("GET", "POST")),
    ("execution_intervention", ("GET", "POST")),
]
# Answering the step waiting for intervention (GET: the dialog; POST: the answer): Execute.
INTERVENTION_DIALOG = lambda w, persona: {"step": "flaky.run", "action": "retry"}  # noqa: E731
INTERVENTION_ANSWER = lambda w, persona: {"step": "flaky.run", "action": "ignore"}  # noqa: E731
ENDPOINT_ROWS = [
    Row(
        "intervention dialog",
        "GET",
        named_execution_url("execution_intervention", lambda w: w.intervening),
        expect(404, members=403, admin=200, executor=200, anonymous=302),
        data=INTERVENTION_DIALOG,
    ),
    Row(
        "answering an intervention",
        "POST",
        named_execution_url("execution_intervention", lambda w: w.intervening),
        expect(404, members=403, admin=302, executor=302, anonymous=302),
        data=INTERVENTION_ANSWER,
    ),
    Row(
        "intervention dialog in another project",
        "GET",
        named_execution_url("execution_intervention", lambda w: w.other_intervening),
        expect(404, stranger=200, anonymous=302),
        data=INTERVENTION_DIALOG,
    ),
    Row(
        "answering an intervention in another project",
        "POST",
        named_execution_url("execution_intervention", lambda w: w.other_intervening),
        expect(404, stranger=302, anonymous=302),
        data=INTERVENTION_ANSWER,
    ),
    *[
        Row(
            f"project_bulk_retry of another project ({method})",
            method,
            project_url("project_bulk_retry", OTHER),
            HIDDEN_IN_OTHER_PROJECT,
            data=lambda w, persona: {"ids": [w.other_finished.pk]},
        )
        for method in ("GET", "POST")
    ],
    *[
        Row(
            f"bulk retry of the checked executions ({method})",
            method,
            project_url("project_bulk_retry", OWN),
            expect(404, members=403, admin=200, executor=200, deployer=200, anonymous=302),
            data=lambda w, persona: {"ids": [w.finished.pk]},
        )
        for method in ("GET", "POST")
    ],
    *[
        Row(
            f"bulk retry on the pipeline page ({method})",
            method,
            named_pipeline_url("pipeline_bulk_retry", lambda w: w.pipeline),
            expect(404, members=403, admin=200, executor=200, deployer=200, anonymous=302),
            data=lambda w, persona: {"ids": [w.finished.pk]},
        )
        for method in ("GET", "POST")
    ],
    *[
        Row(
            f"{name} of another project",
            method,
            named_pipeline_url(name, lambda w: w.other_pipeline),
            HIDDEN_IN_OTHER_PROJECT,
        )
        for name, methods in PIPELINE_ENDPOINTS
        for method in methods
    ],
    *[
        Row(
            f"{name} of an ungranted sibling",
            method,
            named_pipeline_url(name, lambda w: w.sibling),
            HIDDEN_FROM_DEPLOYER,
        )
        for name, methods in PIPELINE_ENDPOINTS
        for method in methods
    ],
    *[
        Row(
            f"{name} of another project",
            method,
            named_execution_url(name, lambda w: w.other_finished),
            HIDDEN_IN_OTHER_PROJECT,
        )
        for name, methods in EXECUTION_ENDPOINTS
        for method in methods
    ],
    *[
        Row(
            f"{name} of an ungranted sibling",
            method,
            named_execution_url(name, lambda w: w.sibling_execution),
            HIDDEN_FROM_DEPLOYER,
        )
        for name, methods in EXECUTION_ENDPOINTS
        for method in methods
    ],
    Row(
        "step log of another project",
        "GET",
        step_log_url(lambda w: w.other_execution),
        HIDDEN_IN_OTHER_PROJECT,
    ),
    Row(
        "step log of an ungranted sibling",
        "GET",
        step_log_url(lambda w: w.sibling_execution),
        HIDDEN_FROM_DEPLOYER,
    ),
    # The raw log as a file: whoever may see the execution may download it.
    Row(
        "step log download",
        "GET",
        step_log_url(lambda w: w.execution, "execution_step_log_download"),
        expect(404, members=200, deployer=200, anonymous=302),
    ),
    Row(
        "step log download POST",
        "POST",
        step_log_url(lambda w: w.execution, "execution_step_log_download"),
        expect(405),
    ),
    Row(
        "step log download of an ungranted sibling",
        "GET",
        step_log_url(lambda w: w.sibling_execution, "execution_step_log_download"),
        expect(404, members=200, anonymous=302),
    ),
    Row(
        "step log download of another project",
        "GET",
        step_log_url(lambda w: w.other_execution, "execution_step_log_download"),
        expect(404, stranger=200, anonymous=302),
    ),
    # One attempt's log (?attempt=N, SPEC §9): the same checks as the step's log.
    Row(
        "step log download of one attempt",
        "GET",
        lambda w: (
            step_log_url(lambda w: w.execution, "execution_step_log_download")(w) + "?attempt=1"
        ),
        expect(404, members=200, deployer=200, anonymous=302),
    ),
    Row(
        "step log download of one attempt of another project",
        "GET",
        lambda w: (
            step_log_url(lambda w: w.other_execution, "execution_step_log_download")(w)
            + "?attempt=1"
        ),
        expect(404, stranger=200, anonymous=302),
    ),
    Row(
        "step log of one attempt of another project",
        "GET",
        lambda w: step_log_url(lambda w: w.other_execution)(w) + "?attempt=1",
        HIDDEN_IN_OTHER_PROJECT,
    ),
]


def token_of(persona: str) -> Callable[[World], str]:
    """The revoke URL of a live token of ``persona`` (made for the row, rolled back after it)."""

    def build(w: World) -> str:
        token, _ = create_token(user=w.users[persona], name="matrix", scope="read")
        return reverse("token_revoke", args=[token.pk])

    return build


# "My tokens" (docs/api.md): every signed-in user has their own; a token is revoked by its owner
# only (another user's is a 404, as if it did not exist).
TOKEN_ROWS = [
    Row("my tokens", "GET", lambda w: reverse("tokens"), expect(200, anonymous=302)),
    Row(
        "making a token",
        "POST",
        lambda w: reverse("tokens"),
        expect(201, anonymous=302),
        data=lambda w, persona: {"name": f"{persona} bot", "scope": "read", "days": "7"},
    ),
    Row(
        "revoking an executor's token",
        "POST",
        token_of("executor"),
        expect(404, executor=302, anonymous=302),
    ),
    Row("revoking a token by GET", "GET", token_of("executor"), expect(405)),
    Row(
        "revoking a token that does not exist",
        "POST",
        lambda w: reverse("token_revoke", args=[999999]),
        expect(404, anonymous=302),
    ),
]

ROWS = PAGE_ROWS + ACCESS_ROWS + ADMIN_ROWS + ENDPOINT_ROWS + TOKEN_ROWS


def snapshot() -> tuple:
    """Everything a refused request must leave alone."""
    return (
        list(RoleAssignment.objects.order_by("pk").values_list("pk", "role")),
        list(Execution.objects.order_by("pk").values_list("pk", "status")),
        list(Pipeline.objects.order_by("pk").values_list("pk", "project_id", "identifier")),
        list(AccessToken.objects.order_by("pk").values_list("pk", "revoked_at")),
    )


@pytest.mark.parametrize(
    "row, persona",
    [
        pytest.param(row, persona, id=f"{row.method} {row.name} as {persona}")
        for row in ROWS
        for persona in PERSONAS
        if row.expected[persona] is not None
    ],
)
def test_each_persona_gets_the_status_the_rules_say(db, client, world, row, persona):
    user = world.users[persona]
    if user is not None:
        client.force_login(user)
    url = row.url(world)
    before = snapshot()
    data = row.data(world, persona)
    response = client.get(url, data) if row.method == "GET" else client.post(url, data)
    expected = row.expected[persona]
    assert response.status_code == expected, f"{row.method} {url} as {persona}"
    if expected == 302 and (user is None or (url.startswith("/admin/") and not user.is_staff)):
        assert "login" in response["Location"], "a visitor who may not be here is asked to log in"
    if expected in (403, 404, 405, 409):
        assert snapshot() == before, "a refused request changed something"
    if expected == 403 and not url.startswith("/admin/"):
        assert "You need the" in response.content.decode(), "a 403 says what permission is missing"


# --- commands: the same rules, with exit code 2 and the reason ---------------------------


@dataclass(frozen=True)
class CommandRow:
    name: str
    args: Callable[[World], list[str]]
    expected: dict[str, str]  # "ok", "403" (may see, may not act) or "404" (may not see)


def outcome(**statuses: str) -> dict[str, str]:
    members = statuses.pop("members", None)
    result = dict.fromkeys(PERSONAS[:-1], statuses.pop("default", "404"))
    if members is not None:
        result.update(dict.fromkeys(MEMBERS, members))
    result.update(statuses)
    return result


def run_path(pipeline: Callable[[World], Pipeline]) -> Callable[[World], list[str]]:
    def build(w: World) -> list[str]:
        p = pipeline(w)
        return ["run_pipeline", f"{p.project.organization.slug}/{p.project.slug}/{p.identifier}"]

    return build


COMMAND_ROWS = [
    CommandRow(
        "run_pipeline",
        run_path(lambda w: w.pipeline),
        outcome(members="403", admin="ok", executor="ok", deployer="ok"),
    ),
    CommandRow(
        "run_pipeline on an ungranted sibling",
        run_path(lambda w: w.sibling),
        outcome(members="403", admin="ok", executor="ok"),
    ),
    CommandRow(
        "run_pipeline in another project",
        run_path(lambda w: w.other_pipeline),
        outcome(stranger="ok"),
    ),
    CommandRow(
        "run_pipeline of no pipeline", lambda w: ["run_pipeline", "acme/web/missing"], outcome()
    ),
    CommandRow(
        "approve",
        lambda w: ["approve", str(w.execution.pk), "approve"],
        outcome(members="403", deployer="403", admin="ok", approver="ok"),
    ),
    CommandRow(
        "approve (reject)",
        lambda w: ["approve", str(w.execution.pk), "approve", "--reject"],
        outcome(members="403", deployer="403", admin="ok", approver="ok"),
    ),
    CommandRow(
        "approve in an ungranted sibling",
        lambda w: ["approve", str(w.sibling_execution.pk), "approve"],
        outcome(members="403", admin="ok", approver="ok"),
    ),
    CommandRow(
        "approve in another project",
        lambda w: ["approve", str(w.other_execution.pk), "approve"],
        outcome(stranger="ok"),
    ),
    CommandRow(
        "abort_execution",
        lambda w: ["abort_execution", str(w.execution.pk)],
        outcome(members="403", admin="ok", executor="ok", deployer="ok"),
    ),
    CommandRow(
        "abort_execution in an ungranted sibling",
        lambda w: ["abort_execution", str(w.sibling_execution.pk)],
        outcome(members="403", admin="ok", executor="ok"),
    ),
    CommandRow(
        "abort_execution in another project",
        lambda w: ["abort_execution", str(w.other_execution.pk)],
        outcome(stranger="ok"),
    ),
    CommandRow(
        "abort_execution of no execution", lambda w: ["abort_execution", "999999"], outcome()
    ),
    CommandRow(
        "intervene",
        lambda w: ["intervene", str(w.intervening.pk), "flaky.run", "--action", "ignore"],
        outcome(members="403", admin="ok", executor="ok"),
    ),
    CommandRow(
        "intervene in another project",
        lambda w: ["intervene", str(w.other_intervening.pk), "run", "--action", "abort"],
        outcome(stranger="ok"),
    ),
    CommandRow(
        "intervene of no execution",
        lambda w: ["intervene", "999999", "run", "--action", "retry"],
        outcome(),
    ),
    CommandRow(
        "retry_execution",
        lambda w: ["retry_execution", str(w.finished.pk), "--from", "approve"],
        outcome(members="403", admin="ok", executor="ok", deployer="ok"),
    ),
    CommandRow(
        "retry_execution in another project",
        lambda w: ["retry_execution", str(w.other_finished.pk), "--from", "approve"],
        outcome(stranger="ok"),
    ),
    CommandRow(
        "retry_execution --bulk",
        lambda w: ["retry_execution", "--bulk", "acme/web", "--filter", "status=aborted"],
        outcome(members="403", admin="ok", executor="ok", deployer="ok"),
    ),
    CommandRow(
        "retry_execution --bulk in another project",
        lambda w: ["retry_execution", "--bulk", "globex/ops", "--filter", "status=aborted"],
        outcome(stranger="ok"),
    ),
    CommandRow(
        "rerun_execution",
        lambda w: ["rerun_execution", str(w.finished.pk)],
        outcome(members="403", admin="ok", executor="ok", deployer="ok"),
    ),
    CommandRow(
        "rerun_execution in another project",
        lambda w: ["rerun_execution", str(w.other_finished.pk)],
        outcome(stranger="ok"),
    ),
]


def run_command(args: list[str], username: str) -> str:
    """Run a command as ``username``: "ok", or "403"/"404" from the reason it was refused for."""
    try:
        call_command(*args, "--as", username, stdout=io.StringIO(), stderr=io.StringIO())
    except CommandError as exc:
        assert exc.returncode == 2, f"a refusal exits with status 2, not {exc.returncode}"
        message = str(exc)
        if "You need the" in message:
            return "403"
        if "may not see it" in message:
            return "404"
        raise AssertionError(f"refused for another reason: {message}") from None
    return "ok"


@pytest.mark.parametrize(
    "row, persona",
    [
        pytest.param(row, persona, id=f"{row.name} as {persona}")
        for row in COMMAND_ROWS
        for persona in PERSONAS[:-1]
    ],
)
def test_each_persona_may_run_the_commands_the_rules_say(db, world, row, persona):
    before = snapshot()
    result = run_command(row.args(world), persona)
    assert result == row.expected[persona]
    if result != "ok":
        assert snapshot() == before, "a refused command changed something"


# --- changes take effect at the next request --------------------------------------------


def test_a_revoked_role_closes_the_pages_at_the_next_request(db, client, world):
    client.force_login(world.users["viewer"])
    pipeline_page, execution_page = (
        pipeline_url(lambda w: w.pipeline)(world),
        execution_url(lambda w: w.execution.pk)(world),
    )
    assert client.get(pipeline_page).status_code == 200
    revoke_role(assignment=RoleAssignment.objects.get(user=world.users["viewer"]))
    assert client.get(pipeline_page).status_code == 404
    assert client.get(execution_page).status_code == 404
    assert client.get(project_url("project", OWN)(world)).status_code == 404


def test_a_changed_role_changes_what_the_next_request_may_do(db, client, world):
    client.force_login(world.users["viewer"])
    access_page = project_url("project_access", OWN)(world)
    assert client.get(access_page).status_code == 403
    change_role(assignment=RoleAssignment.objects.get(user=world.users["viewer"]), role="admin")
    assert client.get(access_page).status_code == 200
    assert call_command_as("abort_execution", str(world.execution.pk), user="viewer") == "ok"


def test_a_group_role_opens_the_pages_to_its_members_until_they_leave(db, client, world):
    group = Group.objects.create(name="operators")
    carol = make_user("carol")
    assign_role(project=world.project, role="executor", group=group)
    client.force_login(carol)
    page = pipeline_url(lambda w: w.pipeline)(world)
    assert client.get(page).status_code == 404
    carol.groups.add(group)
    assert client.get(page).status_code == 200
    assert client.get(execution_url(lambda w: w.sibling_execution.pk)(world)).status_code == 200
    carol.groups.remove(group)
    assert client.get(page).status_code == 404


def test_a_pipeline_only_grant_lists_that_pipeline_and_its_executions_only(db, client, world):
    client.force_login(world.users["deployer"])
    project_page = client.get(project_url("project", OWN)(world))
    assert [p.identifier for p in project_page.context["pipelines"]] == ["deploy"]
    page = project_page.content.decode()
    assert "sibling" not in page
    home = client.get(reverse("home"))
    assert [p.slug for p in home.context["projects"]] == ["web"]


def call_command_as(*args: str, user: str) -> str:
    return run_command(list(args), user)
