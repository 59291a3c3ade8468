"""Reading a completed bulk operation's result: its JSONL rows, streamed, and mutation results.

Shopify writes the result as JSONL at a URL (an S3/GCS object that answers 403 once expired).
It is streamed with httpx line by line, so memory stays flat whatever the file size; the rows
read are reported as the job's progress (50 to 99 %: the wait took 0 to 49). A nested
connection's rows carry `__parentId` and always follow their parent, so `grouped()` hands over
each top-level row with its descendants holding one parent at a time. A bulk mutation's rows
are one result per input line (`__lineNumber`), its GraphQL errors and userErrors together.

The protocols say what this needs of its caller (service/shopify/admin.py's ShopAdmin) and of
that caller's client; named apart from ShopAdmin so that one name means one class.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol
from uuid import UUID

import httpx
import orjson
from databases import Database
from redis.asyncio import Redis

from service.core.settings import Settings
from service.shopify.bulk_errors import (
    BulkOperationFailed,
    BulkOperationRetryable,
    BulkResultExpired,
)

PROGRESS_EVERY_ROWS = 1000


class _Client(Protocol):
    settings: Settings
    database: Database
    redis: Redis
    http: httpx.AsyncClient


class BulkCaller(Protocol):
    """What a bulk operation needs of service/shopify/admin.py's ShopAdmin (which calls here)."""

    shop: str
    job: JobLink | None

    @property
    def client(self) -> _Client: ...

    async def graphql(
        self, query: str, variables: dict[str, Any] | None = None, *, cost: float | None = None
    ) -> dict[str, Any]: ...


@dataclass
class JobLink:
    """The job a ShopAdmin works for: where its operation id is kept, where progress goes."""

    job_id: UUID
    report_progress: Callable[[int, str | None], Awaitable[None]]
    # Operations this run already handed over: never resumed by a later call of the same run
    # (a second bulk_mutation with the same mutation has other rows).
    handed_over: set[str] = field(default_factory=set)
    # The worker running the job (its lease): with it, each operation is recorded as a step of
    # the job under the call that started it, and waits suspend the job instead of holding
    # the run (service/core/waits.py). None: the run waits in place (tests, tools).
    owner: str | None = None
    # How many bulk calls of each (kind, text) this run made: the n-th call resumes the n-th
    # operation an earlier run of the job recorded for the same text.
    calls: dict[str, int] = field(default_factory=dict)


@dataclass
class BulkRows:
    """The rows of a completed bulk query, streamed on iteration (once).

    Rows are dicts as Shopify writes them; a nested connection's rows carry `__parentId`.
    """

    admin: BulkCaller
    operation: dict[str, Any]
    rows_read: int = 0
    _used: bool = field(default=False, repr=False)

    @property
    def operation_id(self) -> str:
        return str(self.operation["id"])

    @property
    def object_count(self) -> int:
        return int(self.operation.get("objectCount") or 0)

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self._rows()

    async def _rows(self) -> AsyncIterator[dict[str, Any]]:
        if self._used:
            raise RuntimeError("a bulk result is streamed once")
        self._used = True
        url = self.operation.get("url")
        if not url:
            return
        link = self.admin.job
        total = max(1, self.object_count)
        async with self.admin.client.http.stream("GET", url) as response:
            if response.status_code == 403:
                raise BulkResultExpired(
                    f"The result of bulk operation {self.operation_id} has expired "
                    "(Shopify keeps results 7 days): run the job again"
                )
            if response.status_code != 200:
                raise BulkOperationRetryable(
                    f"Downloading bulk operation {self.operation_id} answered "
                    f"{response.status_code}"
                )
            async for line in response.aiter_lines():
                if not line:
                    continue
                self.rows_read += 1
                if link is not None and self.rows_read % PROGRESS_EVERY_ROWS == 0:
                    percent = 50 + min(49, self.rows_read * 50 // total)
                    await link.report_progress(percent, f"{self.rows_read} of {total} rows read")
                yield orjson.loads(line)

    async def grouped(self) -> AsyncIterator[tuple[dict[str, Any], list[dict[str, Any]]]]:
        """(top-level row, its descendants' rows) pairs, in order, one parent in memory.

        Shopify writes every child after its parent and before the next top-level row, so a
        parent is complete when the next row without `__parentId` arrives.
        """
        parent: dict[str, Any] | None = None
        children: list[dict[str, Any]] = []
        ids: set[str] = set()
        async for row in self:
            owner = row.get("__parentId")
            if owner is None:
                if parent is not None:
                    yield parent, children
                parent, children, ids = row, [], {str(row.get("id"))}
                continue
            if parent is None or owner not in ids:
                raise BulkOperationFailed(
                    f"Row {self.rows_read} of the bulk result names parent {owner!r}, which "
                    "did not come before it"
                )
            children.append(row)
            if "id" in row:
                ids.add(str(row["id"]))
        if parent is not None:
            yield parent, children


@dataclass(frozen=True)
class MutationResult:
    """One input line's outcome: its data, and its errors (GraphQL errors and userErrors)."""

    line: int
    data: dict[str, Any] | None
    errors: list[str]

    @property
    def ok(self) -> bool:
        return not self.errors


@dataclass
class BulkMutationResults:
    """A completed bulk mutation's results, one per input line, streamed on iteration."""

    rows: BulkRows
    failed: int = 0
    succeeded: int = 0

    @property
    def operation_id(self) -> str:
        return self.rows.operation_id

    def __aiter__(self) -> AsyncIterator[MutationResult]:
        return self._results()

    async def _results(self) -> AsyncIterator[MutationResult]:
        async for row in self.rows:
            data = row.get("data") if isinstance(row.get("data"), dict) else None
            errors = [str(e.get("message", e)) for e in row.get("errors") or []]
            for payload in (data or {}).values():
                if isinstance(payload, dict):
                    errors += [str(e.get("message", e)) for e in payload.get("userErrors") or []]
            result = MutationResult(int(row.get("__lineNumber", -1)), data, errors)
            if result.ok:
                self.succeeded += 1
            else:
                self.failed += 1
            yield result
