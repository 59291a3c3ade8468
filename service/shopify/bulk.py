"""Shopify bulk operations for jobs: `ctx.admin.bulk_query(...)` and `.bulk_mutation(...)`.

A bulk query reads a whole catalogue for about ten cost points, where paging it spends the
shop's bucket for minutes. The price is waiting: Shopify runs the query in the background and
writes JSONL to a URL. Here:

- the shop's bulk slots (one bulk query at a time before API 2026-01, five from 2026-01, the
  same for mutations) are a Redis semaphore per shop and type, so a second bulk job of the shop
  waits its turn instead of failing on Shopify's OPERATION_IN_PROGRESS;
- the operation's id is kept with the job (jobs.bulk_operation_id) before any waiting, so a
  run interrupted while waiting (a killed worker) resumes that operation; a completed one whose
  result has not expired is read again rather than run again;
- waiting polls the operation with backoff, and wakes early when the `bulk_operations/finish`
  webhook (service/web/webhooks.py) pushes the operation's id to a Redis list;
- `objectCount` is reported as the job's progress, then the rows read while streaming;
- the result is streamed with httpx line by line: memory stays flat whatever the file size;
- FAILED, CANCELED, EXPIRED, an expired URL and partial data raise clear errors; a job
  cancelled (from the dashboard or the API) while its operation runs cancels the operation.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol
from uuid import UUID

import httpx
import orjson
from databases import Database
from redis.asyncio import Redis

from jobs.types import NonRetryableError
from service import store
from service.core.settings import Settings

logger = logging.getLogger("shopjobs.shopify")

# Before this API version Shopify runs one bulk operation of each type per shop; from it, five.
CONCURRENT_FROM_VERSION = "2026-01"
CONCURRENT_LIMIT = 5
SLOT_LEASE_SECONDS = 60.0  # a slot whose holder stopped renewing it (killed) frees itself
POLL_FIRST_SECONDS = 0.2
POLL_MAX_SECONDS = 5.0
POLL_GROWTH = 1.5
SIGNAL_BLOCK_SECONDS = 1.0  # under the Redis client's socket timeout
SIGNAL_LIFETIME_SECONDS = 3600
PROGRESS_EVERY_ROWS = 1000
RUNNING = ("CREATED", "RUNNING", "CANCELING")
# Shopify says these may be intermittent: the job is retried (a new operation).
RETRYABLE_ERROR_CODES = ("INTERNAL_SERVER_ERROR",)

OPERATION_FIELDS = "id type status errorCode objectCount rootObjectCount url partialDataUrl query"
RUN_QUERY = f"""
mutation ShopjobsBulkQuery($query: String!) {{
  bulkOperationRunQuery(query: $query) {{
    bulkOperation {{ {OPERATION_FIELDS} }}
    userErrors {{ code field message }}
  }}
}}
"""
RUN_MUTATION = f"""
mutation ShopjobsBulkMutation($mutation: String!, $path: String!) {{
  bulkOperationRunMutation(mutation: $mutation, stagedUploadPath: $path) {{
    bulkOperation {{ {OPERATION_FIELDS} }}
    userErrors {{ code field message }}
  }}
}}
"""
NODE = f"""
query ShopjobsBulkOperation($id: ID!) {{
  node(id: $id) {{ ... on BulkOperation {{ {OPERATION_FIELDS} }} }}
}}
"""
CANCEL = """
mutation ShopjobsBulkCancel($id: ID!) {
  bulkOperationCancel(id: $id) { bulkOperation { id status } userErrors { field message } }
}
"""
STAGED_UPLOAD = """
mutation ShopjobsStagedUpload($input: [StagedUploadInput!]!) {
  stagedUploadsCreate(input: $input) {
    stagedTargets { url resourceUrl parameters { name value } }
    userErrors { field message }
  }
}
"""
# Requested costs: a mutation 10 points; node(id:) an object, 1 point.
MUTATION_COST = 10.0
NODE_COST = 1.0
BUSY_CODES = ("OPERATION_IN_PROGRESS", "LIMIT_REACHED")

# KEYS[1] the shop's slots (a sorted set: job id -> lease expiry, ms);
# ARGV: now ms, limit, job id, lease ms. A holder renewing its slot always gets it back.
ACQUIRE_SLOT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZSCORE', KEYS[1], ARGV[3]) or redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], tonumber(ARGV[1]) + tonumber(ARGV[4]), ARGV[3])
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  return 1
end
return 0
"""


