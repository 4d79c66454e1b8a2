"""Hostile and broken input through the web: each is refused with a 4xx and a message naming
the problem, and changes nothing.

- the pipeline editor: malformed YAML, YAML bombs (anchors and aliases, huge documents, deep
  nesting, object-building tags), bodies past the upload limit;
- runtime inputs that try to inject shell syntax: they reach the step only as environment
  variables (``executions.context``), proven end to end on a real worker;
- tampered Retry / Rerun / Approve / Run forms: other projects' ids, stages not offered,
  frozen values, unknown inputs, oversized values, NUL characters; unicode goes through intact;
- random form posts at the retry endpoint (hypothesis): never a 500.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from django.db import transaction
from django.urls import reverse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from executions.models import Execution, LogChunk, Status
from executions.services import run_pipeline
from pipelines.models import PipelineVersion
from tests.helpers.factories import make_pipeline
from tests.helpers.runs import drive, wait_for_status

RELEASE_YAML = """
pipeline:
  name: Release
  identifier: release
  allow_stage_selection: true
  variables:
    - {name: version, type: String, value: <+input>, default: "1.0"}
  stages:
    - stage:
        identifier: build
        name: Build
        variables:
          - {name: flavour, type: String, value: <+input>, default: plain}
        steps:
          - step: {identifier: compile, type: ShellScript, spec: {script: 'echo "built <+stage.variables.flavour>"'}}
    - stage:
        identifier: deploy
        name: Deploy
        variables:
          - {name: target, type: String, value: <+input>, default: eu}
        steps:
          - step: {identifier: rollout, type: ShellScript, spec: {script: 'echo "deploying to <+stage.variables.target>"; exit 3'}}
    - stage:
        identifier: notify
        name: Notify
        steps:
          - step: {identifier: mail, type: ShellScript, spec: {script: 'echo sent'}}
"""


@pytest.fixture
def failed(personas) -> Execution:
    """Release #1: build succeeded, deploy failed, notify never ran."""
    pipeline = make_pipeline(personas.project, RELEASE_YAML)
    execution = drive(
        run_pipeline(pipeline=pipeline, user=personas.executor, inputs={"build.flavour": "gold"})
    )
    assert execution.status == Status.FAILED
    return execution


@pytest.fixture
def executor_client(client, personas):
    client.force_login(personas.executor)
    return client


def text_of(response) -> str:
    return response.content.decode()


# --- the pipeline editor ---------------------------------------------------------------------

LAUGHS = "\n".join(
    [
        'pipeline:\n  name: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]',
        *[f"  n{i}: &{chr(98 + i)} [{','.join(['*' + chr(97 + i)] * 9)}]" for i in range(8)],
        "  identifier: release\n  stages: []",
    ]
)
HOSTILE_YAML = {
    "malformed": ("pipeline:\n  name: [unclosed\n  identifier: release\n", "invalid YAML"),
    "tab indentation": ("pipeline:\n\tname: x\n", "a tab cannot indent YAML"),
    "billion laughs": (LAUGHS, "anchors and aliases are not allowed"),
    "merge key alias": (
        "base: &base {timeout: 1m}\npipeline:\n  <<: *base\n  identifier: release\n",
        "anchors and aliases are not allowed",
    ),
    "deep flow nesting": (
        "pipeline: " + "[" * 5000 + "]" * 5000 + "\n",
        "nests deeper than 20 levels",
    ),
    "deep block nesting": (
        "pipeline:\n"
        + "".join("  " * (i + 1) + f"k{i}:\n" for i in range(60))
        + "  " * 61
        + "v: 1\n",
        "nests deeper than 20 levels",
    ),
    "python object tag": (
        "pipeline: !!python/object/apply:os.system ['touch /tmp/stageline-pwned']\n",
        "is not allowed",
    ),
    "huge document": (
        "pipeline:\n" + "# padding padding padding padding\n" * 9000,
        "larger than 256 KiB",
    ),
    "not a mapping": ("- just\n- a\n- list\n", "pipeline"),
}


