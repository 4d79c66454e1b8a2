"""The browser run writes a docs screenshot only when its pixels changed, so docs/screenshots
is not rewritten by every run."""

from __future__ import annotations

import os

from tests.browser import conftest


class FakePage:
    def __init__(self, image: bytes):
        self.image = image

    def screenshot(self, full_page: bool = False) -> bytes:
        return self.image


def test_a_docs_screenshot_is_rewritten_only_when_it_changed(tmp_path, monkeypatch):
    monkeypatch.setattr(conftest, "SCREENSHOTS", tmp_path)
    path = conftest.screenshot(FakePage(b"\x89PNG same"), "page", docs=True)
    os.utime(path, (1_000_000, 1_000_000))

    conftest.screenshot(FakePage(b"\x89PNG same"), "page", docs=True)
    assert path.stat().st_mtime == 1_000_000, "rewritten although nothing changed"

    conftest.screenshot(FakePage(b"\x89PNG other"), "page", docs=True)
    assert path.read_bytes() == b"\x89PNG other"
