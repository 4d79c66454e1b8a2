"""Helpers shared by the execution-page view tests (and the engine cost tests): pipelines in
YAML, ``drive`` (run every queued step of an execution here, with the real engine and runners:
the test transaction never commits, so nothing reaches a broker), and page/markup accessors."""

from __future__ import annotations

import re
import textwrap

from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from executions.models import Execution, Status
from executions.retry import create_retry
from executions.services import run_pipeline
from tests.helpers.factories import make_pipeline
from tests.helpers.runs import drive

SERIAL_YAML = """
pipeline:
  name: Web deploy
  identifier: web
  variables:
    - {name: version, type: String, value: <+input>, default: "1.0", allowed_values: ["1.0", "2.0"]}
  stages:
    - stage:
        identifier: build
        name: Build
        variables:
          - {name: flavour, type: String, value: <+input>, default: plain}
        steps:
          - step:
              identifier: compile
              name: Compile
              type: ShellScript
              spec:
                script: |
                  echo "building <+pipeline.variables.version>-<+stage.variables.flavour>"
                  echo "image=app:<+pipeline.variables.version>" >> "$STAGELINE_OUTPUT"
    - stage:
        identifier: test
        name: Test
        variables:
          - {name: suite, type: String, value: <+input>, default: smoke, allowed_values: [smoke, full]}
        steps:
          - step:
              identifier: unit
              name: Unit tests
              type: ShellScript
              spec:
                script: |
                  echo "testing <+pipeline.stages.build.output.image> with <+stage.variables.suite>"
    - stage:
        identifier: deploy
        name: Deploy
        variables:
          - {name: fail, type: String, value: <+input>, default: "no", allowed_values: ["no", "yes"]}
          - {name: token, type: Secret, value: <+input>}
        steps:
          - step:
              identifier: rollout
              name: Roll out
              type: ShellScript
              spec:
                script: |
                  echo "deploying <+pipeline.stages.build.output.image> with token <+stage.variables.token>"
                  echo '<script>alert("x")</script> <b hx-get="/admin/">bold</b>'
                  if [ "<+stage.variables.fail>" = "yes" ]; then echo "health check failed"; exit 3; fi
"""

PARALLEL_YAML = """
pipeline:
  name: Regions
  identifier: regions
  stages:
    - stage:
        identifier: build
        name: Build
        steps:
          - step: {identifier: s, name: Compile, type: ShellScript, spec: {script: 'echo "v=9" >> "$STAGELINE_OUTPUT"'}}
    - parallel:
        - stage:
            identifier: eu
            name: Deploy EU
            variables:
              - {name: fail, type: String, value: <+input>, default: "no", allowed_values: ["no", "yes"]}
            steps:
              - step: {identifier: s, name: Roll out, type: ShellScript, spec: {script: 'echo eu; [ "<+stage.variables.fail>" = "no" ]'}}
        - stage:
            identifier: us
            name: Deploy US
            steps:
              - step: {identifier: s, name: Roll out, type: ShellScript, spec: {script: 'echo us'}}
    - stage:
        identifier: release
        name: Release
        steps:
          - step: {identifier: s, name: Publish, type: ShellScript, spec: {script: 'echo release'}}
"""

APPROVAL_YAML = """
pipeline:
  name: Gated
  identifier: gated
  stages:
    - stage:
        identifier: build
        name: Build
        steps:
          - step: {identifier: s, name: Compile, type: ShellScript, spec: {script: 'echo "v=7" >> "$STAGELINE_OUTPUT"'}}
    - stage:
        identifier: approve
        name: Approve production
        steps:
          - step: {identifier: gate, name: Release manager, type: Approval, timeout: 1h, spec: {message: "Ship v<+pipeline.stages.build.output.v> <b>now</b>?"}}
    - stage:
        identifier: ship
        name: Ship
        steps:
          - step: {identifier: s, name: Publish, type: ShellScript, spec: {script: 'echo shipped'}}
"""


