"""One owner per mechanism, checked by reading the tree (issue 23).

The Redis queue's key names live in service/queue/keys.py and its Lua in
service/queue/scripts.py; the per-shop cap is held by the take alone; "claim" is Postgres'
word and "take" is Redis'. A second home for any of them fails here, naming the file.
"""

from __future__ import annotations

import re

from tests.support.config import ROOT

SOURCES = sorted(
    path
    for folder in ("service", "jobs")
    for path in (ROOT / folder).rglob("*.py")
    if "__pycache__" not in path.parts
)


def _files_matching(pattern: str) -> set[str]:
    found = re.compile(pattern)
    return {p.relative_to(ROOT).as_posix() for p in SOURCES if found.search(p.read_text())}


def test_redis_key_names_are_written_in_one_module() -> None:
    assert _files_matching(r"[\"']arq:(fair|queue)") == {"service/queue/keys.py"}


def test_the_queues_lua_is_written_and_registered_in_one_module() -> None:
    lua = _files_matching(r"redis\.call\(") | _files_matching(r"register_script\(")
    assert {f for f in lua if f.startswith("service/queue/")} == {"service/queue/scripts.py"}
    # Besides the queue, Redis holds Shopify's state, each with its own script next to its
    # arithmetic: a shop's bulk slots, the Admin API cost buckets, the start rate limiter.
    assert {f for f in lua if not f.startswith("service/queue/")} <= {
        "service/shopify/bulk_slots.py",
        "service/shopify/throttle.py",
        "jobs/worker/ratelimit.py",
    }


def test_the_shop_cap_is_held_in_one_place() -> None:
    """SHOP_CONCURRENCY_LIMIT reaches the queue's take and its upkeep, and no claim."""
    readers = _files_matching(r"shop_concurrency_limit")
    assert readers == {
        "service/core/settings.py",
        "jobs/worker/startup.py",  # builds the Taker with it
        "jobs/worker/maintenance.py",  # the reconciler's repair of the running counts
    }
    assert _files_matching(r"pg_advisory_xact_lock\(7331002") == set()


def test_the_redis_step_is_a_take_and_the_postgres_one_a_claim() -> None:
    assert not (ROOT / "jobs/worker/claims.py").exists()
    assert _files_matching(r"\bclass \w*Claims\b") == set()
