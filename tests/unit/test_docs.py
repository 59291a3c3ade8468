"""The README and docs/ hold together: links resolve, and nothing cites files outside the repo.

The README is the front door and docs/ the manual; pages move and headings get renamed, and a
link that no longer resolves fails silently on GitHub. The contracts the code follows live in
docs/, so code, tests and docs must cite those pages, never notes kept outside the repository.
The contract tables are checked against the code: every setting and its default
(docs/configuration.md), every metric (docs/operations.md), the job author's API (README).
No servers: this runs with the unit tests.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest


def _repo_root() -> Path:
    """The folder holding pyproject.toml, wherever in tests/ this file lives."""
    here = Path(__file__).resolve()
    return next(p for p in here.parents if (p / "pyproject.toml").is_file())


ROOT = _repo_root()
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = [README, *sorted(DOCS.glob("*.md"))]
README_MAX_LINES = 250

# [text](target) and ![alt](target), the target up to a space (a title may follow) or ")".
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^(```|~~~)")
# Notes outside the repository: the design notes file and the shared folder it sits in. The
# patterns are spelled so that this file does not match itself.
OUTSIDE = re.compile(r"DESIGN(?:\.md|\ssection)|\.\./(?:shared)|/work/(?:shared)")
SKIP_DIRS = {
    ".git",
    ".venv",
    "venv",
    "node_modules",
    ".dev",
    "test-artifacts",
    "__pycache__",
    ".pytest_cache",
    ".ruff_cache",
    ".hypothesis",
}


def _prose(path: Path) -> list[str]:
    """The page's lines outside fenced code blocks (code may show links that are not links)."""
    lines, fenced = [], False
    for line in path.read_text().splitlines():
        if FENCE.match(line.strip()):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    for line in _prose(path):
        match = re.match(r"#{1,6}\s+(.*)", line)
        if not match:
            continue
        slug = _slug(match.group(1))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def _relative_links(path: Path) -> list[str]:
    targets = [m.group(1) for line in _prose(path) for m in LINK.finditer(line)]
    return [t for t in targets if not re.match(r"[a-z][a-z0-9+.-]*:", t)]


def test_readme_is_a_front_door() -> None:
    lines = len(README.read_text().splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move detail to docs/"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for target in _relative_links(page):
        file_part, _, anchor = target.partition("#")
        resolved = (page.parent / file_part).resolve() if file_part else page
        if not resolved.exists():
            broken.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
            broken.append(f"{target}: no heading #{anchor} in {resolved.relative_to(ROOT)}")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def test_readme_links_every_docs_page_and_every_picture_is_shown() -> None:
    linked = {(README.parent / t.partition("#")[0]).resolve() for t in _relative_links(README)}
    unlinked = [p.name for p in DOCS.glob("*.md") if p.resolve() not in linked]
    assert not unlinked, f"README.md does not link {unlinked}"

    shown = {
        (page.parent / t.partition("#")[0]).resolve()
        for page in PAGES
        for t in _relative_links(page)
    }
    unshown = [p.name for p in DOCS.glob("*.png") if p.resolve() not in shown]
    assert not unshown, f"pictures no page shows: {unshown}"


def test_nothing_cites_notes_outside_the_repository() -> None:
    citing = []
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.endswith(".egg-info")]
        for name in files:
            path = Path(folder) / name
            try:
                text = path.read_text()
            except (UnicodeDecodeError, OSError):
                continue  # pictures, databases: not prose
            for number, line in enumerate(text.splitlines(), 1):
                if OUTSIDE.search(line):
                    citing.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not citing, "cite docs/ instead:\n" + "\n".join(citing)


CONFIGURATION = DOCS / "configuration.md"


def _configuration_rows() -> dict[str, str]:
    """docs/configuration.md's table: each variable named in a row's first cell, with its part
    of the default cell (`A` / `B` rows give each of their variables one side)."""
    rows: dict[str, str] = {}
    for line in _prose(CONFIGURATION):
        if not line.startswith("| `"):
            continue
        name_cell, default_cell = (c.strip() for c in line.strip("|").split("|")[:2])
        names = re.findall(r"`([A-Z][A-Z0-9_]*)`", name_cell)
        defaults = default_cell.split(" / ")
        for index, name in enumerate(names):
            rows[name] = defaults[index] if len(defaults) == len(names) else default_cell
    return rows


def _documented_default(field: object) -> str:
    from enum import Enum

    from pydantic_core import PydanticUndefined

    default = getattr(field, "default", PydanticUndefined)
    if default is PydanticUndefined:
        return "required"
    if default is None:
        return "unset"
    if isinstance(default, bool):
        return "`true`" if default else "`false`"
    if isinstance(default, Enum):
        return f"`{default.value}`"
    if isinstance(default, float) and default.is_integer():
        default = int(default)
    return f"`{default}`"


def test_every_setting_is_documented_with_its_default() -> None:
    """Every field of Settings (the configuration contract) has a row in
    docs/configuration.md giving the default the code has, and every row names a setting."""
    from service.core.settings import Settings

    rows = _configuration_rows()
    wrong = []
    for name, field in Settings.model_fields.items():
        variable = name.upper()
        if variable not in rows:
            wrong.append(f"{variable}: not in docs/configuration.md")
            continue
        expected = _documented_default(field)
        if expected not in rows[variable]:
            wrong.append(
                f"{variable}: the code's default is {expected}, the doc says {rows[variable]!r}"
            )
    fields = {name.upper() for name in Settings.model_fields}
    wrong += [f"{name}: documented, but no such setting" for name in rows if name not in fields]
    assert not wrong, "\n".join(wrong)


def test_readme_names_the_whole_job_author_api() -> None:
    """The README's 'Writing a job type' lists `jobs.__all__`, the stable API, in full."""
    import jobs

    text = README.read_text()
    missing = [name for name in jobs.__all__ if f"`{name}`" not in text]
    assert not missing, f"README.md does not name {missing} of jobs.__all__"


def _served_metrics(registry: object) -> dict[str, str]:
    """Our series of a registry as /metrics names them (a counter with `_total`), by type."""
    served = {}
    for family in registry.collect():  # type: ignore[attr-defined]
        if family.name.startswith("shopjobs_"):
            suffix = "_total" if family.type == "counter" else ""
            served[family.name + suffix] = family.type
    return served


def _documented_metrics(process: str) -> dict[str, str]:
    """docs/operations.md's `| metric (PROCESS) |` table: name and type."""
    documented, inside = {}, False
    for line in _prose(DOCS / "operations.md"):
        if line.startswith("| metric ("):
            inside = line.startswith(f"| metric ({process})")
        elif inside and line.startswith("| `"):
            name, kind = (c.strip() for c in line.strip("|").split("|")[:2])
            documented[name.strip("`")] = kind
        elif not line.startswith("|"):
            inside = False
    return documented


def test_every_metric_is_documented_as_served() -> None:
    """The metrics tables of docs/operations.md are what each process's /metrics serves."""
    from jobs.worker.metrics import WorkerMetrics
    from service.web.metrics import WebMetrics

    for process, metrics in (("web", WebMetrics()), ("worker", WorkerMetrics())):
        assert _documented_metrics(process) == _served_metrics(metrics.registry), process


CODE_PATH = re.compile(
    r"`((?:service|jobs|tests|bench|tools|shopify_emulator)/[\w/.-]+\.(?:py|sql|html|js))`"
)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_source_file_named_exists(page: Path) -> None:
    """A page that sends the reader to a file that moved or was removed is wrong."""
    named = set(CODE_PATH.findall(page.read_text()))
    assert sorted(p for p in named if not (ROOT / p).exists()) == []