FLAKY_FETCH_YAML = """
pipeline:
  name: Flaky fetch
  identifier: flaky_fetch
  stages:
    - stage:
        identifier: build
        name: Build
        steps:
          - step:
              identifier: fetch
              name: Fetch
              type: ShellScript
              failure_strategies:
                - on_failure:
                    errors: [script]
                    action: {type: retry, retry: {count: 2INTERVALS}}
              spec:
                script: |
                  n=$(cat DIR/count 2>/dev/null || echo 0); n=$((n+1)); echo "$n" > DIR/count
                  echo "attempt $n says hello"
                  [ "$n" -ge 3 ] || exit $((n + 10))
"""


def flaky_fetch_yaml(shared_dir, intervals: str = "") -> str:
    """A step that fails its first two attempts (exit 11, then 12) and passes the third, under a
    retry rule of count 2 (``intervals``: e.g. "4s"); its counter lives in ``shared_dir``."""
    return FLAKY_FETCH_YAML.replace("DIR", str(shared_dir)).replace(
        "INTERVALS", f", intervals: [{intervals}]" if intervals else ""
    )


def many_stages_yaml(count: int) -> str:
    """``count`` serial stages, each with a runtime input; the last one fails."""
    stages = "".join(
        textwrap.dedent(
            f"""
            - stage:
                identifier: s{index}
                name: Stage {index}
                variables:
                  - {{name: note, type: String, value: <+input>, default: "n{index}"}}
                steps:
                  - step: {{identifier: run, name: Run, type: ShellScript, spec: {{script: "echo stage {index}{"; exit 1" if index == count - 1 else ""}"}}}}
            """
        )
        for index in range(count)
    )
    return (
        f"pipeline:\n  name: Many {count}\n  identifier: many_{count}\n  stages:"
        + textwrap.indent(stages, "  ")
    )


def run(pipeline, user, **inputs) -> Execution:
    """Start ``pipeline`` and run it to its end (or to a waiting approval)."""
    return drive(run_pipeline(pipeline=pipeline, user=user, inputs=inputs))


def failed_serial(personas) -> Execution:
    """The serial pipeline, failed at deploy (with a secret token)."""
    pipeline = make_pipeline(personas.project, SERIAL_YAML)
    execution = run(
        pipeline,
        personas.executor,
        **{"deploy.fail": "yes", "build.flavour": "gold", "deploy.token": "s3cr3t-t0ken"},
    )
    assert execution.status == Status.FAILED
    return execution


def failed_parallel(personas) -> Execution:
    execution = run(
        make_pipeline(personas.project, PARALLEL_YAML), personas.executor, **{"eu.fail": "yes"}
    )
    assert execution.status == Status.FAILED
    return execution


def htmx(target: str | None = None) -> dict[str, str]:
    headers = {"HX-Request": "true"}
    if target:
        headers["HX-Target"] = target
    return headers


def page_url(execution: Execution) -> str:
    return reverse("execution", args=[execution.pk])


def as_user(client, user):
    client.force_login(user)
    return client


def graph_columns(html: str) -> list[list[str]]:
    """The stage identifiers of each column of the stage graph, left to right."""
    graph = html[html.index('<ol class="graph">') :]
    graph = graph[: graph.index("</ol>\n  </section>")]
    return [
        re.findall(r'data-stage="([^"]+)"', part)
        for part in graph.split('<li class="graph-column')[1:]
    ]


def stage_card(html: str, identifier: str) -> str:
    start = html.index(f'id="stage-{identifier}"')
    return html[start : html.index("</article>", start)]


def action_html(html: str, name: str) -> str:
    """The markup of one action button (and its disabled reason)."""
    start = html.index('id="actions"')
    bar = html[start : html.index("</div>", start)]
    for piece in re.split(r"(?=<span class=\"action-disabled\">|<button)", bar):
        if f'id="{name}-button"' in piece or f'id="{name}-reason"' in piece:
            return piece
    raise AssertionError(f"no action {name} in {bar}")


def retried_many(personas, count: int) -> Execution:
    """A failed execution of ``count`` stages, retried from its last stage (failing again): its
    page shows ``count - 1`` carried-over stages and a retry history."""
    pipeline = make_pipeline(personas.project, many_stages_yaml(count))
    first = run(pipeline, personas.executor)
    retry = drive(create_retry(execution=first, user=personas.executor, from_stage=f"s{count - 1}"))
    assert retry.status == Status.FAILED
    return retry


def count_queries(client, url: str, **kwargs) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url, **kwargs)
    assert response.status_code == 200
    return len(queries)
