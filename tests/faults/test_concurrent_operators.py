"""Operators who click at the same moment, through real HTTP to gunicorn (two processes, eight
threads each): 50 retry posts make one retry, an abort that races the end of the execution
leaves one consistent status, approve racing reject makes one decision."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.conf import settings

from executions.models import Event, Execution, StageRun, Status, StepRun
from executions.services import run_pipeline
from tests.faults.checks import assert_each_step_ran_at_most_once, assert_nothing_active
from tests.faults.servers import HttpSession, Response, logged_in, session_cookie_for
from tests.helpers.factories import grant, make_pipeline, make_user, serial_pipeline, shell_stage
from tests.helpers.runs import wait_for, wait_for_status

pytestmark = pytest.mark.integration


def race(
    base_url: str, users: list, path: str, forms: list[dict], htmx: list[bool]
) -> list[tuple[HttpSession, Response]]:
    """One logged-in browser per form; each loads a page (its CSRF cookie), then all POST at
    the same instant (a barrier). The sessions are made here, in the test's thread: the
    threads only speak HTTP (no database connection is left open behind them)."""
    browsers = [
        HttpSession(
            base_url,
            cookies={settings.SESSION_COOKIE_NAME: session_cookie_for(users[n % len(users)])},
        )
        for n in range(len(forms))
    ]
    barrier = threading.Barrier(len(forms))

    def one(index: int) -> tuple[HttpSession, Response]:
        browser = browsers[index]
        assert browser.get("/").status == 200 and "csrftoken" in browser.cookies
        barrier.wait(timeout=120)
        headers = {"HX-Request": "true"} if htmx[index] else None
        return browser, browser.post(path, forms[index], headers=headers)

    with ThreadPoolExecutor(max_workers=len(forms)) as pool:
        return list(pool.map(one, range(len(forms))))


def test_fifty_simultaneous_retry_posts_make_one_retry_and_send_everyone_to_it(
    web, workers, personas
):
    operators = [personas.executor, personas.admin]
    for number in range(8):
        user = make_user(f"operator{number}")
        grant(user, personas.project, "executor")
        operators.append(user)
    pipeline = make_pipeline(
        personas.project,
        serial_pipeline(
            "flaky", [shell_stage("build", "echo built"), shell_stage("deploy", "exit 3")]
        ),
    )
    failed = wait_for_status(
        run_pipeline(pipeline=pipeline, user=personas.executor, inputs={}), Status.FAILED
    )

    forms = [{"from_stage": "deploy", "reason": f"click {n}"} for n in range(50)]
    started = time.monotonic()
    raced = race(
        web.base_url,
        operators,
        f"/executions/{failed.pk}/retry/",
        forms,
        [n % 2 == 0 for n in range(50)],
    )
    took = time.monotonic() - started
    answers = [answer for _, answer in raced]

    retries = list(Execution.objects.filter(retry_of=failed))
    assert len(retries) == 1, f"{len(retries)} retries were created"
    retry = retries[0]
    statuses = sorted({answer.status for answer in answers})
    print(f"50 retry posts answered {statuses} in {took:.1f}s; one retry #{retry.sequence}")
    # Plain posts are redirected (302); htmx posts get HX-Redirect (200): all to the one retry.
    assert all(answer.status in (200, 302) for answer in answers), statuses
    assert {answer.location for answer in answers} == {f"/executions/{retry.pk}/"}
    assert Event.objects.filter(action="retried").count() == 1
    assert Execution.objects.filter(pipeline=pipeline).count() == 2

    # Each operator lands on the retry's page with the message of their own click.
    with ThreadPoolExecutor(max_workers=10) as pool:
        pages = list(pool.map(lambda pair: pair[0].get(pair[1].location).text, raced))
    started_it = [
        page for page in pages if f"Retry #{retry.sequence} of #{failed.sequence} started" in page
    ]
    told = [page for page in pages if f"retried as #{retry.sequence}" in page]
    assert (len(started_it), len(told)) == (1, 49)

    wait_for_status(retry, Status.FAILED)  # deploy fails again: the retry ran, once
    assert_each_step_ran_at_most_once(retry)


def test_an_abort_racing_the_end_of_an_execution_leaves_one_consistent_status(
    web, workers, personas
):
    pipeline = make_pipeline(
        personas.project, serial_pipeline("quick", [shell_stage("only", "sleep 1\necho done")])
    )
    browser = logged_in(web.base_url, personas.executor)
    outcomes = []
    for offset in (0.6, 0.8, 0.9, 1.0, 1.1, 1.2, 1.4):
        execution = run_pipeline(pipeline=pipeline, user=personas.executor, inputs={})
        wait_for(
            lambda e=execution: StepRun.objects.filter(execution=e, status=Status.RUNNING).first(),
            message="the step to start",
        )
        time.sleep(offset)  # the step (sleep 1) ends about now
        answer = browser.post(f"/executions/{execution.pk}/abort/", {})
        execution = wait_for_status(execution, {Status.SUCCESS, Status.ABORTED}, timeout=30)
        time.sleep(0.5)  # whatever the worker still does after the abort, let it land
        execution.refresh_from_db()
        stages = set(StageRun.objects.filter(execution=execution).values_list("status", flat=True))
        steps = set(StepRun.objects.filter(execution=execution).values_list("status", flat=True))
        outcomes.append((offset, answer.status, execution.status, stages, steps))
        if answer.status == 302:  # the abort won
            assert execution.status == Status.ABORTED and stages == {Status.ABORTED}, outcomes[-1]
            assert steps <= {Status.ABORTED, Status.SUCCESS}, outcomes[-1]
        else:  # the execution had ended: refused with the reason, nothing changed
            assert answer.status == 409 and (
                "nothing to abort" in answer.text or "already ended" in answer.text
            ), outcomes[-1]
            assert execution.status == Status.SUCCESS and stages == steps == {Status.SUCCESS}, (
                outcomes[-1]
            )
        assert_each_step_ran_at_most_once(execution)
    print("abort racing completion (offset, answer, execution, stages, steps):", outcomes)
    assert_nothing_active()


def test_approve_racing_reject_makes_exactly_one_decision(web, workers, personas):
    pipeline = make_pipeline(
        personas.project,
        """
        pipeline:
          name: Gated
          identifier: gated
          stages:
            - stage:
                identifier: gate
                name: Gate
                steps:
                  - step: {identifier: ok, type: Approval, timeout: 10m, spec: {message: "Ship?"}}
            - stage:
                identifier: ship
                name: Ship
                steps:
                  - step: {identifier: go, type: ShellScript, timeout: 1m, spec: {script: "echo shipped"}}
        """,
    )
    deciders = [personas.approver, personas.admin]
    for round_number in range(2):
        execution = run_pipeline(pipeline=pipeline, user=personas.executor, inputs={})
        wait_for_status(execution, Status.WAITING)
        forms = [
            {"stage": "gate", "decision": "approve" if n % 2 else "reject", "comment": f"click {n}"}
            for n in range(20)
        ]
        raced = race(
            web.base_url,
            deciders,
            f"/executions/{execution.pk}/approval/",
            forms,
            [n % 3 == 0 for n in range(20)],
        )
        answers = [answer for _, answer in raced]
        won = [n for n, answer in enumerate(answers) if answer.location]
        lost = [answers[n] for n in range(20) if n not in won]
        assert len(won) == 1, [(a.status, a.location) for a in answers]
        assert all(answer.status == 409 for answer in lost), sorted({a.status for a in lost})
        assert all(
            "Someone answered this approval first" in a.text
            or "is not waiting for approval" in a.text
            for a in lost
        )
        decision = forms[won[0]]["decision"]
        step = StepRun.objects.get(execution=execution, identifier="ok")
        assert step.comment == forms[won[0]]["comment"]
        events = Event.objects.filter(step_run=step, action__in=["approved", "rejected"])
        assert [event.action for event in events] == [
            {"approve": "approved", "reject": "rejected"}[decision]
        ]
        final = wait_for_status(execution, {Status.SUCCESS, Status.REJECTED})
        assert final.status == (Status.SUCCESS if decision == "approve" else Status.REJECTED)
        print(f"round {round_number}: click {won[0]} ({decision}) won, 19 refused with 409")
    assert_nothing_active()
