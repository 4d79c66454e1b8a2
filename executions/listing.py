"""The executions list: which executions a user sees, filtered, a page at a time.

Pages are cut with a keyset cursor on the id (newest first): ``before=<id>`` gives the page of
executions older than ``id``, ``after=<id>`` the page newer than it. Each page is one query
that reads ``size + 1`` rows through the ``(pipeline, -id)`` / ``(status, -id)`` indexes; there
is no OFFSET (its cost grows with the page number) and no COUNT of the whole table. The rows
come with their pipeline, who started them, both ends of their retry link and whether a step
waits for an intervention (``needs_intervention``), so the page costs the same number of
queries for 5 executions or 5,000.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass, field
from typing import Any

from django.db import connection
from django.db.models import Exists, OuterRef, Q, QuerySet, Subquery
from django.utils import timezone

from executions.models import Execution, Status, StepRun
from pipelines import permissions
from stageline.timefmt import format_duration

PAGE_SIZE = 25
# Executions never end SKIPPED (SPEC §3): the statuses one may filter on.
EXECUTION_STATUSES: list[tuple[str, str]] = [
    (status.value, status.label) for status in Status if status != Status.SKIPPED
]
# What an execution may need from a person (``?needs=``): an answer to a step waiting for
# intervention (a failure strategy's manual_intervention, SPEC §9). A parallel group's other
# stages may still run, so the execution's own status need not say it.
NEEDS: list[tuple[str, str]] = [("intervention", "Needs intervention")]


@dataclass(frozen=True)
class Filters:
    """What the list is narrowed to; every field is optional."""

    pipeline: object | None = None
    status: str = ""
    who: str = ""
    since: datetime.date | None = None
    until: datetime.date | None = None
    needs: str = ""  # one of NEEDS


@dataclass
class Page:
    """One page of executions, newest first, with the cursors of its neighbours."""

    rows: list[Execution] = field(default_factory=list)
    older: int | None = None  # pass as ?before= to get the next (older) page
    newer: int | None = None  # pass as ?after= to get the previous (newer) page


def _start_of(day: datetime.date) -> datetime.datetime:
    return timezone.make_aware(datetime.datetime.combine(day, datetime.time.min))


def visible_executions(user, *, project=None, pipeline=None) -> QuerySet:
    """Executions ``user`` may see, of one project or one pipeline."""
    queryset = Execution.objects.visible_to(user)
    if pipeline is not None:
        return queryset.filter(pipeline=pipeline)
    if project is not None:
        return queryset.filter(pipeline__project=project)
    return queryset


def pipelines_with_last_execution(user, project) -> list[Any]:
    """The project's pipelines ``user`` may see, each with its last execution's id, number,
    status and time as annotations (one query, whatever the number of pipelines). The rows are
    ``Pipeline`` objects carrying those annotations (and, for the page, its ``run_reason``)."""
    last = Execution.objects.filter(pipeline=OuterRef("pk")).order_by("-id")
    return list(
        permissions.visible_pipelines(user)
        .filter(project=project)
        .select_related("project__organization")
        .annotate(
            last_id=Subquery(last.values("id")[:1]),
            last_number=Subquery(last.values("sequence")[:1]),
            last_status=Subquery(last.values("status")[:1]),
            last_at=Subquery(last.values("created_at")[:1]),
        )
        .order_by("name", "identifier")
    )


def pipelines_for_newest_page(user, filters: Filters, *, project=None) -> list[int] | None:
    """What ``page_of(only_pipelines=…)`` needs for the list of ``visible_executions(user,
    project=…, pipeline=filters.pipeline)`` narrowed by ``filters``: the ids of its pipelines on
    SQLite when nothing else narrows it; None otherwise (PostgreSQL needs no help)."""
    if connection.vendor != "sqlite" or filters != Filters(pipeline=filters.pipeline):
        return None
    return pipelines_of_list(user, project=project, pipeline=filters.pipeline)


def pipelines_of_list(user, *, project=None, pipeline=None) -> list[int]:
    """The ids of the pipelines whose executions ``visible_executions`` (same arguments) holds."""
    if pipeline is not None:
        return [pipeline.pk]
    pipelines = permissions.visible_pipelines(user)
    if project is not None:
        pipelines = pipelines.filter(project=project)
    return list(pipelines.values_list("id", flat=True))


# SQLite allows 500 terms in a compound SELECT; this leaves room.
_TERMS_PER_QUERY = 200


def _newest_ids(pipeline_ids: list[int], before: int | None, count: int) -> list[int]:
    """The ids of the ``count`` newest executions of these pipelines (older than ``before``),
    each pipeline read through its ``(pipeline, -id)`` index and the lists merged."""
    table = connection.ops.quote_name(Execution._meta.db_table)
    older = " AND id < %s" if before is not None else ""
    found: list[int] = []
    for start in range(0, len(pipeline_ids), _TERMS_PER_QUERY):
        chunk = pipeline_ids[start : start + _TERMS_PER_QUERY]
        terms, params = [], []
        for index, pipeline_id in enumerate(chunk):
            terms.append(
                f"SELECT * FROM (SELECT id FROM {table} WHERE pipeline_id = %s{older}"
                f" ORDER BY id DESC LIMIT %s) AS p{index}"
            )
            params += [pipeline_id, *([before] if before is not None else []), count]
        with connection.cursor() as cursor:
            cursor.execute(
                " UNION ALL ".join(terms) + " ORDER BY id DESC LIMIT %s", [*params, count]
            )
            found += [row[0] for row in cursor.fetchall()]
    return sorted(found, reverse=True)[:count]


def apply_filters(queryset: QuerySet, filters: Filters) -> QuerySet:
    """Narrow ``queryset`` to ``filters``; the date range is whole days in the current time zone,
    ``until`` included."""
    if filters.pipeline is not None:
        queryset = queryset.filter(pipeline=filters.pipeline)
    if filters.status:
        queryset = queryset.filter(status=filters.status)
    if filters.who:
        queryset = queryset.filter(triggered_by__username=filters.who)
    if filters.since:
        queryset = queryset.filter(created_at__gte=_start_of(filters.since))
    if filters.until:
        queryset = queryset.filter(
            created_at__lt=_start_of(filters.until + datetime.timedelta(days=1))
        )
    if filters.needs == "intervention":
        # The few waiting steps, found through the (status, …) index, name their executions.
        queryset = queryset.filter(pk__in=_waiting_for_intervention().values("execution_id"))
    return queryset


def _waiting_for_intervention() -> QuerySet[StepRun]:
    return StepRun.objects.filter(status=Status.INTERVENTION_WAITING)


def page_of(
    queryset: QuerySet,
    *,
    before: int | None = None,
    after: int | None = None,
    size: int = PAGE_SIZE,
    only_pipelines: list[int] | None = None,
) -> Page:
    """The page of ``queryset`` just older than ``before``, just newer than ``after``, or the
    newest page when neither is given. One query.

    ``only_pipelines``: the ids of exactly the pipelines ``queryset`` holds executions of,
    when nothing else narrows it (``pipelines_for_newest_page``). The page's ids are then read
    pipeline by pipeline through the ``(pipeline, -id)`` index (one more query): SQLite would
    otherwise read every execution of the project and sort them to keep 26 (0.5 s at a
    million executions, docs/performance.md)."""
    queryset = queryset.select_related("pipeline", "triggered_by", "retry_of", "retry").annotate(
        # The row's marker: a step of it waits for an answer (in the same query).
        needs_intervention=Exists(_waiting_for_intervention().filter(execution=OuterRef("pk")))
    )
    if after is not None:
        rows = list(queryset.filter(id__gt=after).order_by("id")[: size + 1])
        if len(rows) <= size:
            # These are the newest rows: show the full newest page rather than a short one.
            return page_of(queryset, size=size)
        rows = rows[:size][::-1]
        return Page(rows=rows, older=rows[-1].id, newer=rows[0].id)
    if only_pipelines is not None:
        queryset = queryset.filter(id__in=_newest_ids(only_pipelines, before, size + 1))
    elif before is not None:
        queryset = queryset.filter(id__lt=before)
    rows = list(queryset.order_by("-id")[: size + 1])
    has_older = len(rows) > size
    rows = rows[:size]
    return Page(
        rows=rows,
        older=rows[-1].id if rows and has_older else None,
        # Reached through a cursor, so newer rows existed when that link was made.
        newer=rows[0].id if rows and before is not None else None,
    )


def with_durations(rows: list[Execution]) -> list[Execution]:
    """Set ``duration_text`` on each row (a running execution counts up to now)."""
    for row in rows:
        row.duration_text = format_duration(row.duration_seconds)  # type: ignore[attr-defined]
    return rows


def waiting_for(user) -> QuerySet[StepRun]:
    """What waits for an answer that ``user`` may give, across projects, oldest first: approval
    steps WAITING in pipelines where the user holds Approve, and failed steps waiting for an
    intervention (``manual_intervention``) in pipelines where they hold Execute. One query."""
    approvals = Q(
        type="Approval",
        status=Status.WAITING,
        execution__pipeline__in=permissions.pipelines_with(user, "approve"),
    )
    interventions = Q(
        status=Status.INTERVENTION_WAITING,
        execution__pipeline__in=permissions.pipelines_with(user, "execute"),
    )
    return (
        StepRun.objects.filter(approvals | interventions)
        .select_related("execution__pipeline__project__organization", "stage_run")
        .order_by("started_at", "pk")
    )


_JUMP = re.compile(
    r"""^\s*(?:
        (?:id:?\s*)?(?P<id>[0-9]{1,18})                                  # 1234, id:1234
      | (?:(?P<org>[\w-]+)/(?P<project>[\w-]+)/)?(?P<pipeline>[\w-]+)?
        \s*(?:\#|\s)\s*(?P<number>[0-9]{1,9})                            # web_deploy #12, #12
    )\s*$""",
    re.VERBOSE,
)
JUMP_HELP = "an execution id (1234), a number (#12) or a pipeline and number (web_deploy #12)"


def find_executions(user, text: str) -> QuerySet[Execution] | None:
    """The executions ``user`` may see that ``text`` names (``JUMP_HELP``), newest first; None
    when ``text`` names no execution at all."""
    match = _JUMP.match(text or "")
    if match is None:
        return None
    found = Execution.objects.visible_to(user).select_related("pipeline__project__organization")
    if match["id"]:
        return found.filter(pk=int(match["id"]))
    found = found.filter(sequence=int(match["number"]))
    if match["pipeline"]:
        found = found.filter(pipeline__identifier=match["pipeline"])
    if match["org"]:
        found = found.filter(
            pipeline__project__organization__slug=match["org"],
            pipeline__project__slug=match["project"],
        )
    return found.order_by("-pk")
