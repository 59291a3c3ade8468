"""Shopify's own Node library (@shopify/shopify-api) as a judge, run by tests/support/shopify_api_check/.

`install()` puts the pinned library in that folder's node_modules once (kept between runs,
ignored by git): `npm ci` from the committed lockfile, with a timeout and one retry, and an
AssertionError (a failed test, never a skipped one) if Node, npm or the registry is missing.
`ShopifyApi.run(command, **arguments)` runs one command of check.mjs and returns its answer.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.config import ROOT

CHECK_DIR = ROOT / "tests" / "support" / "shopify_api_check"
PACKAGE = "@shopify/shopify-api"
INSTALL_TIMEOUT_SECONDS = 240
RUN_TIMEOUT_SECONDS = 60


def pinned_version() -> str:
    """The exact version package.json pins (a range would let the judge change under us)."""
    manifest = json.loads((CHECK_DIR / "package.json").read_text())
    return str(manifest["dependencies"][PACKAGE])


def installed_version() -> str | None:
    """The library's version in node_modules, None unless an install finished there (npm
    writes node_modules/.package-lock.json last: an interrupted install does not count)."""
    manifest = CHECK_DIR / "node_modules" / PACKAGE / "package.json"
    if not (manifest.is_file() and (CHECK_DIR / "node_modules" / ".package-lock.json").is_file()):
        return None
    return str(json.loads(manifest.read_text()).get("version"))


def _npm_ci(npm: str) -> subprocess.CompletedProcess[str] | str:
    try:
        return subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=CHECK_DIR,
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT_SECONDS,
        )
    except subprocess.TimeoutExpired:
        return f"timed out after {INSTALL_TIMEOUT_SECONDS}s"


def install() -> Path:
    """The path of `node`, once the pinned library is installed; AssertionError if it cannot be."""
    node, npm = shutil.which("node"), shutil.which("npm")
    assert node and npm, (
        "node and npm are needed to check the emulator against @shopify/shopify-api"
    )
    if installed_version() == pinned_version():
        return Path(node)
    problems = []
    for _attempt in range(2):  # the registry can blip: one retry
        result = _npm_ci(npm)
        if isinstance(result, str):
            problems.append(result)
        elif result.returncode != 0:
            lines = (result.stderr or result.stdout).strip().splitlines()
            problems.append(" / ".join(lines[:6]))
        elif installed_version() == pinned_version():
            return Path(node)
        else:
            problems.append(f"installed {installed_version()}, pinned {pinned_version()}")
    raise AssertionError(f"npm ci in {CHECK_DIR} failed: {problems}")


@dataclass(frozen=True)
class ShopifyApi:
    """check.mjs with the app's keys; `emulator` routes the library's requests to it."""

    node: Path
    api_key: str
    api_secret: str
    emulator: str | None = None
    api_version: str | None = None

    def answer(self, command: str, **arguments: Any) -> dict[str, Any]:
        """check.mjs's whole answer: {"ok": True, "result"} or {"ok": False, "error"}."""
        request = {
            "command": command,
            "apiKey": self.api_key,
            "apiSecret": self.api_secret,
            "emulator": self.emulator,
            "apiVersion": self.api_version,
            **arguments,
        }
        done = subprocess.run(
            [str(self.node), str(CHECK_DIR / "check.mjs")],
            input=json.dumps(request),
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_SECONDS,
            cwd=CHECK_DIR,
        )
        assert done.returncode == 0, f"check.mjs {command} exited {done.returncode}: {done.stderr}"
        answer: dict[str, Any] = json.loads(done.stdout)
        return answer

    def run(self, command: str, **arguments: Any) -> Any:
        """The result of a command that must succeed."""
        answer = self.answer(command, **arguments)
        assert answer["ok"], f"{PACKAGE} refused ({command}): {answer['error']}"
        return answer["result"]

    def refusal(self, command: str, **arguments: Any) -> dict[str, Any]:
        """The error of a command that must fail."""
        answer = self.answer(command, **arguments)
        assert not answer["ok"], f"{PACKAGE} accepted ({command}): {answer['result']}"
        error: dict[str, Any] = answer["error"]
        return error
