"""How statuses look: every status has its own glyph (colour is never the only signal), the
failure colour is kept for failures, and Aborted is a neutral grey (stopped on purpose, as
Harness and GitHub show it), on status badges and on the execution page's stage cards."""

import re
from pathlib import Path

import pytest

from executions.states import Status

STATIC = Path(__file__).resolve().parent.parent / "static" / "stageline"
APP_CSS = (STATIC / "app.css").read_text()
EXECUTION_CSS = (STATIC / "execution.css").read_text()


def _badge(status: str) -> dict[str, str]:
    """The colour and glyph of `.badge.status-<status>` in app.css."""
    name = status.lower()
    colour = re.search(rf"\.badge\.status-{name} \{{ color: var\((--[\w-]+)\)", APP_CSS)
    glyph = re.search(rf'\.badge\.status-{name}::before \{{ content: "([^"]+)"', APP_CSS)
    assert colour and glyph, f"app.css has no badge colour and glyph for {status}"
    return {"colour": colour.group(1), "glyph": glyph.group(1)}


def _card(status: str) -> dict[str, str]:
    """The colour and glyph of `[data-status="<STATUS>"]` in execution.css."""
    rule = re.search(
        rf'\[data-status="{status}"\] \{{ --st: var\((--[\w-]+)\);.*?--glyph: "([^"]*)"',
        EXECUTION_CSS,
    )
    assert rule, f"execution.css has no stage-card rule for {status}"
    return {"colour": rule.group(1), "glyph": rule.group(2)}


@pytest.mark.parametrize("look", [_badge, _card], ids=["badge", "stage card"])
def test_every_status_is_told_apart_without_colour(look):
    glyphs = {status: look(status)["glyph"] for status in Status.values}
    shown = [glyph for glyph in glyphs.values() if glyph]
    assert len(shown) == len(set(shown)), f"two statuses share a glyph: {glyphs}"


@pytest.mark.parametrize("look", [_badge, _card], ids=["badge", "stage card"])
def test_aborted_is_neutral_grey_not_the_failure_colour(look):
    aborted = look(Status.ABORTED)["colour"]
    assert aborted == "--stop"
    assert aborted not in {look(Status.FAILED)["colour"], look(Status.EXPIRED)["colour"]}
    grey = re.search(r"--stop: #([0-9a-f]{6})", APP_CSS)
    assert grey
    red, green, blue = (int(grey.group(1)[i : i + 2], 16) for i in (0, 2, 4))
    assert max(red, green, blue) - min(red, green, blue) <= 24, "Aborted's colour is not a grey"


def test_the_failure_colour_is_kept_for_failures():
    failing = {Status.FAILED, Status.REJECTED}
    for status in Status.values:
        if status not in failing:
            assert _badge(status)["colour"] != "--bad", f"{status} is shown in the failure colour"
            assert _card(status)["colour"] != "--bad", f"{status} is shown in the failure colour"
