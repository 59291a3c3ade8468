"""Headless Chromium for browser tests: Debian's `chromium` package, driven by Playwright.

Playwright's own browser downloads are never used (`playwright install` needs the internet);
.ci/run installs the `chromium` package. A failing browser test keeps a screenshot in
test-artifacts/; screenshots meant for the docs are written there too, and into docs/ only
with UPDATE_SCREENSHOT=1, so an ordinary test run never changes a committed file.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import ROOT

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
