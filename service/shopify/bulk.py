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
- a job run by a worker does not wait in place: while it waits for a slot or for Shopify it
  suspends (service/core/waits.py), freeing its worker slot, and runs again when the
  `bulk_operations/finish` webhook wakes it (service/wakes.py), when a slot frees, or when
  the workers' poller (backoff from 1 s to 30 s, no slot held) finds the operation ended; each
  call's operation is recorded as a step of the job, so the run after a wait (or a crash)
  picks up the same operation;
- a caller without a job (tools, tests) waits in place: it polls with backoff, and wakes
  early when the webhook pushes the operation's id to a Redis list;
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
import hashlib
import logging
import tempfile
import time
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from redis.asyncio import Redis

from service import store, wakes
from service.core.waits import Suspend, WaitFor
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
from service.store.sql import to_json

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
# A running operation of a shop that does not deliver `bulk_operations/finish` is polled by the
# workers' poller (jobs/worker/bulk_poller.py, no slot held) after a quarter of the time its
# job has waited, between these bounds; the poller wakes the job when the operation ends.
SUSPENDED_POLL_MIN_SECONDS = 1.0
SUSPENDED_POLL_MAX_SECONDS = 30.0
SLOT_POLL_SECONDS = 5.0  # a job waiting for a slot looks again (a freed slot wakes it sooner)
# A job waiting on a running operation runs again this often whatever wakes it (the webhook,
# the poller): to report the operation's progress, check its wait limit and its cancel, and in
# case a webhook or a poll is lost.
LOOK_AGAIN_SECONDS = 60.0
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


