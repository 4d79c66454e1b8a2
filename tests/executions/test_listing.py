"""The executions list: filters, keyset pages, retry markers, bad filter values, query counts."""

from __future__ import annotations

import datetime
import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from executions import listing
from executions.models import Execution, Status
from stageline.timefmt import format_duration
from tests.helpers import factories

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}


def pipeline_yaml(identifier: str) -> str:
    return factories.serial_pipeline(identifier, [factories.shell_stage("build", "echo hi")])


@pytest.fixture
def pipelines(personas):
    web = factories.make_pipeline(personas.project, pipeline_yaml("web_deploy"))
    data = factories.make_pipeline(personas.project, pipeline_yaml("data_refresh"))
    return web, data


def add_executions(
    pipeline, count: int, *, status=Status.SUCCESS, user=None, created_at=None
) -> list[Execution]:
    """Rows made directly (the list only reads them); numbered after the pipeline's last one."""
    rows = []
    for _ in range(count):
        pipeline.last_sequence += 1
        rows.append(
            Execution.objects.create(
                pipeline=pipeline,
                version=pipeline.current_version,
                sequence=pipeline.last_sequence,
                status=status,
                triggered_by=user,
            )
        )
    pipeline.save(update_fields=["last_sequence"])
    if created_at is not None:
        Execution.objects.filter(pk__in=[r.pk for r in rows]).update(created_at=created_at)
    return rows


def project_url(personas, **params) -> str:
    url = reverse("project", args=[personas.project.organization.slug, personas.project.slug])
    if params:
        url += "?" + "&".join(f"{key}={value}" for key, value in params.items())
    return url


def listed_ids(html: str) -> list[int]:
    return [int(pk) for pk in re.findall(r'<a class="seq" href="/executions/(\d+)/">', html)]


def older_link(html: str) -> str | None:
    match = re.search(r'rel="next" href="([^"]+)"', html)
    return match.group(1).replace("&amp;", "&") if match else None


def newer_link(html: str) -> str | None:
    match = re.search(r'rel="prev" href="([^"]+)"', html)
    return match.group(1).replace("&amp;", "&") if match else None


# --- pages of the list ------------------------------------------------------------------------


def test_pages_walk_every_execution_once_newest_first(client, personas, pipelines):
    web, data = pipelines
    add_executions(web, 30)
    add_executions(data, 25)
    client.force_login(personas.viewer)
    seen: list[int] = []
    url: str | None = project_url(personas)
    pages = 0
    while url:
        html = client.get(url).content.decode()
        ids = listed_ids(html)
        assert ids == sorted(ids, reverse=True)
        seen += ids
        url = older_link(html)
        pages += 1
    expected = list(Execution.objects.order_by("-id").values_list("id", flat=True))
    assert seen == expected
    assert pages == 3  # 25 + 25 + 5


def test_newer_link_walks_back_to_the_same_pages(client, personas, pipelines):
    web, _ = pipelines
    add_executions(web, 60)
    client.force_login(personas.executor)
    first = client.get(project_url(personas)).content.decode()
    second = client.get(older_link(first)).content.decode()
    third = client.get(older_link(second)).content.decode()
    assert older_link(third) is None
    back_to_second = client.get(newer_link(third)).content.decode()
    assert listed_ids(back_to_second) == listed_ids(second)
    back_to_first = client.get(newer_link(back_to_second)).content.decode()
    assert listed_ids(back_to_first) == listed_ids(first)
    assert newer_link(first) is None


def test_next_page_links_keep_the_filters(client, personas, pipelines):
    web, data = pipelines
    add_executions(web, 30, status=Status.FAILED, user=personas.executor)
    add_executions(data, 10, status=Status.FAILED, user=personas.executor)
    add_executions(web, 10, status=Status.SUCCESS, user=personas.executor)
    client.force_login(personas.viewer)
    html = client.get(
        project_url(personas, pipeline="web_deploy", status="FAILED", who="executor")
    ).content.decode()
    link = older_link(html)
    assert "pipeline=web_deploy" in link and "status=FAILED" in link and "who=executor" in link
    rest = client.get(link).content.decode()
    ids = listed_ids(html) + listed_ids(rest)
    expected = Execution.objects.filter(pipeline=web, status=Status.FAILED).order_by("-id")
    assert ids == list(expected.values_list("id", flat=True))
    assert older_link(rest) is None