class BulkOperationFailed(NonRetryableError):
    """Shopify ended the operation FAILED (errorCode in the message), or refused to start it."""


class BulkOperationRetryable(Exception):
    """Shopify failed the operation with an error it calls intermittent: the job retries."""


class BulkOperationCanceled(NonRetryableError):
    """The operation was canceled (not by this job's own cancellation)."""


class BulkResultExpired(NonRetryableError):
    """The operation's result expired (Shopify keeps it 7 days): run the job again."""


class BulkPartialData(NonRetryableError):
    """The operation failed after writing part of its result; partial data is not used."""


def concurrent_limit(api_version: str) -> int:
    return CONCURRENT_LIMIT if api_version >= CONCURRENT_FROM_VERSION else 1


def slots_key(shop: str, kind: str) -> str:
    return f"shopjobs:bulk:slots:{shop}:{kind}"


def finished_key(operation_id: str) -> str:
    """The Redis list the finish webhook pushes to, and a waiting run blocks on."""
    return f"shopjobs:bulk:finished:{operation_id}"


async def signal_finished(redis: Redis, operation_id: str, status: str) -> None:
    """Called by the web for `bulk_operations/finish`: wake the run waiting for it, if any."""
    key = finished_key(operation_id)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.rpush(key, status)
        pipe.expire(key, SIGNAL_LIFETIME_SECONDS)
        await pipe.execute()


class _Client(Protocol):
    settings: Settings
    database: Database
    redis: Redis
    http: httpx.AsyncClient


class ShopAdmin(Protocol):
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


@dataclass
class BulkRows:
    """The rows of a completed bulk query, streamed on iteration (once).

    Rows are dicts as Shopify writes them; a nested connection's rows carry `__parentId`.
    """

    admin: ShopAdmin
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


