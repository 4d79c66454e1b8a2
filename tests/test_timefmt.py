"""One way to show a moment and a duration (stageline/timefmt.py, the |when and |duration
filters every template has)."""

from __future__ import annotations

import datetime

import pytest
from django.template import Context, Template

from stageline.timefmt import format_duration, format_exact, format_relative

NOW = datetime.datetime(2026, 12, 2, 11, 0, 0, tzinfo=datetime.UTC)


@pytest.mark.parametrize(
    ("delta", "text"),
    [
        (datetime.timedelta(seconds=-10), "just now"),
        (datetime.timedelta(seconds=10), "in a few seconds"),
        (datetime.timedelta(minutes=-3), "3 min ago"),
        (datetime.timedelta(minutes=25), "in 25 min"),
        (datetime.timedelta(hours=-2, minutes=-10), "2 h ago"),
        (datetime.timedelta(days=-4), "4 d ago"),
        (datetime.timedelta(days=-45), "on 2026-10-18"),
    ],
)
def test_a_moment_reads_relative_to_now(delta, text):
    assert format_relative(NOW + delta, now=NOW) == text


def test_the_exact_time_names_its_zone(settings):
    assert format_exact(NOW) == "2026-12-02 11:00:00 UTC"
    settings.TIME_ZONE = "Europe/Berlin"
    assert format_exact(NOW) == "2026-12-02 12:00:00 CET"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "—"), (3.24, "3.2 s"), (245, "4 min 05 s"), (7620, "2 h 07 min")],
)
def test_durations_read_one_way(seconds, text):
    assert format_duration(seconds) == text


def test_every_template_shows_a_moment_as_a_time_element_with_the_exact_time_on_hover():
    html = Template("{{ moment|when }} · {{ none|when }} · {{ seconds|duration }}").render(
        Context({"moment": NOW, "none": None, "seconds": 245})
    )
    assert html.startswith(
        '<time datetime="2026-12-02T11:00:00+00:00" title="2026-12-02 11:00:00 UTC" data-relative>'
    )
    assert html.endswith("</time> · — · 4 min 05 s")
