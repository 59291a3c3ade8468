"""service/core/group_commit.py: one bad item never fails its neighbours in a group commit."""

from __future__ import annotations

import asyncio

import pytest

from service.core.group_commit import GroupCommit


async def test_a_bad_item_fails_only_its_own_caller() -> None:
    batches: list[list[int]] = []

    async def write(items: list[int]) -> list[int]:
        batches.append(items)
        await asyncio.sleep(0)
        if 13 in items:
            raise ValueError("the statement refused 13")
        return [item * 2 for item in items]

    commit: GroupCommit[int, int] = GroupCommit(write)
    results = await asyncio.gather(
        *(commit.submit(i) for i in (1, 13, 3, 4)), return_exceptions=True
    )
    assert results[0] == 2 and results[2:] == [6, 8]
    assert isinstance(results[1], ValueError)
    assert len(batches[0]) > 1  # they did share a batch first, then went one by one


async def test_postgres_unavailable_fails_the_whole_batch_at_once() -> None:
    calls = 0

    async def write(items: list[int]) -> list[int]:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0)
        raise ConnectionRefusedError("postgres is down")

    commit: GroupCommit[int, int] = GroupCommit(write)
    results = await asyncio.gather(*(commit.submit(i) for i in range(5)), return_exceptions=True)
    assert all(isinstance(r, ConnectionRefusedError) for r in results)
    assert calls <= 2  # the first item alone, then the rest together: no item-by-item retry
    with pytest.raises(ConnectionRefusedError):
        await commit.submit(9)
