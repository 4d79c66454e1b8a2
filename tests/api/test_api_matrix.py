"""Who gets what from the JSON API: every endpoint, for every persona, signed in by session and
by personal access token (read-write), in the style of tests/test_access_matrix.py (whose world
this reuses: one role each in acme/web, the stranger Project Admin of globex/ops only, the
deployer an Executor on the pipeline ``deploy`` alone, and an anonymous caller).

The rules (SPEC §6, docs/api.md): no credentials 401; what the caller may not see 404 (whether
or not it exists); what it may see but not do 403, naming the missing permission; a refused
request changes nothing. A read-only token reads, and is refused (403) every write endpoint
of the schema.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from django.db import transaction

from api.tokens import create_token
from executions.models import Execution, StepRun
from executions.services import run_pipeline
from executions.states import Status
from tests.helpers.factories import make_pipeline
from tests.helpers.runs import drive
from tests.test_access_matrix import MEMBERS, PERSONAS, World, build_world, snapshot

AUTHS = ("session", "token")

# A pipeline whose step fails and waits for a person (no role of the deployer's).
MENDED_PIPELINE = """
pipeline:
  name: mend
  identifier: mend
  stages:
    - stage:
        identifier: fix
        steps:
          - step:
              identifier: run
              type: ShellScript
              failure_strategies:
                - on_failure: {errors: [all], action: {type: manual_intervention, timeout: 1h}}
              spec: {script: exit 1}
"""


def waiting_for_intervention(project, user) -> Execution:
    pipeline = make_pipeline(project, MENDED_PIPELINE)
    execution = drive(run_pipeline(pipeline=pipeline, user=user, inputs={}))
    assert execution.status == Status.INTERVENTION_WAITING, execution.error
    return execution


@pytest.fixture(scope="module")
def world(django_db_setup, django_db_blocker):
    with django_db_blocker.unblock(), transaction.atomic():
        built = build_world()
        built.tokens = {  # type: ignore[attr-defined]
            name: create_token(user=user, name="matrix", scope="read-write")[1]
            for name, user in built.users.items()
            if user is not None
        }
        built.intervention = waiting_for_intervention(  # type: ignore[attr-defined]
            built.project, built.users["admin"]
        )
        built.other_intervention = waiting_for_intervention(  # type: ignore[attr-defined]
            built.other_project, built.users["stranger"]
        )
        yield built
        transaction.set_rollback(True)


def expect(default: int, **statuses: int) -> dict[str, int]:
    result = dict.fromkeys(PERSONAS, default)
    if "members" in statuses:
        result.update(dict.fromkeys(MEMBERS, statuses.pop("members")))
    assert not set(statuses) - set(PERSONAS)
    result["anonymous"] = 401  # no credentials, or a token nobody has
    result.update(statuses)
    return result


@dataclass(frozen=True)
class Row:
    name: str
    method: str
    url: Callable[[World], str]
    expected: dict[str, int]
    body: Callable[[World], dict] = field(default=lambda w: {})


API = "/api/v1"
OWN = f"{API}/projects/acme/web"
OTHER = f"{API}/projects/globex/ops"


def execution(path: str, pick: Callable[[World], object]) -> Callable[[World], str]:
    return lambda w: f"{API}/executions/{getattr(pick(w), 'pk', pick(w))}{path}"


def first_step_log(pick: Callable[[World], Execution]) -> Callable[[World], str]:
    def build(w: World) -> str:
        step = StepRun.objects.filter(execution=pick(w)).order_by("pk").first()
        assert step is not None
        return f"{API}/executions/{step.execution_id}/steps/{step.pk}/log"

    return build


def step_intervention(pick: Callable[[World], Execution], stage: str) -> Callable[[World], str]:
    def build(w: World) -> str:
        step = StepRun.objects.get(execution=pick(w), stage_run__identifier=stage)
        return f"{API}/executions/{step.execution_id}/steps/{step.pk}/intervention"

    return build


def api_snapshot() -> tuple:
    """Everything a refused request must leave alone, with every step's status and attempts."""
    steps = StepRun.objects.order_by("pk").values_list("pk", "status", "attempts", "comment")
    return snapshot(), list(steps)


