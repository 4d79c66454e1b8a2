"""Dashboard timings at scale: each page requested many times through Django's test client.

The client runs the whole server side (middleware, session and user loading, the view, the
permission checks, the template) in this process against the benchmark database; what it
leaves out is the HTTP server and the network. Requests are made as ``bench-operator``, a
Pipeline Executor on the three projects (not a superuser, so every permission check is paid).
Each page is requested a few times first (untimed: template loading, the first queries), then
``requests`` times; the query count is read on one more request.

Pages:

- executions list: the project page of ``alpha`` (a third of the executions): the first page,
  a deep page reached through its keyset cursor (``?before=<id>``, 90 % of the way back), a
  filtered page (one pipeline's FAILED runs) and a harder filter (one user's EXPIRED runs,
  about one row in a thousand of the project);
- the retry insights of ``alpha`` (``executions.insights``), last 7, 30 and 90 days (at most
  ``INSIGHTS_REQUESTS`` requests each), read from the rollup plus the day's worth of executions
  it does not hold;
- the execution page of a 50-stage execution (FAILED, its failed step's log open);
- the retry dialog of a 200-stage execution failed at stage 150 (as htmx loads it);
- the retry submit: a POST from that dialog, each to a different fresh FAILED execution (one
  execution can be retried once), which creates the retry with 200 stage runs, 149 carried
  over. The retries' first steps are handed to a stub instead of the broker (no worker runs
  them here; a broker shared with real workers is left alone); the targets and their retries
  are deleted afterwards.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from unittest import mock

from django.conf import settings
from django.db import connection
from django.db.models import Max, Min
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from benchmarks import dataset, fixtures
from benchmarks.report import Report, ms, percentile
from config.runtime import freeze_startup_heap
from executions import engine, insights, listing
from executions.models import Execution, Status
from pipelines.models import Pipeline

LIST_P95_TARGET = 0.100
DEEP_RATIO_TARGET = 1.20
PAGE_P95_TARGET = 0.080
SUBMIT_P95_TARGET = 0.100
INSIGHTS_P95_TARGET = 0.200
INSIGHTS_REQUESTS = 50
WARMUP = 3
HTMX = {"HX-Request": "true"}


class PageError(RuntimeError):
    pass


def _request(
    client: Client,
    method: str,
    url: str,
    data: dict | None,
    headers: dict | None,
    expect: tuple[int, ...],
):
    response = getattr(client, method)(url, data=data or {}, headers=headers or {})
    if response.status_code not in expect:
        body = response.content.decode(errors="replace")[:500]
        raise PageError(
            f"{method.upper()} {url} answered {response.status_code}, expected {expect}: {body}"
        )
    return response


@dataclass
class Timing:
    durations: list[float]  # wall time of each request
    cpu: list[float]  # CPU time of this process's thread (Python + templates, not the database)
    queries: int


def timed(
    client: Client,
    url: str,
    count: int,
    *,
    method: str = "get",
    data: dict | None = None,
    headers: dict | None = None,
    expect: tuple[int, ...] = (200,),
    urls: list[str] | None = None,
    warmup: int = WARMUP,
) -> Timing:
    """Wall and CPU seconds of each of ``count`` requests (after ``WARMUP`` untimed ones), and
    the number of queries of one more. With ``urls``, request each of them once instead (one per
    target)."""
    targets = urls or [url] * (count + warmup + 1)
    for target in targets[:warmup]:
        _request(client, method, target, data, headers, expect)
    # As a web process does at start-up (config/wsgi.py): what lives as long as the process is
    # moved out of the collector's way, so a full collection does not rescan it mid-request.
    freeze_startup_heap()
    durations, cpu = [], []
    for target in targets[warmup : warmup + count]:
        begin, begin_cpu = time.perf_counter(), time.thread_time()
        _request(client, method, target, data, headers, expect)
        durations.append(time.perf_counter() - begin)
        cpu.append(time.thread_time() - begin_cpu)
    with CaptureQueriesContext(connection) as queries:
        _request(client, method, targets[warmup + count], data, headers, expect)
    return Timing(durations, cpu, len(queries.captured_queries))


def _add(report: Report, section: str, name: str, timing: Timing, target: float | None) -> None:
    p50, p95 = percentile(timing.durations, 50), percentile(timing.durations, 95)
    value = (
        f"p50 {ms(p50)} · p95 {ms(p95)} · cpu p50 {ms(percentile(timing.cpu, 50))} · "
        f"{timing.queries} queries (n={len(timing.durations)})"
    )
    if target is None:
        report.add(section, name, value)
    else:
        report.add(section, name, value, f"p95 <= {ms(target)}", p95 <= target)


def explain_list(user, project, params: dict) -> float:
    """The database's own execution time (EXPLAIN ANALYZE) of the executions list's page query."""
    pipeline = None
    if params.get("pipeline"):
        pipeline = Pipeline.objects.get(project=project, identifier=params["pipeline"])
    filters = listing.Filters(
        pipeline=pipeline, status=params.get("status", ""), who=params.get("who", "")
    )
    queryset = listing.apply_filters(listing.visible_executions(user, project=project), filters)
    queryset = queryset.select_related("pipeline", "triggered_by", "retry_of", "retry")
    if params.get("before"):
        queryset = queryset.filter(id__lt=params["before"])
    plan = queryset.order_by("-id")[: listing.PAGE_SIZE + 1].explain(analyze=True)
    match = re.search(r"Execution Time: ([0-9.]+) ms", plan)
    return float(match.group(1)) / 1000 if match else float("nan")


def measure(
    report: Report,
    data: dataset.Dataset,
    *,
    requests: int,
    warmup: int = WARMUP,
    progress: Callable[[str], None] = print,
) -> None:
    if "testserver" not in settings.ALLOWED_HOSTS and "*" not in settings.ALLOWED_HOSTS:
        settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "testserver"]
    client = Client()
    client.force_login(data.operator)
    alpha = data.projects[0]
    section = f"dashboard at {data.executions:,} executions"

    list_url = reverse("project", args=[fixtures.ORG, alpha.slug])
    bounds = Execution.objects.filter(pipeline__project=alpha).aggregate(
        low=Min("id"), high=Max("id")
    )
    deep_id = bounds["low"] + (bounds["high"] - bounds["low"]) // 10
    some_pipeline = (
        Execution.objects.filter(pipeline__project=alpha, status=Status.FAILED)
        .exclude(pipeline__in=[data.wide, data.retry])
        .values_list("pipeline__identifier", flat=True)
        .first()
    )
    progress("  executions list")
    first = timed(client, list_url, requests, warmup=warmup)
    _add(report, section, "list: first page", first, LIST_P95_TARGET)
    deep = timed(client, f"{list_url}?before={deep_id}", requests, warmup=warmup)
    _add(report, section, "list: deep page (keyset, 90% back)", deep, LIST_P95_TARGET)
    first_p50 = percentile(first.durations, 50)
    ratio = percentile(deep.durations, 50) / first_p50 if first_p50 else float("nan")
    report.add(
        section,
        "list: deep page / first page (p50)",
        f"{ratio:.2f}",
        f"<= {DEEP_RATIO_TARGET:.2f}",
        ratio <= DEEP_RATIO_TARGET,
    )
    filtered = timed(
        client, f"{list_url}?pipeline={some_pipeline}&status=FAILED", requests, warmup=warmup
    )
    _add(report, section, "list: filtered (pipeline + FAILED)", filtered, LIST_P95_TARGET)
    rare = timed(client, f"{list_url}?who=bench-user-07&status=EXPIRED", requests, warmup=warmup)
    _add(report, section, "list: rare filter (user + EXPIRED)", rare, None)

    if connection.vendor == "postgresql":
        plans = {
            "first": explain_list(data.operator, alpha, {}),
            "deep": explain_list(data.operator, alpha, {"before": deep_id}),
            "filtered": explain_list(
                data.operator, alpha, {"pipeline": some_pipeline, "status": Status.FAILED}
            ),
            "rare": explain_list(
                data.operator, alpha, {"who": "bench-user-07", "status": Status.EXPIRED}
            ),
        }
        report.add(
            section,
            "list query alone (EXPLAIN ANALYZE)",
            " · ".join(f"{name} {seconds * 1000:.1f} ms" for name, seconds in plans.items()),
        )

    progress("  retry insights")
    insights_url = reverse("project_insights", args=[fixtures.ORG, alpha.slug])
    for days in insights.PERIODS:
        found = timed(
            client, f"{insights_url}?days={days}", min(requests, INSIGHTS_REQUESTS), warmup=warmup
        )
        _add(report, section, f"retry insights, last {days} days", found, INSIGHTS_P95_TARGET)

    progress("  execution page")
    wide_execution = (
        Execution.objects.filter(pipeline=data.wide, status=Status.FAILED).order_by("-id").first()
    )
    assert wide_execution is not None, "the dataset has no failed execution of the wide pipeline"
    page = timed(client, reverse("execution", args=[wide_execution.pk]), requests, warmup=warmup)
    _add(report, section, "execution page, 50 stages", page, PAGE_P95_TARGET)

    progress("  retry dialog")
    retry_execution = (
        Execution.objects.filter(pipeline=data.retry, status=Status.FAILED, retry__isnull=True)
        .order_by("-id")
        .first()
    )
    assert retry_execution is not None, "the dataset has no failed execution to retry"
    dialog = timed(
        client,
        reverse("execution_retry", args=[retry_execution.pk]),
        requests,
        warmup=warmup,
        headers=HTMX,
    )
    _add(report, section, "retry dialog, 200 stages", dialog, PAGE_P95_TARGET)

    progress(f"  retry submit: {requests + warmup + 1} fresh failed executions to retry")
    targets = dataset.add_failed(
        data.retry, requests + warmup + 1, fails_at=dataset.RETRY_FAILS_AT - 1
    )
    try:
        urls = [reverse("execution_retry", args=[pk]) for pk in targets]
        post = {"from_stage": f"s{dataset.RETRY_FAILS_AT:03d}", "mode": "", "reason": "benchmark"}
        sent: list[int] = []
        # The retries' first steps go to a stub, not the broker: no worker runs them here, and
        # a broker shared with real workers is left alone (a send costs about a millisecond).
        with mock.patch.object(
            engine, "_send", lambda step_id, queue, task_id: sent.append(step_id)
        ):
            submit = timed(
                client,
                "",
                requests,
                warmup=warmup,
                method="post",
                data=post,
                headers=HTMX,
                urls=urls,
            )
        _add(report, section, "retry submit, 200 stages", submit, SUBMIT_P95_TARGET)
        created = Execution.objects.filter(retry_of_id__in=targets).count()
        report.add(
            section,
            "retries created by the submits",
            f"{created} of {len(targets)} ({len(sent)} first steps dispatched)",
            str(len(targets)),
            created == len(targets) == len(sent),
        )
    finally:
        dataset.delete_executions(targets)
