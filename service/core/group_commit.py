"""Group commit: many concurrent callers, one round trip per group.

While one group is being written, new items queue up; when it returns, everything that queued
meanwhile goes out together. An idle system therefore writes each item at once (no added
latency), and a busy one writes in groups as large as the load makes them (fewer round trips,
less CPU per item). A group that fails because Postgres is unavailable fails each of its
callers, who decide whether to retry. Any other failure may be one item's doing (a value the
statement refuses): the group is then written again one item at a time, so one bad item fails
only its own caller, never its neighbours.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from service.core.db import UNAVAILABLE_ERRORS

Item = TypeVar("Item")
Result = TypeVar("Result")

MAX_GROUP = 500


class GroupCommit(Generic[Item, Result]):
    def __init__(self, write: Callable[[list[Item]], Awaitable[Sequence[Result]]]) -> None:
        self._write = write
        self._pending: list[tuple[Item, asyncio.Future[Result]]] = []
        self._flushing: asyncio.Task[None] | None = None

    async def submit(self, item: Item) -> Result:
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        while self._pending:
            group, self._pending = self._pending[:MAX_GROUP], self._pending[MAX_GROUP:]
            try:
                results = await self._write([item for item, _ in group])
            except BaseException as exc:
                if (
                    isinstance(exc, Exception)
                    and len(group) > 1
                    and not isinstance(exc, UNAVAILABLE_ERRORS)
                ):
                    await self._one_by_one(group)
                    continue
                _fail(group, exc)
                if not isinstance(exc, Exception):
                    raise
                continue
            for (_, future), result in zip(group, results, strict=True):
                if not future.done():
                    future.set_result(result)

    async def _one_by_one(self, group: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        for index, (item, future) in enumerate(group):
            try:
                (result,) = await self._write([item])
            except BaseException as exc:
                if not isinstance(exc, Exception):
                    _fail(group[index:], exc)
                    raise
                _fail([(item, future)], exc)
                continue
            if not future.done():
                future.set_result(result)


def _fail(group: list[tuple[Item, asyncio.Future[Result]]], exc: BaseException) -> None:
    """Every caller in `group` gets the error (a cancellation as a RuntimeError: the callers
    were not cancelled, the flush was)."""
    for _, future in group:
        if not future.done():
            future.set_exception(exc if isinstance(exc, Exception) else RuntimeError(str(exc)))