RUNNERS = dict(admin=201, executor=201, deployer=201)  # Execute on deploy
ROWS = [
    Row("schema", "GET", lambda w: f"{API}/schema", expect(200, anonymous=200)),
    Row("docs page", "GET", lambda w: f"{API}/docs", expect(200, anonymous=200)),
    Row("projects", "GET", lambda w: f"{API}/projects", expect(200)),
    Row("pipelines", "GET", lambda w: f"{OWN}/pipelines", expect(404, members=200, deployer=200)),
    Row(
        "pipelines of another project",
        "GET",
        lambda w: f"{OTHER}/pipelines",
        expect(404, stranger=200),
    ),
    Row(
        "pipelines of no project",
        "GET",
        lambda w: f"{API}/projects/acme/none/pipelines",
        expect(404),
    ),
    Row("executions", "GET", lambda w: f"{OWN}/executions", expect(404, members=200, deployer=200)),
    Row(
        "executions of another project",
        "GET",
        lambda w: f"{OTHER}/executions",
        expect(404, stranger=200),
    ),
    Row(
        "executions of a pipeline",
        "GET",
        lambda w: f"{OWN}/pipelines/deploy/executions",
        expect(404, members=200, deployer=200),
    ),
    Row(
        "executions of an ungranted sibling",
        "GET",
        lambda w: f"{OWN}/pipelines/sibling/executions",
        expect(404, members=200),
    ),
    Row(
        "execution",
        "GET",
        execution("", lambda w: w.execution),
        expect(404, members=200, deployer=200),
    ),
    Row(
        "execution of an ungranted sibling",
        "GET",
        execution("", lambda w: w.sibling_execution),
        expect(404, members=200),
    ),
    Row(
        "execution of another project",
        "GET",
        execution("", lambda w: w.other_execution),
        expect(404, stranger=200),
    ),
    Row("execution that does not exist", "GET", execution("", lambda w: 999999), expect(404)),
    Row(
        "step log",
        "GET",
        first_step_log(lambda w: w.execution),
        expect(404, members=200, deployer=200),
    ),
    Row(
        "step log of an attempt",
        "GET",
        lambda w: first_step_log(lambda w: w.execution)(w) + "?attempt=1",
        expect(404, members=200, deployer=200),
    ),
    Row(
        "step log of another project",
        "GET",
        first_step_log(lambda w: w.other_execution),
        expect(404, stranger=200),
    ),
    Row(
        "run",
        "POST",
        lambda w: f"{OWN}/pipelines/deploy/run",
        expect(404, members=403, **RUNNERS),
    ),
    Row(
        "run an ungranted sibling",
        "POST",
        lambda w: f"{OWN}/pipelines/sibling/run",
        expect(404, members=403, admin=201, executor=201),
    ),
    Row(
        "run in another project",
        "POST",
        lambda w: f"{OTHER}/pipelines/deploy/run",
        expect(404, stranger=201),
    ),
    Row(
        "retry plan",
        "GET",
        execution("/retry", lambda w: w.finished),
        expect(404, members=403, admin=200, executor=200, deployer=200),
    ),
    Row(
        "retry plan in another project",
        "GET",
        execution("/retry", lambda w: w.other_finished),
        expect(404, stranger=200),
    ),
    Row(
        "retry",
        "POST",
        execution("/retry", lambda w: w.finished),
        expect(404, members=403, **RUNNERS),
        body=lambda w: {"from_stage": "approve"},
    ),
    Row(
        "retry in another project",
        "POST",
        execution("/retry", lambda w: w.other_finished),
        expect(404, stranger=201),
        body=lambda w: {"from_stage": "approve"},
    ),
    Row(
        "rerun",
        "POST",
        execution("/rerun", lambda w: w.finished),
        expect(404, members=403, **RUNNERS),
    ),
    Row(
        "rerun in another project",
        "POST",
        execution("/rerun", lambda w: w.other_finished),
        expect(404, stranger=201),
    ),
    Row(
        "abort",
        "POST",
        execution("/abort", lambda w: w.execution),
        expect(404, members=403, admin=200, executor=200, deployer=200),
    ),
    Row(
        "abort an ungranted sibling",
        "POST",
        execution("/abort", lambda w: w.sibling_execution),
        expect(404, members=403, admin=200, executor=200),
    ),
    Row(
        "abort in another project",
        "POST",
        execution("/abort", lambda w: w.other_execution),
        expect(404, stranger=200),
    ),
    Row(
        "approve",
        "POST",
        execution("/approve", lambda w: w.execution),
        expect(404, members=403, deployer=403, admin=200, approver=200),
        body=lambda w: {"stage": "approve"},
    ),
    Row(
        "reject",
        "POST",
        execution("/reject", lambda w: w.execution),
        expect(404, members=403, deployer=403, admin=200, approver=200),
    ),
    Row(
        "bulk retry preview",
        "GET",
        lambda w: f"{OWN}/retries",
        expect(404, members=403, admin=200, executor=200, deployer=200),
    ),
    Row(
        "bulk retry",
        "POST",
        lambda w: f"{OWN}/retries",
        expect(404, members=403, admin=200, executor=200, deployer=200),
        body=lambda w: {"ids": [w.finished.pk]},
    ),
    Row(
        "bulk retry in another project",
        "POST",
        lambda w: f"{OTHER}/retries",
        expect(404, stranger=200),
        body=lambda w: {"ids": [w.other_finished.pk]},
    ),
    Row(
        "intervene",
        "POST",
        step_intervention(lambda w: w.intervention, "fix"),  # type: ignore[attr-defined]
        expect(404, members=403, admin=200, executor=200),
        body=lambda w: {"action": "ignore", "comment": "matrix"},
    ),
    Row(
        "intervene in another project",
        "POST",
        step_intervention(lambda w: w.other_intervention, "fix"),  # type: ignore[attr-defined]
        expect(404, stranger=200),
        body=lambda w: {"action": "retry"},
    ),
    Row(
        "intervene on a step that waits for an approval",
        "POST",
        step_intervention(lambda w: w.execution, "approve"),
        expect(404, members=403, admin=409, executor=409, deployer=409),
        body=lambda w: {"action": "ignore"},
    ),
    Row(
        "approve in another project",
        "POST",
        execution("/approve", lambda w: w.other_execution),
        expect(404, stranger=200),
    ),
]