@pytest.mark.parametrize("case", list(HOSTILE_YAML))
def test_the_editor_refuses_hostile_yaml_quickly_with_a_message_and_saves_nothing(
    client, personas, case
):
    text, reason = HOSTILE_YAML[case]
    pipeline = make_pipeline(personas.project, RELEASE_YAML)
    client.force_login(personas.admin)
    url = reverse("pipeline_edit", args=["acme", "web", "release"])
    started = time.monotonic()
    response = client.post(url, {"yaml": text, "base_version": "1"}, headers={"HX-Request": "true"})
    took = time.monotonic() - started
    print(f"{case}: {len(text.encode())} bytes refused in {took * 1000:.0f} ms")
    assert response.status_code == 400, case
    assert "nothing was saved" in text_of(response) and reason in text_of(response), case
    assert took < 3, f"refusing the {case} took {took:.1f}s"
    assert list(
        PipelineVersion.objects.filter(pipeline=pipeline).values_list("number", flat=True)
    ) == [1]
    assert not Path("/tmp/stageline-pwned").exists()


def test_a_nul_character_in_the_definition_is_named_as_the_problem_and_saves_nothing(
    client, personas
):
    pipeline = make_pipeline(personas.project, RELEASE_YAML)
    client.force_login(personas.admin)
    url = reverse("pipeline_edit", args=["acme", "web", "release"])
    response = client.post(url, {"yaml": "pipeline:\n  name: a\x00b\n", "base_version": "1"})
    assert response.status_code == 400
    assert "Null characters are not allowed" in text_of(response)
    assert "The definition is empty" not in text_of(response), "a second, wrong reason is shown"
    assert PipelineVersion.objects.filter(pipeline=pipeline).count() == 1


def test_a_body_past_the_upload_limit_is_refused_with_400_and_saves_nothing(client, personas):
    pipeline = make_pipeline(personas.project, RELEASE_YAML)
    client.force_login(personas.admin)
    url = reverse("pipeline_edit", args=["acme", "web", "release"])
    response = client.post(url, {"yaml": "# x\n" * 800_000, "base_version": "1"})  # 3.2 MB
    assert response.status_code == 400
    assert "too large" in text_of(response).lower(), "the 400 page does not say what was wrong"
    assert PipelineVersion.objects.filter(pipeline=pipeline).count() == 1


# --- runtime inputs never reach the shell as code ------------------------------------------------

INJECTION_YAML = """
pipeline:
  name: Echo
  identifier: echo
  variables:
    - {name: payload, type: String, value: <+input>, multiline: true}
  stages:
    - stage:
        identifier: say
        name: Say
        steps:
          - step:
              identifier: quoted
              type: ShellScript
              spec:
                script: |
                  echo "quoted=[<+pipeline.variables.payload>]"
                  echo unquoted=[<+pipeline.variables.payload>]
                  echo 'single=[<+pipeline.variables.payload>]'
                  echo "env=[$PAYLOAD]"
                  echo "out=<+pipeline.variables.payload>" >> "$STAGELINE_OUTPUT"
                env:
                  PAYLOAD: <+pipeline.variables.payload>
    - stage:
        identifier: reuse
        name: Reuse
        steps:
          - step: {identifier: again, type: ShellScript, spec: {script: 'echo "again=[<+pipeline.stages.say.output.out>]"'}}
"""


@pytest.mark.engine
@pytest.mark.parametrize(
    "template",
    [
        "$(touch {marker})",
        "`touch {marker}`",
        '"; touch {marker}; echo "',
        "'; touch {marker}; echo '",
        "x\ntouch {marker}",
        "$(touch {marker}) ${{IFS}} $((1+1)) ; && || > {marker}.redirect",
    ],
)
def test_runtime_inputs_reach_the_step_as_data_never_as_shell_code(
    client, worker, personas, shared_dir, template
):
    marker = shared_dir / "pwned"  # a folder the step could write, were the input shell code
    payload = template.format(marker=marker)
    make_pipeline(personas.project, INJECTION_YAML)
    client.force_login(personas.executor)
    response = client.post(
        reverse("pipeline_run", args=["acme", "web", "echo"]),
        {"input-payload": payload},
        headers={"HX-Request": "true"},
    )
    assert response.status_code == 200 and response.headers["HX-Redirect"].startswith(
        "/executions/"
    )
    execution = Execution.objects.get(pk=int(response.headers["HX-Redirect"].split("/")[2]))
    execution = wait_for_status(execution, Status.SUCCESS)
    log = "".join(
        LogChunk.objects.filter(step_run__execution=execution)
        .order_by("step_run_id", "seq")
        .values_list("text", flat=True)
    )

    assert not marker.exists() and not Path(f"{marker}.redirect").exists(), (
        "the input ran as shell code"
    )
    assert f"quoted=[{payload}]" in log
    assert f"env=[{payload}]" in log
    assert (
        "single=[${SL_PIPELINE_VARIABLES_PAYLOAD}]" in log
    )  # single quotes: not expanded, as in any shell
    first_line = payload.split("\n")[0]
    assert f"again=[{first_line}" in log  # an output carrying the payload is data too


