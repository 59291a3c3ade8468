"""Shopify bulk operations for jobs: `ctx.admin.bulk_query(...)` and `.bulk_mutation(...)`.

A bulk query reads a whole catalogue for about ten cost points, where paging it spends the
shop's bucket for minutes. The price is waiting: Shopify runs the query in the background and
writes JSONL to a URL. Here:

- the shop's bulk slots (one bulk query at a time before API 2026-01, five from 2026-01, the
  same for mutations) are a Redis semaphore per shop and type (bulk_slots.py), so a second
  bulk job of the shop waits its turn instead of failing on Shopify's OPERATION_IN_PROGRESS;
- the operation's id is kept with the job (jobs.bulk_operation_id) before any waiting, so a
  run interrupted while waiting (a killed worker) resumes that operation; a completed one whose
  result has not expired is read again rather than run again;
- waiting polls the operation with backoff, and wakes early when the `bulk_operations/finish`
  webhook (service/web/webhooks.py) pushes the operation's id to a Redis list;
- `objectCount` is reported as the job's progress, then the rows read while streaming;
- the result is streamed with httpx line by line (bulk_rows.py): memory stays flat whatever
  the file size;
- FAILED, CANCELED, EXPIRED, an expired URL and partial data raise clear errors
  (bulk_errors.py); a job cancelled (from the dashboard or the API) while its operation runs
  cancels the operation.

This module runs one operation (BulkRunner) and starts queries and mutations; callers keep
importing everything from here.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable
from typing import Any

import orjson
from redis.asyncio import Redis

from service import store
from service.shopify import bulk_slots
from service.shopify.bulk_errors import (
    RETRYABLE_ERROR_CODES,
    BulkOperationCanceled,
    BulkOperationFailed,
    BulkOperationRetryable,
    BulkPartialData,
    BulkResultExpired,
)
from service.shopify.bulk_rows import (
    BulkCaller,
    BulkMutationResults,
    BulkRows,
    JobLink,
    MutationResult,
)
from service.shopify.bulk_slots import finished_key, signal_finished

# What callers reach through this module (jobs/worker, service/web, tests).
__all__ = [
    "CANCEL",
    "BulkCaller",
    "BulkMutationResults",
    "BulkOperationCanceled",
    "BulkOperationFailed",
    "BulkOperationRetryable",
    "BulkPartialData",
    "BulkResultExpired",
    "BulkRows",
    "BulkRunner",
    "JobLink",
    "MutationResult",
    "bulk_mutation",
    "bulk_query",
    "finished_key",
    "signal_finished",
]

logger = logging.getLogger("shopjobs.shopify")

POLL_FIRST_SECONDS = 0.2
POLL_MAX_SECONDS = 5.0
POLL_GROWTH = 1.5
RUNNING = ("CREATED", "RUNNING", "CANCELING")

OPERATION_FIELDS = "id type status errorCode objectCount rootObjectCount url partialDataUrl query"
RUN_QUERY = f"""
mutation ShopjobsBulkQuery($query: String!) {{
  bulkOperationRunQuery(query: $query) {{
    bulkOperation {{ {OPERATION_FIELDS} }}
    userErrors {{ code field message }}
  }}
}}
"""
# From API 2026-01 Shopify no longer groups children under their parent unless asked
# (groupObjects defaults to false); BulkRows.grouped() needs them grouped.
GROUPED_UNLESS_ASKED_FROM = "2026-01"
RUN_QUERY_GROUPED = RUN_QUERY.replace(
    "bulkOperationRunQuery(query: $query)",
    "bulkOperationRunQuery(query: $query, groupObjects: true)",
)
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


class BulkRunner:
    """One bulk operation of one job: take a slot, start or resume, wait, hand over the rows."""

    def __init__(
        self, admin: BulkCaller, kind: str, text: str, expected_objects: int | None = None
    ) -> None:
        self.admin = admin
        self.expected = expected_objects
        self.kind = kind  # QUERY or MUTATION
        self.text = text  # the query, or the mutation run on each line
        self.link = admin.job
        settings = admin.client.settings
        self.limit = bulk_slots.concurrent_limit(settings.shopify_api_version)
        self.holder = str(self.link.job_id) if self.link else f"adhoc:{id(self)}"

    @property
    def redis(self) -> Redis:
        return self.admin.client.redis

    async def _acquire(self) -> bool:
        return await bulk_slots.acquire(
            self.redis, self.admin.shop, self.kind, self.limit, self.holder
        )

    async def _release(self) -> None:
        await bulk_slots.release(self.redis, self.admin.shop, self.kind, self.holder)

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
        if not kept or kept in self.link.handed_over:
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
            operation: dict[str, Any] | None = payload.get("bulkOperation")
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
        if self.link is not None:
            self.link.handed_over.add(str(operation["id"]))
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
            await bulk_slots.wake_or_sleep(self.redis, operation_id, delay)
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
    admin: BulkCaller, query: str, *, expected_objects: int | None = None
) -> BulkRows:
    version = admin.client.settings.shopify_api_version
    run = RUN_QUERY_GROUPED if version >= GROUPED_UNLESS_ASKED_FROM else RUN_QUERY

    async def start() -> dict[str, Any]:
        data = await admin.graphql(run, {"query": query}, cost=MUTATION_COST)
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
    admin: BulkCaller,
    mutation: str,
    rows: Iterable[dict[str, Any]] | AsyncIterable[dict[str, Any]],
) -> BulkMutationResults:
    paths: list[str] = []  # uploaded once: `rows` may be a generator, read only once

    async def start() -> dict[str, Any]:
        if not paths:
            paths.append(await _upload(admin, rows))
        data = await admin.graphql(
            RUN_MUTATION, {"mutation": mutation, "path": paths[0]}, cost=MUTATION_COST
        )
        return data["bulkOperationRunMutation"] or {}

    done = await BulkRunner(admin, "MUTATION", mutation).run(start)
    return BulkMutationResults(done)


async def _upload(
    admin: BulkCaller, rows: Iterable[dict[str, Any]] | AsyncIterable[dict[str, Any]]
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
    parameters: dict[str, str] = {p["name"]: p["value"] for p in target["parameters"]}
    spool = await _staged_file(rows)
    with spool:
        response = await admin.client.http.post(
            target["url"], data=parameters, files={"file": ("bulk_op_vars", spool, "text/jsonl")}
        )
    if response.status_code >= 300:
        raise BulkOperationRetryable(f"The staged upload answered {response.status_code}")
    return parameters["key"]
