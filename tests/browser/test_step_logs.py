"""The log panel in a real browser (issue 14, points 1, 2 and 12): it follows the running step
unless the operator picked one, shows an abort's last lines without a reload, numbers and links
its lines, renders ANSI colours as classes (never HTML), searches, downloads, pauses its
auto-scroll when the reader scrolls up, and shows output within a second of its writing."""

from __future__ import annotations

import json
import re
import statistics
import threading
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from playwright.sync_api import expect

from executions.models import Execution, StageRun, Status, StepRun
from executions.runners import shell
from executions.services import abort_execution, run_pipeline
from tests.browser.conftest import ARTIFACTS, screenshot
from tests.browser.test_execution_flows import assert_not_reloaded, mark_page
from tests.helpers.factories import make_pipeline
from tests.helpers.runs import wait_for, wait_for_stage, wait_for_status

pytestmark = pytest.mark.browser

THREE_STAGES_YAML = """
pipeline:
  name: Three stages
  identifier: three_stages
  stages:
"""
for _name in ("one", "two", "three"):
    THREE_STAGES_YAML += f"""
    - stage:
        identifier: {_name}
        name: Stage {_name}
        steps:
          - step:
              identifier: work_{_name}
              name: Work {_name}
              type: ShellScript
              spec:
                script: |
                  for i in $(seq 1 8); do echo "{_name} at $i"; sleep 0.5; done
"""

NAP_YAML = """
pipeline:
  name: Nap
  identifier: nap
  stages:
    - stage:
        identifier: nap
        name: Nap
        steps:
          - step:
              identifier: snooze
              name: Snooze
              type: ShellScript
              spec:
                script: |
                  echo "falling asleep"
                  sleep 120
"""

COLOURS_YAML = r"""
pipeline:
  name: Colours
  identifier: colours
  stages:
    - stage:
        identifier: build
        name: Build
        steps:
          - step:
              identifier: compile
              name: Compile
              type: ShellScript
              spec:
                script: |
                  printf '\033[1;32mPASS\033[0m unit tests\n'
                  printf '\033[31mred <b hx-get="/admin/">not bold</b>\033[0m plain\n'
                  for i in $(seq 3 60); do echo "step output line $i"; done
                  echo "the needle is here"
                  printf '\033[33mwarning:\033[0m disk at 91%%\n'
"""

TICKING_YAML = """
pipeline:
  name: Ticking
  identifier: ticking
  stages:
    - stage:
        identifier: tick
        name: Tick
        steps:
          - step:
              identifier: clock
              name: Clock
              type: ShellScript
              spec:
                script: |
                  for i in $(seq 1 60); do echo "line $i of the preamble"; done
                  for i in $(seq 1 24); do echo "probe $i $(date +%s.%N)"; sleep 0.5; done
"""