def poll_delay(waited: float) -> float:
    """When to poll a running operation again, its job having waited `waited` seconds."""
    return min(SUSPENDED_POLL_MAX_SECONDS, max(SUSPENDED_POLL_MIN_SECONDS, waited / 4))


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
        self.wait_limit = settings.job_wait_timeout_seconds
        # The step this call's operation is recorded under (with a worker's job only): the
        # n-th call of a run with this text resumes the n-th operation recorded for it.
        self.step_key: str | None = None
        if self.link is not None and self.link.owner is not None:
            digest = hashlib.sha256(f"{kind}\n{text}".encode()).hexdigest()[:24]
            nth = self.link.calls.get(digest, 0)
            self.link.calls[digest] = nth + 1
            self.step_key = f"bulk:{kind.lower()}:{digest}:{nth}"

    @property
    def redis(self) -> Redis:
        return self.admin.client.redis

    async def _acquire(self) -> bool:
        return await bulk_slots.acquire(
            self.redis, self.admin.shop, self.kind, self.limit, self.holder
        )

    async def _release(self) -> None:
        await bulk_slots.release(self.redis, self.admin.shop, self.kind, self.holder)
        try:  # a job suspended until a slot frees runs now
            await wakes.wake_slot(
                self.admin.client.database, self.redis, self.admin.shop, self.kind, 1
            )
        except Exception as exc:  # it looks again at its next poll all the same
            logger.warning("%s: bulk slot waiters not woken (%r)", self.admin.shop, exc)

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
        if self.step_key is not None:
            return await self._run_suspending(start)
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

    async def _run_suspending(self, start: Callable[[], Awaitable[dict[str, Any]]]) -> BulkRows:
        """`run` for a worker's job: every wait suspends the job (Suspend) instead."""
        assert self.link is not None
        database = self.admin.client.database
        operation = await self._recorded()
        try:
            if operation is None:
                operation = await self._start_suspending(start)
            operation_id = str(operation["id"])
            if operation["status"] in RUNNING:
                await self._suspend_while_running(operation)
        except Suspend:
            raise  # a running operation keeps its slot while the job waits
        except BaseException:
            await self._release()
            raise
        await self._release()
        self.link.handed_over.add(operation_id)
        await store.keep_bulk_operation(database, self.link.job_id, operation_id)
        return self._outcome(operation)

    async def _recorded(self) -> dict[str, Any] | None:
        """The operation this call started in an earlier run of the job, as Shopify has it now;
        None if it started none, or one that failed in a way a retry starts anew."""
        assert self.link is not None and self.step_key is not None
        found, kept = await store.step_of(
            self.admin.client.database, self.link.job_id, self.step_key
        )
        if not found:
            # A run of the previous release kept its operation in jobs.bulk_operation_id only.
            return await self._resumable()
        operation = await self._node(str(kept))
        if operation is None:
            raise BulkOperationFailed(f"Bulk operation {kept} is gone")
        if operation["status"] == "FAILED" and operation.get("errorCode") in RETRYABLE_ERROR_CODES:
            return None  # the job's retry starts it again
        return operation  # running, completed, or ended: its outcome says how

    async def _start_suspending(
        self, start: Callable[[], Awaitable[dict[str, Any]]]
    ) -> dict[str, Any]:
        assert self.link is not None and self.link.owner is not None
        assert self.step_key is not None
        if not await self._acquire():
            await self._progress(0, "waiting for the shop's bulk operation slot")
            raise self._suspend(WaitFor.BULK_SLOT, self.kind, SLOT_POLL_SECONDS)
        payload = await start()
        operation: dict[str, Any] | None = payload.get("bulkOperation")
        if not operation:
            errors = payload.get("userErrors") or []
            if not {e.get("code") for e in errors} & set(BUSY_CODES):
                text = "; ".join(str(e.get("message")) for e in errors) or "no operation"
                raise BulkOperationFailed(f"Shopify refused the bulk operation: {text}")
            # Busy with an operation we do not know of (another process, another app version)
            await self._progress(0, "waiting for the shop's running bulk operation")
            await bulk_slots.release(self.redis, self.admin.shop, self.kind, self.holder)
            raise self._suspend(WaitFor.BULK_SLOT, self.kind, SLOT_POLL_SECONDS)
        database = self.admin.client.database
        operation_id = str(operation["id"])
        recorded = await store.record_step(
            database,
            self.link.job_id,
            self.link.owner,
            self.step_key,
            to_json(operation_id),
            replace=True,
        )
        if not recorded:
            await self._cancel(operation_id)
            raise BulkOperationFailed(
                f"Bulk operation {operation_id} was started by a run that lost its job: cancelled"
            )
        await store.keep_bulk_operation(database, self.link.job_id, operation_id)
        return operation

    async def _suspend_while_running(self, operation: dict[str, Any]) -> None:
        """Suspend the job until the operation ends (or fail it past the wait limit)."""
        assert self.link is not None
        operation_id = str(operation["id"])
        if await store.job_is_final(self.admin.client.database, self.link.job_id):
            await self._cancel(operation_id)
            raise BulkOperationCanceled(
                f"The job was cancelled: bulk operation {operation_id} cancelled with it"
            )
        waited = time.time() - await bulk_slots.waiting_since(self.redis, operation_id)
        if waited > self.wait_limit:
            await self._cancel(operation_id)
            raise BulkOperationFailed(
                f"Bulk operation {operation_id} still running after {waited:.0f}s, over the "
                f"wait limit ({self.wait_limit:g}s, JOB_WAIT_TIMEOUT_SECONDS): cancelled"
            )
        count = int(operation.get("objectCount") or 0)
        percent = min(49, count * 50 // self.expected) if self.expected else 0
        await self._progress(percent, f"bulk operation running: {count} objects")
        if not await bulk_slots.is_subscribed(self.redis, self.admin.shop):
            await bulk_slots.schedule_poll(
                self.redis, self.admin.shop, operation_id, poll_delay(waited)
            )
        # The slot stays this job's while it waits: Shopify counts the operation either way.
        await bulk_slots.acquire(
            self.redis,
            self.admin.shop,
            self.kind,
            self.limit,
            self.holder,
            lease_seconds=max(bulk_slots.SLOT_LEASE_SECONDS, 2 * LOOK_AGAIN_SECONDS + 30),
        )
        raise self._suspend(WaitFor.BULK_OPERATION, operation_id, LOOK_AGAIN_SECONDS)

    def _suspend(self, wait_for: WaitFor, name: str, seconds: float) -> Suspend:
        """The job waits until Shopify says (no known end), looking again in `seconds`."""
        look_again = datetime.now(UTC) + timedelta(seconds=seconds)
        return Suspend(wait_for, name=name, until=None, look_again=look_again)

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