@pytest.mark.parametrize(
    "row, persona, auth",
    [
        pytest.param(row, persona, auth, id=f"{row.method} {row.name} as {persona} by {auth}")
        for row in ROWS
        for persona in PERSONAS
        for auth in AUTHS
    ],
)
def test_each_persona_gets_the_status_the_rules_say(db, client, world, row, persona, auth):
    user = world.users[persona]
    headers = {}
    if auth == "session" and user is not None:
        client.force_login(user)
    if auth == "token":
        token = world.tokens.get(persona, "stl_" + "x" * 43)  # anonymous: a token nobody has
        headers["Authorization"] = f"Bearer {token}"
    url = row.url(world)
    before = api_snapshot()
    if row.method == "GET":
        response = client.get(url, headers=headers)
    else:
        response = client.post(
            url, row.body(world), content_type="application/json", headers=headers
        )
    expected = row.expected[persona]
    assert response.status_code == expected, (
        f"{row.method} {url} as {persona} by {auth}: {response.content[:300]!r}"
    )
    if expected >= 400:
        assert api_snapshot() == before, "a refused request changed something"
        assert response.json()["detail"], "a refusal says why"
    if expected == 403:
        assert "You need the" in response.json()["detail"], "a 403 names the missing permission"


# --- a read-only token: reads, and is refused every write ----------------------------------

WRITE_ROWS = [row for row in ROWS if row.method == "POST" and row.expected["admin"] in (200, 201)]


def test_every_write_endpoint_of_the_api_has_a_row_for_the_read_only_token(client, world):
    """The write endpoints, read from the OpenAPI schema of api/v1.py: a new one needs a row."""
    schema = client.get(f"{API}/schema").json()
    writes = {
        path
        for path, methods in schema["paths"].items()
        for method in methods
        if method in ("post", "put", "patch", "delete")
    }
    assert len(writes) >= 8, writes  # run, retry, bulk retry, rerun, abort, approve, reject, ...
    urls = [row.url(world) for row in WRITE_ROWS]
    for path in writes:
        pattern = re.compile(
            "^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(path)).rstrip("/") + "/?$"
        )
        assert any(pattern.match(url) for url in urls), f"no read-only token row for POST {path}"


@pytest.mark.parametrize("row", WRITE_ROWS, ids=[row.name for row in WRITE_ROWS])
def test_a_read_only_token_is_refused_every_write(db, client, world, row):
    _, raw = create_token(user=world.users["admin"], name="reader", scope="read")
    before = api_snapshot()
    response = client.post(
        row.url(world),
        row.body(world),
        content_type="application/json",
        headers={"Authorization": f"Bearer {raw}"},
    )
    assert response.status_code == 403, response.content
    assert "may only read" in response.json()["detail"]
    assert api_snapshot() == before, "a refused write changed something"


def test_a_read_only_token_reads(db, client, world):
    _, raw = create_token(user=world.users["admin"], name="reader", scope="read")
    headers = {"Authorization": f"Bearer {raw}"}
    detail = client.get(f"{API}/executions/{world.execution.pk}", headers=headers)
    assert detail.status_code == 200 and detail.json()["id"] == world.execution.pk
    plan = client.get(f"{API}/executions/{world.finished.pk}/retry", headers=headers)
    assert plan.status_code == 200 and plan.json()["selected"], "the dry run is a read"