def url(execution: Execution, **query) -> str:
    base = reverse("execution", args=[execution.pk])
    return base + ("?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else "")


def test_the_open_log_follows_the_running_step_unless_the_operator_picked_one(session, personas):
    pipeline = make_pipeline(personas.project, THREE_STAGES_YAML)
    execution = run_pipeline(pipeline=pipeline, user=personas.executor, inputs={})
    wait_for_stage(execution, "one", Status.RUNNING)
    page = session.open(personas.viewer, url(execution))
    mark_page(page)
    title = page.locator("#log-title")
    expect(title).to_contain_text("Stage one › Work one")
    expect(page.locator("#log-follow")).to_be_hidden()
    # Stage two starts: the log moves there by itself, and shows that step's output.
    expect(title).to_contain_text("Stage two › Work two", timeout=30_000)
    expect(page.locator("#log-lines")).to_contain_text("two at 1", timeout=10_000)
    expect(page.locator("#stage-two .step")).to_have_class(re.compile("selected"))

    # The operator picks stage one: the log stays there while stage three runs.
    page.locator("#stage-one .step a").click()
    expect(title).to_contain_text("Stage one › Work one")
    expect(page.locator("#log-follow")).to_be_visible()
    wait_for_stage(execution, "three", Status.RUNNING)
    expect(page.locator("#stage-three .badge")).to_have_text("Running")
    page.wait_for_timeout(2500)  # a live poll or two: nothing may move the log
    expect(title).to_contain_text("Stage one › Work one")

    # Following again goes to the running step.
    page.locator("#log-follow").click()
    expect(title).to_contain_text("Stage three › Work three")
    expect(page.locator("#log-follow")).to_be_hidden()
    expect(page.locator("h1 .badge")).to_have_text("Success", timeout=30_000)
    expect(page.locator("#log-lines")).to_contain_text("three at 8")
    assert_not_reloaded(page)


def test_after_an_abort_the_open_log_shows_the_kill_notice_without_a_reload(
    session, personas, monkeypatch
):
    # The worker (a thread of this process) stores its kill notice only when the test says so,
    # so that the page is seen between the abort and the notice.
    release = threading.Event()
    note = shell.LogWriter.note

    def held_note(self, text):
        release.wait(30)
        note(self, text)

    monkeypatch.setattr(shell.LogWriter, "note", held_note)
    pipeline = make_pipeline(personas.project, NAP_YAML)
    execution = run_pipeline(pipeline=pipeline, user=personas.executor, inputs={})
    wait_for_stage(execution, "nap", Status.RUNNING)
    page = session.open(personas.viewer, url(execution))
    mark_page(page)
    expect(page.locator("#log-lines")).to_contain_text("falling asleep")

    abort_execution(execution=execution, user=personas.executor)
    expect(page.locator("h1 .badge")).to_have_text("Aborted")
    page.wait_for_timeout(2500)  # the log's polls go on while the worker is still writing
    expect(page.locator("#log-poller")).to_contain_text("Following the log")
    release.set()
    expect(page.locator("#log-lines")).to_contain_text(
        "[stageline] aborted: the step's processes were killed"
    )
    expect(page.locator("#log-poller")).to_have_text("End of the log.")
    expect(page.locator("#log-status")).to_have_text("Aborted")
    expect(page.locator("#step-facts .exit-code")).not_to_have_text("—")
    assert_not_reloaded(page)


def test_log_lines_are_numbered_linkable_coloured_searchable_and_downloadable(session, personas):
    pipeline = make_pipeline(personas.project, COLOURS_YAML)
    execution = wait_for_status(
        run_pipeline(pipeline=pipeline, user=personas.executor, inputs={}), Status.SUCCESS
    )
    step = StepRun.objects.get(execution=execution)
    # Facts that differ from run to run (the worker's pid, a few ms) are fixed, so that the
    # README's picture is written again only when the page looks different.
    ended = timezone.now() - timedelta(seconds=20)
    begun = ended - timedelta(seconds=3.2)
    StepRun.objects.filter(pk=step.pk).update(
        worker="worker-1:4242", started_at=begun, finished_at=ended
    )
    StageRun.objects.filter(execution=execution).update(started_at=begun, finished_at=ended)
    Execution.objects.filter(pk=execution.pk).update(started_at=begun, finished_at=ended)
    page = session.open(personas.viewer, url(execution, step=step.pk))
    lines = page.locator("#log-lines .log-line")
    expect(lines).to_have_count(62)
    expect(lines.nth(11)).to_have_text("step output line 12")
    expect(page.locator("#L12 a.log-ln")).to_have_attribute(
        "href", f"{url(execution, step=step.pk)}#L12"
    )

    # ANSI colours are classes; the text stays text (no element made from the output).
    expect(page.locator("#L1 .ansi-fg-2.ansi-bold")).to_have_text("PASS")
    red = page.locator("#L2 .ansi-fg-1")
    expect(red).to_have_text('red <b hx-get="/admin/">not bold</b>')
    expect(page.locator("#log-lines b")).to_have_count(0)
    assert "\x1b" not in page.locator("#log-lines").inner_text()

    # A line number links to its line: the address names it, the line is highlighted.
    page.locator("#L40 a.log-ln").click()
    expect(page.locator("#L40")).to_have_class(re.compile("log-target"))
    assert page.url.endswith(f"?step={step.pk}#L40")

    # Search shows the loaded lines that contain the text, marked.
    page.fill("#log-search", "NEEDLE")
    expect(page.locator("#log-lines .log-line:visible")).to_have_count(1)
    expect(page.locator("#log-lines mark")).to_have_text("needle")
    expect(page.locator("#log-search-count")).to_have_text("1 of 62 lines")
    page.locator("#log-panel").scroll_into_view_if_needed()
    screenshot(page, "log-search")
    page.fill("#log-search", "")
    expect(lines.filter(visible=True)).to_have_count(62)
    page.locator("#L2 a.log-ln").click()
    page.locator("#log-lines").evaluate("(el) => { el.scrollTop = 0; }")
    page.evaluate("document.getElementById('log-panel').scrollIntoView(); window.scrollBy(0, -12)")
    page.mouse.move(0, 0)
    screenshot(page, "log-panel", docs=True)

    # The raw log downloads whole, colour codes and all.
    with page.expect_download() as info:
        page.click("#log-download")
    download = info.value
    assert download.suggested_filename == f"colours-{execution.sequence}-build-compile.log"
    raw = open(download.path(), encoding="utf-8").read()
    assert raw.startswith("\x1b[1;32mPASS\x1b[0m unit tests\n") and "step output line 60" in raw

    # A link to a line opens the page there, highlighted and in view.
    linked = session.open(personas.viewer, url(execution, step=step.pk) + "#L50", height=700)
    target = linked.locator("#L50")
    expect(target).to_have_class(re.compile("log-target"))
    expect(target).to_be_in_viewport()
    expect(linked.locator("#step-facts .exit-code")).to_have_text("0")

    # At 390 px the panel fits: no sideways scroll of the page, nothing of it cut off.
    narrow = session.open(personas.viewer, url(execution, step=step.pk) + "#L2", width=390)
    expect(narrow.locator("#L2")).to_have_class(re.compile("log-target"))
    assert narrow.evaluate("document.documentElement.scrollWidth") <= 390
    for part in ("#log-title", "#step-facts", "#log-search", "#log-download", "#log-lines"):
        box = narrow.locator(part).bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390, part
    narrow.locator("#log-panel").scroll_into_view_if_needed()
    screenshot(narrow, "log-panel-390")


def test_a_running_log_scrolls_until_the_reader_scrolls_up_and_arrives_within_a_second(
    session, personas
):
    pipeline = make_pipeline(personas.project, TICKING_YAML)
    execution = run_pipeline(pipeline=pipeline, user=personas.executor, inputs={})
    wait_for_stage(execution, "tick", Status.RUNNING)
    page = session.open(personas.viewer, url(execution))
    # Record when each probe line appears in the page (the browser's clock is the test's).
    page.evaluate(
        """() => {
            window.seenProbes = {};
            new MutationObserver(() => {
                document.querySelectorAll("#log-lines .log-line").forEach((line) => {
                    const m = /^probe (\\d+) ([\\d.]+)$/.exec(line.textContent);
                    if (m && !(m[1] in window.seenProbes))
                        window.seenProbes[m[1]] = [parseFloat(m[2]), Date.now() / 1000];
                });
            }).observe(document.body, {childList: true, subtree: true, characterData: true});
        }"""
    )
    log = page.locator("#log-lines")
    expect(log).to_contain_text("probe 3 ")
    at_bottom = "(el) => el.scrollHeight - el.scrollTop - el.clientHeight < 24"
    assert log.evaluate(at_bottom), "a running log follows new output"
    expect(page.locator("#log-resume")).to_be_hidden()

    log.evaluate("(el) => { el.scrollTop = 0; }")
    expect(page.locator("#log-resume")).to_be_visible()
    expect(log).to_contain_text("probe 8 ")
    assert log.evaluate("(el) => el.scrollTop") == 0, "scrolled up: the log stays put"
    page.click("#log-resume")
    expect(log).to_contain_text("probe 10 ")
    assert log.evaluate(at_bottom), "following again"
    expect(page.locator("#log-resume")).to_be_hidden()

    expect(page.locator("#log-poller")).to_have_text("End of the log.", timeout=30_000)
    seen = page.evaluate("window.seenProbes")
    assert len(seen) >= 15, f"probes seen: {sorted(seen, key=int)}"
    delays = sorted(shown - written for written, shown in seen.values())
    report = {
        "probes": len(delays),
        "median_s": round(statistics.median(delays), 3),
        "max_s": round(max(delays), 3),
        "min_s": round(min(delays), 3),
        "all_s": [round(d, 2) for d in delays],
    }
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "log-delay.json").write_text(json.dumps(report, indent=2))
    print("log delay, written by the step -> shown in the page:", report)
    wait_for(lambda: Execution.objects.get(pk=execution.pk).status == Status.SUCCESS)
