"""Stage names, step names, runtime inputs, reasons and logs holding ``<script>``, an attribute
break-out (``" onmouseover="``) and htmx attributes (``hx-get=``) are shown inert on every page
that shows them: escaped (no element, no attribute comes out of them) and inside an
``hx-disable`` region (htmx would not act on them even if markup got through)."""

from __future__ import annotations

import json
from html.parser import HTMLParser

import pytest
from django.urls import reverse

from executions.models import Status, StepRun
from executions.retry import create_retry
from executions.services import run_pipeline
from tests.helpers.factories import make_pipeline
from tests.helpers.runs import drive

MARK = "XSS-"
PAYLOAD = (
    '<script>alert("XSS-1")</script> " onmouseover="alert(\'XSS-2\')" x=" '
    '<div hx-get="/evil-XSS-3" hx-trigger="load">XSS-3</div> <img src=x onerror=alert(\'XSS-4\')>'
)


def named(text: str) -> str:
    """A YAML scalar holding ``text`` (a JSON string is a YAML double-quoted scalar)."""
    return json.dumps(text)


XSS_YAML = f"""
pipeline:
  name: Lab
  identifier: lab
  allow_stage_selection: true
  variables:
    - {{name: note, type: String, value: <+input>, default: hello}}
  stages:
    - stage:
        identifier: build
        name: {named("Build " + PAYLOAD)}
        steps:
          - step:
              identifier: compile
              name: {named("Compile " + PAYLOAD)}
              type: ShellScript
              spec:
                script: |
                  echo "note: <+pipeline.variables.note>"
                  printf '%s\\n' '<b hx-get="/evil-XSS-5" hx-trigger="load">XSS-5</b>'
    - parallel:
        - stage:
            identifier: eu
            name: {named("Deploy EU " + PAYLOAD)}
            variables:
              - {{name: region, type: String, value: <+input>, default: eu-west}}
            steps:
              - step: {{identifier: roll, name: {named("Roll " + PAYLOAD)}, type: ShellScript, spec: {{script: 'echo "<+stage.variables.region>"; [ "<+stage.variables.region>" = ok ]'}}}}
        - stage:
            identifier: us
            name: {named("Deploy US " + PAYLOAD)}
            steps:
              - step: {{identifier: roll, name: {named("Roll " + PAYLOAD)}, type: ShellScript, spec: {{script: 'echo us'}}}}
    - stage:
        identifier: gate
        name: {named("Gate " + PAYLOAD)}
        steps:
          - step: {{identifier: ok, name: {named("Approve " + PAYLOAD)}, type: Approval, spec: {{message: "Ship <+pipeline.variables.note>?"}}}}
"""


class InertnessCheck(HTMLParser):
    """Walks a page and lists every way the payload could act: a script without ``src``, an
    event-handler attribute, an htmx attribute carrying the payload, an attribute named by the
    payload, or payload text outside an ``hx-disable`` element."""

    VOID = {
        "area",
        "base",
        "br",
        "col",
        "embed",
        "hr",
        "img",
        "input",
        "link",
        "meta",
        "source",
        "track",
        "wbr",
    }
    TEXT_ONLY = {"title", "textarea"}  # their content is never parsed as markup

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[str, bool]] = []
        self.problems: list[str] = []
        self.seen = 0

    def where(self) -> str:
        return " > ".join(tag for tag, _ in self.stack[-4:])

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = {name for name, _ in attrs}
        for name, value in attrs:
            if name.startswith("on"):
                self.problems.append(f"<{tag} {name}=…> at {self.where()}: an event handler")
            if MARK.lower() in name.lower():
                self.problems.append(f"<{tag}> has an attribute made of the payload: {name}")
            if (name.startswith(("hx-", "data-hx-")) or name == "src") and value and MARK in value:
                self.problems.append(
                    f"<{tag} {name}={value!r}> at {self.where()}: the payload became an attribute"
                )
        if tag == "script" and "src" not in names:
            self.problems.append(f"an inline <script> at {self.where()}")
        if tag not in self.VOID:
            self.stack.append((tag, "hx-disable" in names))

    def handle_startendtag(self, tag, attrs) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in self.VOID:
            self.stack.pop()

    def handle_endtag(self, tag: str) -> None:
        for index in range(len(self.stack) - 1, -1, -1):
            if self.stack[index][0] == tag:
                del self.stack[index:]
                return

    def handle_data(self, data: str) -> None:
        if MARK not in data:
            return
        self.seen += 1
        if self.stack and self.stack[-1][0] in self.TEXT_ONLY:
            return
        if not any(disabled for _, disabled in self.stack):
            self.problems.append(
                f"{data.strip()[:50]!r} in {self.where()} is outside an hx-disable region"
            )


