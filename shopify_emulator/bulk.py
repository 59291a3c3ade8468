"""Shopify's bulk operations, emulated: queries and mutations run in the background.

`bulkOperationRunQuery` starts an operation (CREATED, then RUNNING for the configured run
time, then COMPLETED; FAILED with an errorCode when a fault says so; CANCELING then CANCELED
on `bulkOperationCancel`; EXPIRED once its result URL has expired). Its result is JSONL served
by the emulator at `url`: one line per object, objects of a nested connection on lines of
their own after their parent's, linked by `__parentId`, as Shopify writes them. The lines are
generated from the catalogue while they are downloaded, never held in memory, so a catalogue
of 90,000 variants costs nothing until it is read.

`bulkOperationRunMutation` runs a mutation once per line of a JSONL file uploaded through
`stagedUploadsCreate` (the emulator serves the upload URL too); its result has one line per
input line: `{"data": ..., "__lineNumber": n}`.

Concurrency is Shopify's, by the API version in the request's path: before 2026-01 one bulk
query and one bulk mutation at a time per shop (OPERATION_IN_PROGRESS); from 2026-01 five of
each (LIMIT_REACHED). When the app subscribed to `bulk_operations/finish`, the emulator
delivers it when an operation ends.

Here: the operations and their life, and the Admin API's bulk fields (`resolvers`). The JSONL
is written by bulk_jsonl.py; the result and upload URLs and the test controls are served by
bulk_routes.py.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from graphql import GraphQLError, OperationType, get_operation_ast, parse, validate

from shopify_emulator import webhooks
from shopify_emulator.admin_schema import SCHEMA, parse_gid
from shopify_emulator.bulk_jsonl import bulk_query_problem, count, mutation_line, query_lines

if TYPE_CHECKING:
    from shopify_emulator.state import EmulatorState

logger = logging.getLogger("shopify_emulator")

FINISH_TOPIC = "bulk_operations/finish"
# From this API version an app may run five bulk operations of each type per shop, not one.
CONCURRENT_FROM_VERSION = "2026-01"
CONCURRENT_LIMIT = 5
CANCEL_SECONDS = 0.05  # CANCELING lasts this long before CANCELED
FINAL = ("COMPLETED", "FAILED", "CANCELED", "EXPIRED")
LINES_PER_CHUNK = 500


@dataclass
class BulkFault:
    """The next bulk operation of a shop ends FAILED with `error_code` (with partial data
    when `partial`), instead of COMPLETED."""

    error_code: str
    partial: bool = False
    shop: str | None = None


@dataclass
class BulkOperation:
    id: int
    shop: str
    type: str  # QUERY or MUTATION
    query: str
    api_version: str
    base_url: str
    created_at: datetime
    token: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    status: str = "CREATED"
    error_code: str | None = None
    completed_at: datetime | None = None
    started_at: float | None = None  # monotonic, when RUNNING began
    run_seconds: float = 1.0
    total: int | None = None  # result lines, counted when the run starts
    roots: int = 0
    expires_at: float = 0.0  # wall clock: the URL answers 403 from then on
    fault: BulkFault | None = None
    results: list[bytes] | None = None  # a mutation's result lines
    rows: list[Any] = field(default_factory=list)  # a mutation's input variables
    grouped: bool = True  # groupObjects: children directly under their parent

    @property
    def gid(self) -> str:
        return f"gid://shopify/BulkOperation/{self.id}"

    def object_count(self, now: float) -> int:
        if self.total is None or self.started_at is None:
            return 0
        if self.status == "COMPLETED":
            return self.total
        if self.status == "FAILED":
            return self.total // 2
        fraction = min(1.0, (now - self.started_at) / max(self.run_seconds, 1e-6))
        return int(self.total * fraction)


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")


# -- the operations ---------------------------------------------------------------------------


class BulkOperations:
    """Every bulk operation of every shop, and the staged uploads, in memory."""

    def __init__(self, state: EmulatorState) -> None:
        self.state = state
        self.operations: dict[int, BulkOperation] = {}
        self.uploads: dict[str, bytes] = {}
        self.faults: list[BulkFault] = []
        self.ids = itertools.count(1)
        self.tasks: set[asyncio.Task[None]] = set()

    def take_fault(self, shop: str) -> BulkFault | None:
        for fault in self.faults:
            if fault.shop is None or fault.shop == shop:
                self.faults.remove(fault)
                return fault
        return None

    def of_shop(self, shop: str, kind: str) -> list[BulkOperation]:
        return [o for o in self.operations.values() if o.shop == shop and o.type == kind]

    def refresh(self, op: BulkOperation) -> BulkOperation:
        if op.status == "COMPLETED" and op.expires_at <= time.time():
            op.status = "EXPIRED"
        return op

    def render(self, op: BulkOperation) -> dict[str, Any]:
        self.refresh(op)
        now = time.monotonic()
        done = op.status in ("COMPLETED", "EXPIRED")
        url = f"{op.base_url}/bulk-results/{op.token}.jsonl"
        partial = op.status == "FAILED" and op.fault is not None and op.fault.partial
        return {
            "__typename": "BulkOperation",
            "id": op.gid,
            "type": op.type,
            "status": op.status,
            "errorCode": op.error_code,
            "createdAt": _iso(op.created_at),
            "completedAt": _iso(op.completed_at),
            "objectCount": str(op.object_count(now)),
            "rootObjectCount": str(op.roots if done else 0),
            "fileSize": None,
            "url": url if done and op.total else None,
            "partialDataUrl": f"{op.base_url}/bulk-results/{op.token}-partial.jsonl"
            if partial
            else None,
            "query": op.query,
        }

    def start(
        self, shop: str, kind: str, query: str, version: str, base_url: str
    ) -> tuple[BulkOperation | None, list[dict[str, Any]]]:
        """A new operation, or Shopify's userErrors when the shop is at its limit."""
        running = [o for o in self.of_shop(shop, kind) if o.status not in FINAL]
        if version >= CONCURRENT_FROM_VERSION:
            if len(running) >= CONCURRENT_LIMIT:
                error = {
                    "code": "LIMIT_REACHED",
                    "field": None,
                    "message": "Bulk operations limit reached. Please try again later.",
                }
                return None, [error]
        elif running:
            what = "query" if kind == "QUERY" else "mutation"
            error = {
                "code": "OPERATION_IN_PROGRESS",
                "field": None,
                "message": f"A bulk {what} operation for this app and shop is already in "
                f"progress: {running[0].gid}.",
            }
            return None, [error]
        op = BulkOperation(
            id=next(self.ids),
            shop=shop,
            type=kind,
            query=query,
            api_version=version,
            base_url=base_url,
            created_at=datetime.now(UTC),
            run_seconds=self.state.config.bulk_run_seconds,
            fault=self.take_fault(shop),
        )
        self.operations[op.id] = op
        task = asyncio.get_running_loop().create_task(self._run(op))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return op, []

    def cancel(self, op: BulkOperation) -> str | None:
        if op.status in FINAL or op.status == "CANCELING":
            return f"A bulk operation cannot be canceled when it is {op.status.lower()}"
        op.status = "CANCELING"
        return None

    async def _run(self, op: BulkOperation) -> None:
        from shopify_emulator.admin_schema import root_value

        await asyncio.sleep(0)
        if op.status == "CANCELING":
            await self._finish(op, "CANCELED")
            return
        op.status = "RUNNING"
        op.started_at = time.monotonic()
        root = root_value(op.shop, self.state.catalogue)
        if op.type == "QUERY":
            op.total, op.roots = await asyncio.to_thread(count, op.query, root)
        else:
            op.total = op.roots = len(op.rows)
        deadline = op.started_at + op.run_seconds
        while time.monotonic() < deadline:
            if op.status == "CANCELING":
                await asyncio.sleep(CANCEL_SECONDS)
                await self._finish(op, "CANCELED")
                return
            await asyncio.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
        if op.fault is not None:
            op.error_code = op.fault.error_code
            await self._finish(op, "FAILED")
            return
        if op.type == "MUTATION":
            op.results = [mutation_line(op.query, row, n, root) for n, row in enumerate(op.rows)]
        await self._finish(op, "COMPLETED")

    async def _finish(self, op: BulkOperation, status: str) -> None:
        op.status = status
        op.completed_at = datetime.now(UTC)
        op.expires_at = time.time() + self.state.config.bulk_result_lifetime_seconds
        logger.info("bulk operation %s of %s: %s", op.id, op.shop, status)
        if FINISH_TOPIC not in self.state.config.webhook_topics:
            return
        payload = {
            "admin_graphql_api_id": op.gid,
            "completed_at": _iso(op.completed_at),
            "created_at": _iso(op.created_at),
            "error_code": op.error_code.lower() if op.error_code else None,
            "status": status.lower(),
            "type": op.type.lower(),
        }
        delivery = webhooks.new_delivery(self.state.config, FINISH_TOPIC, op.shop, payload)
        self.state.deliveries.append(delivery)
        await webhooks.deliver(self.state.http, self.state.config, delivery)

    def lines(self, op: BulkOperation, partial: bool) -> Iterator[bytes]:
        """The result file, in chunks, generated as it is sent."""
        from shopify_emulator.admin_schema import root_value

        if op.type == "MUTATION":
            source: Iterator[bytes] = iter(op.results or [])
        else:
            rows = query_lines(op.query, root_value(op.shop, self.state.catalogue), op.grouped)
            source = (json.dumps(row, separators=(",", ":")).encode() + b"\n" for row in rows)
        if partial:
            source = itertools.islice(source, op.object_count(time.monotonic()))
        while chunk := b"".join(itertools.islice(source, LINES_PER_CHUNK)):
            yield chunk