class BulkRunner:
    """One bulk operation of one job: take a slot, start or resume, wait, hand over the rows."""

    def __init__(
        self, admin: ShopAdmin, kind: str, text: str, expected_objects: int | None = None
    ) -> None:
        self.admin = admin
        self.expected = expected_objects
        self.kind = kind  # QUERY or MUTATION
        self.text = text  # the query, or the mutation run on each line
        self.link = admin.job
        settings = admin.client.settings
        self.limit = concurrent_limit(settings.shopify_api_version)
        self.holder = str(self.link.job_id) if self.link else f"adhoc:{id(self)}"

    @property
    def redis(self) -> Redis:
        return self.admin.client.redis

    async def _acquire(self) -> bool:
        now = int(time.time() * 1000)
        got = await self.redis.eval(  # type: ignore[misc]
            ACQUIRE_SLOT,
            1,
            slots_key(self.admin.shop, self.kind),
            now,
            self.limit,
            self.holder,
            int(SLOT_LEASE_SECONDS * 1000),
        )
        return bool(got)

    async def _release(self) -> None:
        await self.redis.zrem(slots_key(self.admin.shop, self.kind), self.holder)

    async def _progress(self, percent: int, message: str) -> None:
        if self.link is not None:
            await self.link.report_progress(percent, message)

    async def _wait_for_slot(self) -> None:
        delay = POLL_FIRST_SECONDS
        told = False
        while not await self._acquire():
            if not told:
                told = True
                await self._progress(0, "waiting for the shop's bulk operation slot")
            await asyncio.sleep(delay)
            delay = min(POLL_MAX_SECONDS, delay * POLL_GROWTH)

    async def _node(self, operation_id: str) -> dict[str, Any] | None:
        data = await self.admin.graphql(NODE, {"id": operation_id}, cost=NODE_COST)
        node = data.get("node")
        return node if isinstance(node, dict) and node.get("id") else None

    async def _resumable(self) -> dict[str, Any] | None:
        """The operation an earlier run of this job started for the same query, if usable."""
        if self.link is None:
            return None
        kept = await store.bulk_operation_of(self.admin.client.database, self.link.job_id)
        if not kept:
            return None
        operation = await self._node(kept)
        if operation is None or operation.get("query") != self.text:
            return None
        if operation["status"] in (*RUNNING, "COMPLETED"):
            logger.info("%s: resuming bulk operation %s", self.admin.shop, kept)
            return operation
        return None

    async def _start(self, start: Callable[[], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
        delay = POLL_FIRST_SECONDS
        while True:
            payload = await start()
            errors = payload.get("userErrors") or []
            operation = payload.get("bulkOperation")
            if operation:
                return operation
            codes = {e.get("code") for e in errors}
            if not codes & set(BUSY_CODES):
                text = "; ".join(str(e.get("message")) for e in errors) or "no operation"
                raise BulkOperationFailed(f"Shopify refused the bulk operation: {text}")
            # Busy with an operation we do not know of (another process, another app version)
            await self._progress(0, "waiting for the shop's running bulk operation")
            await asyncio.sleep(delay)
            delay = min(POLL_MAX_SECONDS, delay * POLL_GROWTH)

    async def run(self, start: Callable[[], Awaitable[dict[str, Any]]]) -> BulkRows:
        await self._wait_for_slot()
        try:
            operation = await self._resumable()
            if operation is None:
                operation = await self._start(start)
                if self.link is not None:
                    await store.keep_bulk_operation(
                        self.admin.client.database, self.link.job_id, str(operation["id"])
                    )
            operation = await self._wait(operation)
        except asyncio.CancelledError:
            # Shutdown (the job goes back to the queue, keeping its operation and its slot
            # until the lease lapses) or the job cancelled: then the operation goes too.
            await asyncio.shield(self._cancel_if_job_ended())
            raise
        except BaseException:
            await self._release()
            raise
        await self._release()
        return self._outcome(operation)

    async def _cancel_if_job_ended(self) -> None:
        if self.link is None:
            return
        try:
            database = self.admin.client.database
            if not await store.job_is_final(database, self.link.job_id):
                return
            kept = await store.bulk_operation_of(database, self.link.job_id)
            if kept:
                await self._cancel(kept)
            await self._release()
        except Exception as exc:  # best effort: the run is being cancelled anyway
            logger.warning("%s: bulk operation not cancelled (%s)", self.admin.shop, exc)

    async def _cancel(self, operation_id: str) -> None:
        logger.info("%s: cancelling bulk operation %s", self.admin.shop, operation_id)
        await self.admin.graphql(CANCEL, {"id": operation_id}, cost=MUTATION_COST)

    async def _wait(self, operation: dict[str, Any]) -> dict[str, Any]:
        delay = POLL_FIRST_SECONDS
        operation_id = str(operation["id"])
        database = self.admin.client.database
        while operation["status"] in RUNNING:
            count = int(operation.get("objectCount") or 0)
            percent = min(49, count * 50 // self.expected) if self.expected else 0
            await self._progress(percent, f"bulk operation running: {count} objects")
            await self._wake_or_sleep(operation_id, delay)
            delay = min(POLL_MAX_SECONDS, delay * POLL_GROWTH)
            await self._acquire()  # renews this job's slot while it waits
            if self.link is not None and await store.job_is_final(database, self.link.job_id):
                await self._cancel(operation_id)
                raise BulkOperationCanceled(
                    f"The job was cancelled: bulk operation {operation_id} cancelled with it"
                )
            found = await self._node(operation_id)
            if found is None:
                raise BulkOperationFailed(f"Bulk operation {operation_id} is gone")
            operation = found
        return operation

    async def _wake_or_sleep(self, operation_id: str, seconds: float) -> None:
        """Sleep `seconds`, or less when the finish webhook arrives."""
        deadline = time.monotonic() + seconds
        key = finished_key(operation_id)
        while (left := deadline - time.monotonic()) > 0:
            if await self.redis.blpop([key], timeout=min(left, SIGNAL_BLOCK_SECONDS)):
                return

    def _outcome(self, operation: dict[str, Any]) -> BulkRows:
        status, code = operation["status"], operation.get("errorCode")
        operation_id = operation["id"]
        if status == "COMPLETED":
            return BulkRows(self.admin, operation)
        if status == "FAILED":
            if operation.get("partialDataUrl"):
                raise BulkPartialData(
                    f"Bulk operation {operation_id} failed ({code}) after writing part of its "
                    f"result ({operation.get('objectCount')} objects); partial data is not used"
                )
            if code in RETRYABLE_ERROR_CODES:
                raise BulkOperationRetryable(f"Bulk operation {operation_id} failed ({code})")
            raise BulkOperationFailed(f"Bulk operation {operation_id} failed ({code})")
        if status == "CANCELED":
            raise BulkOperationCanceled(f"Bulk operation {operation_id} was canceled")
        if status == "EXPIRED":
            raise BulkResultExpired(
                f"The result of bulk operation {operation_id} has expired: run the job again"
            )
        raise BulkOperationFailed(f"Bulk operation {operation_id} ended {status}")


async def bulk_query(
    admin: ShopAdmin, query: str, *, expected_objects: int | None = None
) -> BulkRows:
    async def start() -> dict[str, Any]:
        data = await admin.graphql(RUN_QUERY, {"query": query}, cost=MUTATION_COST)
        return data["bulkOperationRunQuery"] or {}

    rows = await BulkRunner(admin, "QUERY", query, expected_objects).run(start)
    if admin.job is not None:
        await admin.job.report_progress(50, f"bulk query done: {rows.object_count} objects")
    return rows


async def _staged_file(
    rows: Iterable[dict[str, Any]] | AsyncIterable[dict[str, Any]],
) -> tempfile.SpooledTemporaryFile[bytes]:
    """The JSONL of `rows`, spilled to disk past a megabyte (constant memory)."""
    spool: tempfile.SpooledTemporaryFile[bytes] = tempfile.SpooledTemporaryFile(2**20)
    if isinstance(rows, AsyncIterable):
        async for row in rows:
            spool.write(orjson.dumps(row) + b"\n")
    else:
        for row in rows:
            spool.write(orjson.dumps(row) + b"\n")
    spool.seek(0)
    return spool


async def bulk_mutation(
    admin: ShopAdmin,
    mutation: str,
    rows: Iterable[dict[str, Any]] | AsyncIterable[dict[str, Any]],
) -> BulkMutationResults:
    async def start() -> dict[str, Any]:
        path = await _upload(admin, rows)
        data = await admin.graphql(
            RUN_MUTATION, {"mutation": mutation, "path": path}, cost=MUTATION_COST
        )
        return data["bulkOperationRunMutation"] or {}

    done = await BulkRunner(admin, "MUTATION", mutation).run(start)
    return BulkMutationResults(done)


async def _upload(
    admin: ShopAdmin, rows: Iterable[dict[str, Any]] | AsyncIterable[dict[str, Any]]
) -> str:
    """stagedUploadsCreate, then the multipart POST of the JSONL: the staged upload path."""
    staged = await admin.graphql(
        STAGED_UPLOAD,
        {
            "input": [
                {
                    "resource": "BULK_MUTATION_VARIABLES",
                    "filename": "bulk_op_vars",
                    "mimeType": "text/jsonl",
                    "httpMethod": "POST",
                }
            ]
        },
        cost=MUTATION_COST,
    )
    answer = staged["stagedUploadsCreate"] or {}
    targets = answer.get("stagedTargets") or []
    if not targets:
        raise BulkOperationFailed(f"stagedUploadsCreate gave no target: {answer.get('userErrors')}")
    target = targets[0]
    parameters = {p["name"]: p["value"] for p in target["parameters"]}
    spool = await _staged_file(rows)
    with spool:
        response = await admin.client.http.post(
            target["url"], data=parameters, files={"file": ("bulk_op_vars", spool, "text/jsonl")}
        )
    if response.status_code >= 300:
        raise BulkOperationRetryable(f"The staged upload answered {response.status_code}")
    return parameters["key"]