# --- tampered forms --------------------------------------------------------------------------

RETRY_TAMPERING = {
    "a stage that never ran": ({"from_stage": "notify"}, 400, "cannot be retried from"),
    "an unknown stage": ({"from_stage": "ghost"}, 400, "is not in this pipeline"),
    "no stage": ({"from_stage": ""}, 400, "Pick the stage to retry from"),
    "a frozen pipeline input": ({"from_stage": "deploy", "input-version": "2.0"}, 400, "use Rerun"),
    "a carried-over stage's input": (
        {"from_stage": "deploy", "input-build.flavour": "x"},
        400,
        "carried over",
    ),
    "an unknown input": ({"from_stage": "deploy", "input-rm -rf": "x"}, 400, "not a runtime input"),
    "an unknown mode": ({"from_stage": "deploy", "mode": "everything"}, 400, "Unknown retry mode"),
    "an oversized input": (
        {"from_stage": "deploy", "input-deploy.target": "x" * 5000},
        400,
        "longer than 4096",
    ),
    "a NUL in an input": ({"from_stage": "deploy", "input-deploy.target": "a\x00b"}, 400, "NUL"),
    "an oversized reason": ({"from_stage": "deploy", "reason": "r" * 2001}, 400, "2000 characters"),
}


@pytest.mark.parametrize("case", list(RETRY_TAMPERING))
@pytest.mark.parametrize("hx", [False, True], ids=["page", "htmx"])
def test_a_tampered_retry_is_refused_with_its_reason_and_creates_nothing(
    executor_client, failed, case, hx
):
    form, status, reason = RETRY_TAMPERING[case]
    before = Execution.objects.count()
    response = executor_client.post(
        reverse("execution_retry", args=[failed.pk]),
        form,
        headers={"HX-Request": "true"} if hx else {},
    )
    assert response.status_code == status, (case, text_of(response)[:300])
    assert reason in text_of(response).replace("&#x27;", "'"), case
    assert Execution.objects.count() == before
    assert not Execution.objects.filter(retry_of=failed).exists()


def test_retrying_or_rerunning_another_projects_execution_is_not_found_and_creates_nothing(
    client, personas
):
    theirs = drive(
        run_pipeline(
            pipeline=make_pipeline(personas.other_project, RELEASE_YAML),
            user=personas.stranger,
            inputs={},
        )
    )
    client.force_login(personas.executor)
    before = Execution.objects.count()
    for name, form in [
        ("execution_retry", {"from_stage": "deploy"}),
        ("execution_rerun", {}),
        ("execution_abort", {}),
    ]:
        response = client.post(reverse(name, args=[theirs.pk]), form)
        assert response.status_code == 404, name
    response = client.post(
        reverse("execution_approval", args=[theirs.pk]), {"stage": "deploy", "decision": "approve"}
    )
    assert response.status_code == 404
    assert Execution.objects.count() == before


def test_a_viewer_posting_a_retry_is_refused_with_403_and_creates_nothing(client, personas, failed):
    client.force_login(personas.viewer)
    response = client.post(reverse("execution_retry", args=[failed.pk]), {"from_stage": "deploy"})
    assert response.status_code == 403
    assert not Execution.objects.filter(retry_of=failed).exists()


ALL_STAGES = ["build", "deploy", "notify"]
RERUN_TAMPERING = {
    "an unknown stage": ({"stages": ["ghost"]}, "Unknown stage"),
    "an oversized input": ({"stages": ALL_STAGES, "input-version": "v" * 5000}, "longer than 4096"),
    "an unknown input": ({"stages": ALL_STAGES, "input-nope": "1"}, "not a runtime input"),
    "a NUL in an input": ({"stages": ALL_STAGES, "input-deploy.target": "\x00"}, "NUL"),
}


@pytest.mark.parametrize("case", list(RERUN_TAMPERING))
def test_a_tampered_rerun_is_refused_with_its_reason_and_creates_nothing(
    executor_client, failed, case
):
    form, reason = RERUN_TAMPERING[case]
    before = Execution.objects.count()
    response = executor_client.post(
        reverse("execution_rerun", args=[failed.pk]), form, headers={"HX-Request": "true"}
    )
    assert response.status_code == 400, (case, text_of(response)[:300])
    assert reason in text_of(response).replace("&#x27;", "'"), case
    assert Execution.objects.count() == before


