"""The fault suite's shared pieces: its size knob, its figures, and what it asserts about effects.

`FAULTS_SCALE=full` (what `make faults` sets) runs every scenario at the size issue 8 asks for;
anything else, or nothing (`make test`), runs the same scenarios smaller, so they stay fast.
Each scenario records what it did (jobs, kills, restarts, requests) with `record`; the session
prints them at the end, which is where the figures of docs/reliability.md come from.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
from databases import Database

from tests.support import processes
from tests.support.effects import effects_command
from tests.support.processes import Process, Spawn
from tests.support.proxy import proxy_url

T = TypeVar("T")

FULL = os.environ.get("FAULTS_SCALE", "small") == "full"
FIGURES: dict[str, dict[str, Any]] = {}


def sized(small: T, full: T) -> T:
    """The small-size value under `make test`, the full-size one under `make faults`."""
    return full if FULL else small


def record(scenario: str, **figures: Any) -> None:
    FIGURES.setdefault(scenario, {}).update(figures)


def summary_lines() -> list[str]:
    lines = [f"fault suite figures ({'full' if FULL else 'small'} size):"]
    for scenario, figures in FIGURES.items():
        values = ", ".join(f"{name}={value}" for name, value in figures.items())
        lines.append(f"  {scenario}: {values}")
    return lines


def signed(path: str, shop: str, customer: str = "", skew: int = 0) -> str:
    """A relative app-proxy URL signed now (+ `skew` seconds), as Shopify signs it."""
    return proxy_url("", path, shop=shop, customer=customer, skew=skew)


def start_worker(spawn: Spawn, env: dict[str, str], **overrides: object) -> Process:
    """The real worker, with the effect-writing `echo` (tests/support/effects.py)."""
    return processes.start_worker(spawn, env, wrap=effects_command, **overrides)


def start_web(spawn: Spawn, env: dict[str, str], name: str = "web") -> tuple[Process, str]:
    """The real web process, with the effect-writing `echo`: (process, base URL)."""
    return processes.start_web(spawn, env, name, wrap=effects_command)


async def wait_until(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not within {timeout}s: {what}")


async def completed(database: Database) -> int:
    return int(await database.fetch_val("SELECT count(*) FROM jobs WHERE status = 'completed'"))


async def wait_completed(database: Database, count: int, timeout: float = 120) -> None:
    """Until at least `count` jobs are completed."""

    async def enough() -> bool:
        return await completed(database) >= count

    await wait_until(enough, timeout, f"{count} jobs completed")


async def effects_by_job(database: Database) -> dict[uuid.UUID, list[tuple[int, str]]]:
    rows = await database.fetch_all("SELECT job_id, run, mode FROM echo_effects ORDER BY id")
    effects: dict[uuid.UUID, list[tuple[int, str]]] = defaultdict(list)
    for row in rows:
        m = row._mapping
        effects[m["job_id"]].append((m["run"], m["mode"]))
    return effects


async def check_effects(database: Database, ids: list[uuid.UUID]) -> int:
    """Assert what the echo job's side effects promise for completed jobs; return the repeats.

    - `with_completion` (committed with the completion): exactly one per completed job,
      written by the run that completed it.
    - `before_completion` (written on its own, like a call to another system): at least one,
      one of them by the completing run, never two by the same run. Any others were written
      by runs that died before their completion was recorded: at-least-once delivery cannot
      avoid those, so they are counted (the caller bounds them by the runs it interrupted).
    """
    effects = await effects_by_job(database)
    rows = await database.fetch_all(
        "SELECT id, status, attempts, input->>'record_effect' AS mode FROM jobs WHERE id = ANY(:ids)",
        {"ids": ids},
    )
    assert len(rows) == len(ids)
    repeats = 0
    for row in rows:
        m = row._mapping
        assert m["status"] == "completed", m
        mine = effects.get(m["id"], [])
        runs = [run for run, _ in mine]
        assert {mode for _, mode in mine} <= {m["mode"]}, (m, mine)
        if m["mode"] == "with_completion":
            assert runs == [m["attempts"]], (m, mine)
        elif m["mode"] == "before_completion":
            assert m["attempts"] in runs and len(set(runs)) == len(runs), (m, mine)
            assert max(runs) == m["attempts"], (m, mine)
            repeats += len(runs) - 1
        else:
            assert not mine, (m, mine)
    return repeats


async def status_counts(database: Database) -> dict[str, int]:
    rows = await database.fetch_all("SELECT status, count(*) AS n FROM jobs GROUP BY status")
    return {r._mapping["status"]: r._mapping["n"] for r in rows}


def get(url: str, timeout: float = 5.0) -> httpx.Response:
    return httpx.get(url, timeout=timeout)