def test_an_execution_added_between_pages_is_neither_repeated_nor_lost(client, personas, pipelines):
    web, _ = pipelines
    add_executions(web, 30)
    client.force_login(personas.viewer)
    first = client.get(project_url(personas)).content.decode()
    add_executions(web, 3)  # new runs arrive while the operator reads page one
    second = client.get(older_link(first)).content.decode()
    ids = listed_ids(first) + listed_ids(second)
    assert len(ids) == len(set(ids)) == 30


def test_page_of_uses_no_offset(personas, pipelines):
    web, _ = pipelines
    rows = add_executions(web, 30)
    queryset = listing.visible_executions(personas.viewer, project=personas.project)
    with CaptureQueriesContext(connection) as queries:
        page = listing.page_of(queryset, before=rows[-1].pk, size=10)
    assert [r.pk for r in page.rows] == [r.pk for r in rows[-2:-12:-1]]
    sql = " ".join(q["sql"] for q in queries.captured_queries).upper()
    assert "OFFSET" not in sql.replace("OFFSET 0", "")
    assert "COUNT(" not in sql
    assert len(queries.captured_queries) == 1


# --- filters ----------------------------------------------------------------------------------


def test_filters_by_pipeline_status_who_and_dates(client, personas, pipelines):
    web, data = pipelines
    now = timezone.now()
    old_fail = add_executions(
        web,
        1,
        status=Status.FAILED,
        user=personas.admin,
        created_at=now - datetime.timedelta(days=10),
    )
    new_fail = add_executions(web, 1, status=Status.FAILED, user=personas.executor)
    success = add_executions(web, 1, status=Status.SUCCESS, user=personas.executor)
    other = add_executions(data, 1, status=Status.FAILED, user=personas.executor)
    client.force_login(personas.viewer)

    def ids(**params):
        return set(listed_ids(client.get(project_url(personas, **params)).content.decode()))

    assert ids(pipeline="data_refresh") == {other[0].pk}
    assert ids(status="FAILED") == {old_fail[0].pk, new_fail[0].pk, other[0].pk}
    assert ids(status="failed", pipeline="web_deploy") == {old_fail[0].pk, new_fail[0].pk}
    assert ids(who="admin") == {old_fail[0].pk}
    today = timezone.localdate()
    assert ids(since=today.isoformat()) == {new_fail[0].pk, success[0].pk, other[0].pk}
    until = (today - datetime.timedelta(days=5)).isoformat()
    assert ids(until=until) == {old_fail[0].pk}


def test_the_pipeline_page_lists_only_that_pipeline(client, personas, pipelines):
    web, data = pipelines
    mine = add_executions(web, 2)
    add_executions(data, 2)
    client.force_login(personas.viewer)
    url = reverse("pipeline", args=["acme", "web", "web_deploy"])
    html = client.get(url + "?status=SUCCESS").content.decode()
    assert set(listed_ids(html)) == {r.pk for r in mine}
    assert 'name="pipeline"' not in html  # no pipeline filter on a pipeline's own list
    fragment = client.get(url + "?status=SUCCESS", **HTMX).content.decode()
    assert fragment.lstrip().startswith('<section id="executions"')
    assert "<h1>" not in fragment
    assert set(listed_ids(fragment)) == {r.pk for r in mine}


