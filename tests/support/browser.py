"""Headless Chromium for browser tests: Debian's `chromium` package, driven by Playwright.

Playwright's own browser downloads are never used (`playwright install` needs the internet);
.ci/run installs the `chromium` package. A failing browser test keeps a screenshot in
test-artifacts/ (tests/browser/conftest.py keeps each phase's report, `item_failed` reads
them); screenshots meant for the docs are written there too, and into docs/ only with
UPDATE_SCREENSHOT=1, so an ordinary test run never changes a committed file.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.support.config import ROOT

ARTIFACTS = ROOT / "test-artifacts"
DOCS = ROOT / "docs"
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# Each phase's report (setup, call, teardown) of a test, by phase.
PHASE_REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()


def chromium_executable() -> str:
    executable = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(executable).exists():
        pytest.fail(
            f"Chromium not found at {executable}: `apt-get install chromium` (.ci/run does)"
        )
    return executable


def save_screenshot(png: bytes, name: str) -> Path:
    """Keep a screenshot in test-artifacts/, and in docs/ when UPDATE_SCREENSHOT=1."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    path.write_bytes(png)
    if os.environ.get("UPDATE_SCREENSHOT") == "1":
        DOCS.mkdir(exist_ok=True)
        (DOCS / name).write_bytes(png)
    return path


def item_failed(item: pytest.Item) -> bool:
    """Whether the test's setup or call failed (for a fixture's teardown to react to)."""
    reports = item.stash.get(PHASE_REPORTS, {})
    return any(reports[when].failed for when in ("setup", "call") if when in reports)