@pytest.mark.parametrize(
    "form, reason",
    [
        ({"stage": "deploy", "decision": "maybe"}, "Choose Approve or Reject"),
        ({"stage": "", "decision": "approve"}, "Say which stage"),
        ({"stage": "deploy", "decision": "approve", "comment": "c" * 2001}, "2000 characters"),
        ({"stage": "deploy", "decision": "approve"}, "not waiting for approval"),
    ],
)
def test_a_tampered_approval_is_refused_with_its_reason_and_changes_nothing(
    client, personas, failed, form, reason
):
    client.force_login(personas.approver)
    response = client.post(reverse("execution_approval", args=[failed.pk]), form)
    assert 400 <= response.status_code < 500
    assert reason in text_of(response).replace("&#x27;", "'")
    assert Execution.objects.get(pk=failed.pk).status == Status.FAILED


@pytest.mark.parametrize(
    "form, reason",
    [
        ({"input-version": "x" * 5000}, "longer than 4096"),
        ({"input-version": "1\x002"}, "NUL"),
        ({"input-$(id)": "1"}, "not a runtime input"),
        ({"stages": ["ghost"]}, "Unknown stage(s): ghost"),
    ],
)
def test_a_tampered_run_is_refused_with_its_reason_and_starts_nothing(
    executor_client, personas, form, reason
):
    make_pipeline(personas.project, RELEASE_YAML)
    response = executor_client.post(reverse("pipeline_run", args=["acme", "web", "release"]), form)
    assert response.status_code == 400
    assert reason in text_of(response).replace("&#x27;", "'")
    assert not Execution.objects.exists()


UNICODE = "déploiement 🚀 ℵ₀ 日本語 \u202eRTL\u202c e\u0301 \U0001f9d1\u200d\U0001f680"


def test_unicode_inputs_go_through_a_retry_and_a_rerun_intact(executor_client, failed):
    response = executor_client.post(
        reverse("execution_retry", args=[failed.pk]),
        {"from_stage": "deploy", "input-deploy.target": UNICODE, "reason": UNICODE},
    )
    assert response.status_code == 302
    retry = Execution.objects.get(retry_of=failed)
    assert retry.inputs["deploy.target"] == UNICODE and retry.reason == UNICODE
    assert drive(retry).status == Status.FAILED
    log = "".join(LogChunk.objects.filter(step_run__execution=retry).values_list("text", flat=True))
    assert f"deploying to {UNICODE}" in log
    page = executor_client.get(reverse("execution", args=[retry.pk]))
    assert UNICODE in text_of(page)

    response = executor_client.post(
        reverse("execution_rerun", args=[retry.pk]),
        {"stages": ALL_STAGES, "input-version": UNICODE},
    )
    assert response.status_code == 302
    rerun = Execution.objects.get(rerun_of=retry)
    assert rerun.inputs["version"] == UNICODE


# --- random posts --------------------------------------------------------------------------

FIELD_NAMES = st.sampled_from(
    [
        "from_stage",
        "mode",
        "reason",
        "stages",
        "input-version",
        "input-build.flavour",
        "input-deploy.target",
        "input-",
        "input-ghost",
        "input-input-version",
        "csrfmiddlewaretoken",
    ]
) | st.text(min_size=1, max_size=12)
TEXT = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=60)
VALUES = (
    st.sampled_from(
        ["build", "deploy", "notify", "parallel_1", "failed_only", "all", "", "1.0", "gold"]
    )
    | TEXT
    | st.builds(
        lambda c, n: c * n, st.sampled_from(["x", "é", "\x00", "<", "🚀"]), st.integers(0, 5000)
    )
)
POSTS = st.lists(st.tuples(FIELD_NAMES, st.lists(VALUES, min_size=1, max_size=3)), max_size=6)


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(fields=POSTS, method=st.sampled_from(["post", "get"]), hx=st.booleans())
def test_random_retry_requests_never_cause_a_server_error_and_refusals_change_nothing(
    executor_client, failed, fields, method, hx
):
    data = {name: values for name, values in fields}
    with transaction.atomic():
        before = Execution.objects.count()
        send = getattr(executor_client, method)
        response = send(
            reverse("execution_retry", args=[failed.pk]),
            data,
            headers={"HX-Request": "true"} if hx else {},
        )
        assert response.status_code < 500, (data, response.status_code)
        created = Execution.objects.count() - before
        if response.status_code >= 400 or method == "get":
            assert created == 0, data
        else:
            assert created <= 1 and (
                created == 1 or Execution.objects.filter(retry_of=failed).exists()
            )
        transaction.set_rollback(True)
