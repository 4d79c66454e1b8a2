"""Template filters every template has (``TEMPLATES["OPTIONS"]["builtins"]``): one way to show a
moment and a duration (``stageline.timefmt``)."""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

from django import template
from django.utils.html import format_html
from django.utils.safestring import SafeString

from stageline.timefmt import format_duration, format_exact, format_relative

register = template.Library()


@register.filter
def when(moment: datetime.datetime | None) -> SafeString | str:
    """``<time>`` reading ``3 min ago``, its exact time (zone named) on hover; ``—`` for None."""
    if moment is None:
        return "—"
    return format_html(
        '<time datetime="{}" title="{}" data-relative>{}</time>',
        moment.isoformat(),
        format_exact(moment),
        format_relative(moment),
    )


@register.filter
def duration(seconds: float | None) -> str:
    return format_duration(seconds)


@register.filter
def get_item(mapping: Mapping[Any, Any] | None, key: Any) -> Any:
    """``{{ reasons|get_item:row.pk }}``: a dict's value by a key from the template, or ""."""
    return (mapping or {}).get(key, "")