def test_filtering_with_htmx_answers_the_list_fragment_only(client, personas, pipelines):
    web, _ = pipelines
    failed = add_executions(web, 2, status=Status.FAILED)
    add_executions(web, 2, status=Status.SUCCESS)
    client.force_login(personas.viewer)
    response = client.get(project_url(personas, status="FAILED"), **HTMX)
    html = response.content.decode()
    assert response.status_code == 200
    assert html.lstrip().startswith('<section id="executions"')
    assert "<html" not in html and "Pipelines" not in html
    assert set(listed_ids(html)) == {r.pk for r in failed}
    assert 'hx-push-url="true"' in html
    assert 'value="FAILED" selected' in html  # the swapped form shows the filter in use
    assert "HX-Request" in response.headers["Vary"]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"status": "EXPLODED"}, "Unknown status &#x27;EXPLODED&#x27;"),
        ({"status": "skipped"}, "Unknown status"),
        ({"before": "abc"}, "must be an execution number, not &#x27;abc&#x27;"),
        ({"before": "-3"}, "must be an execution number"),
        ({"after": "1e9"}, "must be an execution number"),
        ({"since": "2024-13-45"}, "is not a date: write it as YYYY-MM-DD"),
        ({"until": "yesterday"}, "is not a date"),
        ({"since": "2025-03-10", "until": "2025-03-01"}, "is before &#x27;From&#x27;"),
        ({"pipeline": "nope"}, "There is no pipeline &#x27;nope&#x27; in this project."),
        ({"before": "5", "after": "3"}, "names both"),
    ],
)
def test_bad_filter_values_get_a_clear_message_not_an_error_page(
    client, personas, pipelines, params, message
):
    add_executions(pipelines[0], 3)
    client.force_login(personas.viewer)
    for headers in ({}, HTMX):
        response = client.get(project_url(personas, **params), **headers)
        html = response.content.decode()
        assert response.status_code == 400
        assert message in html
        assert listed_ids(html) == []


def test_a_pipeline_of_a_hidden_project_is_not_a_filter_choice(client, personas, pipelines):
    hidden = factories.make_pipeline(personas.other_project, pipeline_yaml("secret_ops"))
    add_executions(hidden, 2)
    client.force_login(personas.viewer)
    response = client.get(project_url(personas, pipeline="secret_ops"))
    assert response.status_code == 400
    assert listed_ids(response.content.decode()) == []


# --- what a row shows -------------------------------------------------------------------------


def test_rows_show_status_badge_duration_and_retry_markers(client, personas, pipelines):
    web, _ = pipelines
    original = add_executions(web, 1, status=Status.FAILED, user=personas.executor)[0]
    start = timezone.now() - datetime.timedelta(minutes=3, seconds=5)
    Execution.objects.filter(pk=original.pk).update(
        started_at=start, finished_at=start + datetime.timedelta(seconds=125)
    )
    web.last_sequence += 1
    web.save(update_fields=["last_sequence"])
    retry = Execution.objects.create(
        pipeline=web,
        version=web.current_version,
        sequence=web.last_sequence,
        status=Status.RUNNING,
        retry_of=original,
        chain_root=original,
        attempt=2,
        triggered_by=personas.executor,
    )
    client.force_login(personas.viewer)
    html = client.get(project_url(personas)).content.decode()
    assert '<span class="badge status-failed">Failed</span>' in html
    assert '<span class="badge status-running">Running</span>' in html
    assert "2 min 05 s" in html
    assert f'retried as <a href="/executions/{retry.pk}/">#{retry.sequence}</a>' in html
    assert f'retry of <a href="/executions/{original.pk}/">#{original.sequence}</a>' in html


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "—"), (0.4, "0.4 s"), (59.94, "59.9 s"), (61, "1 min 01 s"), (3725, "1 h 02 min")],
)
def test_durations_read_naturally(seconds, text):
    assert format_duration(seconds) == text


# --- who sees what ----------------------------------------------------------------------------


@pytest.mark.parametrize("persona", ["admin", "executor", "viewer", "approver"])
def test_every_project_member_sees_the_projects_executions(client, personas, pipelines, persona):
    rows = add_executions(pipelines[0], 3)
    client.force_login(getattr(personas, persona))
    response = client.get(project_url(personas))
    assert response.status_code == 200
    assert set(listed_ids(response.content.decode())) == {r.pk for r in rows}