# -- resolvers ---------------------------------------------------------------------------------


def resolvers(
    state: EmulatorState, shop: str, version: str, base_url: str
) -> dict[str, Callable[..., Any]]:
    """The bulk fields of the Admin API root, for one request."""
    bulk = state.bulk

    def find(gid: str) -> BulkOperation | None:
        op = bulk.operations.get(parse_gid(gid, "BulkOperation"))
        return op if op is not None and op.shop == shop else None

    def current_bulk_operation(info: Any, type: str = "QUERY") -> dict[str, Any] | None:
        ops = bulk.of_shop(shop, type)
        return bulk.render(ops[-1]) if ops else None

    def run_query(info: Any, query: str, groupObjects: bool | None = None) -> dict[str, Any]:
        problem = bulk_query_problem(query)
        if problem:
            error = {"code": "INVALID", "field": ["query"], "message": problem}
            return {"bulkOperation": None, "userErrors": [error]}
        op, errors = bulk.start(shop, "QUERY", query, version, base_url)
        if op is not None:  # Shopify groups by default before 2026-01, not from it
            op.grouped = version < CONCURRENT_FROM_VERSION if groupObjects is None else groupObjects
        return {"bulkOperation": op and bulk.render(op), "userErrors": errors}

    def run_mutation(info: Any, mutation: str, stagedUploadPath: str, **_: Any) -> dict[str, Any]:
        content = bulk.uploads.get(stagedUploadPath)
        problem = None
        if content is None:
            problem = ("stagedUploadPath", "The staged upload path is invalid or expired.")
        else:
            try:
                document = parse(mutation)
                operation = get_operation_ast(document)
                if operation is None or operation.operation is not OperationType.MUTATION:
                    raise GraphQLError("it must be a mutation")
                if validate(SCHEMA, document):
                    raise GraphQLError(validate(SCHEMA, document)[0].message)
            except GraphQLError as exc:
                problem = ("mutation", f"Invalid bulk mutation: {exc.message}")
        if problem is not None:
            error = {"code": "INVALID", "field": [problem[0]], "message": problem[1]}
            return {"bulkOperation": None, "userErrors": [error]}
        assert content is not None
        rows = [json.loads(line) for line in content.splitlines() if line.strip()]
        op, errors = bulk.start(shop, "MUTATION", mutation, version, base_url)
        if op is not None:
            op.rows = rows
        return {"bulkOperation": op and bulk.render(op), "userErrors": errors}

    def cancel(info: Any, id: str) -> dict[str, Any]:
        op = find(id)
        if op is None:
            return {
                "bulkOperation": None,
                "userErrors": [{"field": ["id"], "message": "Not found"}],
            }
        problem = bulk.cancel(op)
        errors = [{"field": ["id"], "message": problem}] if problem else []
        return {"bulkOperation": bulk.render(op), "userErrors": errors}

    def staged_uploads_create(info: Any, input: list[dict[str, Any]]) -> dict[str, Any]:
        targets = []
        for item in input:
            key = f"tmp/{abs(hash(shop)) % 10**9}/bulk/{secrets.token_hex(8)}/{item['filename']}"
            parameters = [
                {"name": "key", "value": key},
                {"name": "Content-Type", "value": item["mimeType"]},
                {"name": "success_action_status", "value": "201"},
            ]
            targets.append(
                {
                    "url": f"{base_url}/staged-uploads",
                    "resourceUrl": f"{base_url}/staged-uploads/{key}",
                    "parameters": parameters,
                }
            )
        return {"stagedTargets": targets, "userErrors": []}

    def node(info: Any, id: str) -> dict[str, Any] | None:
        if id.startswith("gid://shopify/BulkOperation/"):
            op = find(id)
            return None if op is None else bulk.render(op)
        return None

    return {
        "currentBulkOperation": current_bulk_operation,
        "node": node,
        "bulkOperationRunQuery": run_query,
        "bulkOperationRunMutation": run_mutation,
        "bulkOperationCancel": cancel,
        "stagedUploadsCreate": staged_uploads_create,
    }