class Pages:
    """Checks pages one by one and reports every problem of every page at the end."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def check(
        self, response, page: str, *, shows_payload: bool = True, into_disabled: bool = False
    ) -> None:
        """``into_disabled``: the fragment is swapped into an element that has ``hx-disable``."""
        if response.status_code != 200:
            self.problems.append(f"{page}: answered {response.status_code}")
            return
        check = InertnessCheck()
        if into_disabled:
            check.stack.append(("#target", True))
        check.feed(response.content.decode())
        check.close()
        self.problems += [f"{page}: {problem}" for problem in dict.fromkeys(check.problems)]
        if shows_payload and not check.seen:
            self.problems.append(f"{page} does not show the payload at all: nothing was tested")

    def assert_inert(self) -> None:
        assert not self.problems, "\n".join(self.problems)


@pytest.fixture
def lab(personas):
    """The lab pipeline: one execution failed in the parallel group (with the payload as its
    inputs and in its logs), retried with the payload as the reason; one waiting for approval."""
    pipeline = make_pipeline(personas.project, XSS_YAML)
    inputs = {"note": PAYLOAD, "eu.region": PAYLOAD}
    failed = drive(run_pipeline(pipeline=pipeline, user=personas.executor, inputs=inputs))
    assert failed.status == Status.FAILED
    retry = drive(
        create_retry(
            execution=failed, user=personas.executor, from_stage="eu", mode="all", reason=PAYLOAD
        )
    )
    waiting = drive(
        run_pipeline(
            pipeline=pipeline, user=personas.executor, inputs={"eu.region": "ok", "note": PAYLOAD}
        )
    )
    return pipeline, failed, retry, waiting


def htmx(target: str = "") -> dict[str, str]:
    return {"HX-Request": "true", **({"HX-Target": target} if target else {})}


def test_the_execution_page_shows_names_inputs_reasons_and_logs_inert(client, personas, lab):
    _, failed, retry, _ = lab
    client.force_login(personas.executor)
    pages = Pages()
    build = StepRun.objects.get(execution=failed, stage_run__identifier="build")
    page = reverse("execution", args=[failed.pk])
    pages.check(client.get(f"{page}?step={build.pk}"), "execution page with the build log")
    pages.check(client.get(page, headers=htmx("execution-live")), "execution page, live fragment")
    pages.check(
        client.get(f"{page}?since=0", headers=htmx("live-poller")), "execution page, live update"
    )
    pages.check(
        client.get(reverse("execution", args=[retry.pk])), "the retry's page (history, reason)"
    )
    log = reverse("execution_step_log", args=[failed.pk, build.pk])
    panel = client.get(log, headers=htmx("log-panel"))
    pages.check(panel, "log panel")
    assert (
        '<pre id="log-lines" class="log" hx-disable>' in panel.content.decode()
    )  # live lines go there
    appended = client.get(f"{log}?after=-1", headers=htmx("log-lines"))
    pages.check(appended, "log lines appended live", into_disabled=True)
    pages.assert_inert()


def test_the_retry_and_rerun_dialogs_show_names_and_inputs_inert(client, personas, lab):
    _, _, retry, _ = lab
    client.force_login(personas.executor)
    pages = Pages()
    dialog = reverse("execution_retry", args=[retry.pk])
    pages.check(client.get(dialog), "retry dialog page")
    pages.check(client.get(dialog, headers=htmx("modal-body")), "retry dialog")
    pages.check(
        client.get(f"{dialog}?from_stage=build", headers=htmx("retry-plan")), "retry plan fragment"
    )
    impact = f"{dialog}?from_stage=parallel_2&mode=failed_only&input-eu.region={PAYLOAD}"
    pages.check(client.get(impact, headers=htmx("retry-impact")), "retry impact fragment")
    pages.check(
        client.get(reverse("execution_rerun", args=[retry.pk]), headers=htmx("modal-body")),
        "rerun dialog",
    )
    pages.assert_inert()


def test_the_approval_dialog_and_the_waiting_stage_show_the_message_inert(client, personas, lab):
    _, _, _, waiting = lab
    assert waiting.status == Status.WAITING
    client.force_login(personas.approver)
    pages = Pages()
    pages.check(
        client.get(reverse("execution", args=[waiting.pk])), "execution page waiting for approval"
    )
    dialog = reverse("execution_approval", args=[waiting.pk]) + "?stage=gate"
    pages.check(client.get(dialog, headers=htmx("modal-body")), "approval dialog")
    pages.assert_inert()


def test_the_lists_and_pipeline_pages_show_names_inert(client, personas, lab):
    client.force_login(personas.admin)
    pages = Pages()
    for name, url, shows_payload in [
        ("home", reverse("home"), False),
        ("project executions", reverse("project", args=["acme", "web"]), False),
        ("pipeline", reverse("pipeline", args=["acme", "web", "lab"]), False),
        ("definition", reverse("pipeline_definition", args=["acme", "web", "lab"]), True),
        ("editor", reverse("pipeline_edit", args=["acme", "web", "lab"]), True),
        ("history", reverse("pipeline_history", args=["acme", "web", "lab"]), True),
        ("run dialog", reverse("pipeline_run", args=["acme", "web", "lab"]), True),
        ("insights", reverse("project_insights", args=["acme", "web"]), False),
        ("waiting for me", reverse("waiting"), False),
    ]:
        pages.check(client.get(url), name, shows_payload=shows_payload)
    pages.assert_inert()


def test_the_message_after_a_retry_names_the_stage_inert(client, personas, lab):
    pipeline = lab[0]
    client.force_login(personas.executor)
    failed = drive(
        run_pipeline(pipeline=pipeline, user=personas.executor, inputs={"note": PAYLOAD})
    )
    response = client.post(
        reverse("execution_retry", args=[failed.pk]), {"from_stage": "build"}, follow=True
    )
    assert response.redirect_chain, "the retry was not created"
    pages = Pages()
    pages.check(response, "the new retry's page with its message")
    pages.assert_inert()


def test_the_check_catches_markup_that_got_through_and_text_outside_hx_disable():
    """The check above can fail: raw payload markup, and escaped text outside hx-disable."""
    raw = InertnessCheck()
    raw.feed(f"<main><h3>{PAYLOAD}</h3></main>")
    assert any("inline <script>" in p for p in raw.problems)
    assert any("onerror" in p for p in raw.problems)
    assert any("hx-get" in p for p in raw.problems)
    bare = InertnessCheck()
    bare.feed("<main><h3>Build &lt;script&gt;XSS-1&lt;/script&gt;</h3></main>")
    assert bare.problems == [
        "'Build <script>XSS-1</script>' in main > h3 is outside an hx-disable region"
    ]
    inert = InertnessCheck()
    inert.feed(
        '<main><h3 hx-disable>Build &lt;script&gt;XSS-1&lt;/script&gt;</h3><a hx-get="/x">ok</a></main>'
    )
    assert inert.problems == [] and inert.seen == 1
