"""Times in the viewer's own time zone, named, with "3 min ago" on the page."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse
from django.utils import timezone
from playwright.sync_api import expect

from executions.models import Status
from executions.services import run_pipeline
from tests.helpers.factories import make_pipeline
from tests.helpers.pages import APPROVAL_YAML
from tests.helpers.runs import wait_for_status

pytestmark = pytest.mark.browser


def test_a_viewer_in_tokyo_reads_tokyo_time_on_hover_and_a_relative_time_on_the_page(
    session, personas
):
    pipeline = make_pipeline(personas.project, APPROVAL_YAML)
    execution = wait_for_status(
        run_pipeline(pipeline=pipeline, user=personas.executor, inputs={}), Status.WAITING
    )
    url = reverse("pipeline", args=["acme", "web", pipeline.identifier])
    page = session.open(personas.viewer, url, timezone_id="Asia/Tokyo")
    started = page.locator("#executions time[data-relative]").first
    expect(started).to_have_attribute("data-localized", "")
    expect(started).to_have_text(re.compile(r"^(just now|1 min ago)$"))
    tokyo = timezone.localtime(execution.created_at, timezone.get_fixed_timezone(9 * 60))
    title = started.get_attribute("title")
    assert f"{tokyo:%H:%M:%S}" in title and re.search(r"GMT\+9|JST", title), title