def test_a_stranger_gets_404_for_the_list_and_its_fragment(client, personas, pipelines):
    add_executions(pipelines[0], 3)
    client.force_login(personas.stranger)
    assert client.get(project_url(personas)).status_code == 404
    assert client.get(project_url(personas, status="FAILED"), **HTMX).status_code == 404


def test_a_pipeline_grant_shows_only_that_pipelines_executions(client, personas, pipelines):
    web, data = pipelines
    mine = add_executions(web, 2)
    add_executions(data, 2)
    solo = factories.make_user("solo")
    factories.grant(solo, personas.project, "viewer", pipeline=web)
    client.force_login(solo)
    html = client.get(project_url(personas)).content.decode()
    assert set(listed_ids(html)) == {r.pk for r in mine}
    assert "data_refresh" not in html


# --- cost -------------------------------------------------------------------------------------


def count_queries(client, url, **headers) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url, **headers)
    assert response.status_code == 200
    return len(queries.captured_queries)


@pytest.mark.parametrize("persona", ["admin", "viewer"])
def test_the_list_costs_the_same_queries_for_5_and_40_executions(
    client, personas, pipelines, persona
):
    web, data = pipelines
    client.force_login(getattr(personas, persona))
    add_executions(web, 3, user=personas.executor)
    add_executions(data, 2, user=personas.admin)
    small = {
        "project": count_queries(client, project_url(personas)),
        "fragment": count_queries(client, project_url(personas, status="SUCCESS"), **HTMX),
        "pipeline": count_queries(client, reverse("pipeline", args=["acme", "web", "web_deploy"])),
    }
    originals = add_executions(web, 20, status=Status.FAILED, user=personas.executor)
    for original in originals[:10]:  # rows with retry markers cost nothing extra either
        web.last_sequence += 1
        Execution.objects.create(
            pipeline=web,
            version=web.current_version,
            sequence=web.last_sequence,
            retry_of=original,
            chain_root=original,
            attempt=2,
            triggered_by=personas.viewer,
        )
    web.save(update_fields=["last_sequence"])
    add_executions(data, 5, user=personas.admin)
    assert Execution.objects.count() == 40
    large = {
        "project": count_queries(client, project_url(personas)),
        "fragment": count_queries(client, project_url(personas, status="SUCCESS"), **HTMX),
        "pipeline": count_queries(client, reverse("pipeline", args=["acme", "web", "web_deploy"])),
    }
    assert small == large


@pytest.mark.database  # the compound query runs on PostgreSQL too
@pytest.mark.parametrize("terms_per_query", [200, 2])
def test_the_newest_pages_read_pipeline_by_pipeline_are_the_same_pages(
    personas, pipelines, monkeypatch, terms_per_query
):
    """SQLite reads an unfiltered list pipeline by pipeline (``only_pipelines``): the pages,
    their order and their cursors are those of the plain query, hidden pipelines stay out."""
    monkeypatch.setattr(listing, "_TERMS_PER_QUERY", terms_per_query)
    web, data = pipelines
    hidden = factories.make_pipeline(personas.other_project, pipeline_yaml("hidden"))
    for _ in range(4):  # interleaved, in uneven runs
        add_executions(web, 3)
        add_executions(data, 5)
        add_executions(hidden, 2)
    user = personas.viewer
    queryset = listing.visible_executions(user, project=personas.project)
    only = listing.pipelines_of_list(user, project=personas.project)
    assert sorted(only) == sorted([web.pk, data.pk])

    before = None
    walked = []
    while True:
        plain = listing.page_of(queryset, before=before, size=7)
        fast = listing.page_of(queryset, before=before, size=7, only_pipelines=only)
        assert [r.pk for r in fast.rows] == [r.pk for r in plain.rows]
        assert (fast.older, fast.newer) == (plain.older, plain.newer)
        walked += [r.pk for r in fast.rows]
        if fast.older is None:
            break
        before = fast.older
    expected = list(
        Execution.objects.filter(pipeline__in=[web, data])
        .order_by("-id")
        .values_list("pk", flat=True)
    )
    assert walked == expected and len(walked) == 32
