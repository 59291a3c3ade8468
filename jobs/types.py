"""What a job type is: a name, a pydantic input model, an async handler, and its own limits.

A type is declared once and used by both processes: the web validates input against
`input_model` before a row is written; the worker runs `handler` with the validated input.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel

if TYPE_CHECKING:
    import asyncpg
    from databases import Database

# A write to the app's own tables, run on the connection whose transaction completes the job.
CompletionWrite = Callable[["asyncpg.Connection"], Awaitable[None]]


class NonRetryableError(Exception):
    """Raise from a handler to fail the job at once: retrying cannot help (bad input, gone)."""


class BulkRows(Protocol):
    """A completed bulk query's JSONL rows, streamed once (service/shopify/bulk.py).

    `async for row in rows`: each row a dict; rows of a nested connection carry `__parentId`.
    `async for parent, children in rows.grouped()`: each top-level row with its descendants.
    """

    operation_id: str
    object_count: int
    rows_read: int

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]: ...

    def grouped(self) -> AsyncIterator[tuple[dict[str, Any], list[dict[str, Any]]]]: ...


class MutationResultRow(Protocol):
    line: int  # the input line (0-based)
    data: dict[str, Any] | None
    errors: list[str]  # GraphQL errors and userErrors; empty when the line succeeded


class BulkMutationResults(Protocol):
    """A completed bulk mutation's results, one per input line; counts filled as they stream."""

    operation_id: str
    succeeded: int
    failed: int

    def __aiter__(self) -> AsyncIterator[MutationResultRow]: ...


class AdminAPI(Protocol):
    """One shop's Admin GraphQL API (built by the worker from service/shopify/admin.py)."""

    async def graphql(
        self, query: str, variables: dict[str, Any] | None = None, *, cost: float | None = None
    ) -> dict[str, Any]: ...

    # A Shopify bulk operation: waits for the shop's slot and the operation (progress reported
    # on the job), resumes the job's operation after a crash; see docs/bulk-operations.md.
    async def bulk_query(self, query: str, *, expected_objects: int | None = None) -> BulkRows: ...

    async def bulk_mutation(
        self, mutation: str, rows: Iterable[dict[str, Any]] | AsyncIterable[dict[str, Any]]
    ) -> BulkMutationResults: ...


class JobContext(Protocol):
    """What a handler gets besides its input."""

    job_id: str
    job_type: str
    shop: str  # the shop's domain, e.g. demo-shop.myshopify.com
    attempt: int  # failed attempts so far + 1: what the retry policy counts
    run: int  # every start of the job, crash re-runs included (jobs.attempts)
    # The shop's Admin GraphQL API: `await ctx.admin.graphql(query, variables)`. Built by the
    # worker with `AdminClient.admin_for(shop)`; it loads the token only on first use.
    admin: AdminAPI
    # Postgres, for jobs that act on the app's own data (the compliance webhooks).
    database: Database

    async def report_progress(self, percent: int, message: str | None = None) -> None: ...

    # Commit a write to the app's database in the same transaction as this job's completion:
    # exactly once per completed job (see jobs/worker/context.py).
    def on_completion(self, write: CompletionWrite) -> None: ...


Handler = Callable[[JobContext, Any], Awaitable[Any]]


@dataclass(frozen=True)
class JobType:
    name: str
    input_model: type[BaseModel]
    handler: Handler
    timeout_seconds: float | None = None  # None: JOB_TIMEOUT_SECONDS
    max_attempts: int | None = None  # None: JOB_MAX_ATTEMPTS
    backoff_seconds: float | None = None  # None: JOB_BACKOFF_SECONDS
    non_retryable: tuple[type[BaseException], ...] = field(default=())
    # May theme JavaScript create it through the app proxy? False for types only the app
    # itself starts (the compliance webhooks must never be triggered by a storefront visitor).
    proxy: bool = True
    # May the merchant start it from the embedded admin (POST /api/jobs, a form on /app)?
    admin: bool = False


@dataclass(frozen=True)
class WebhookJob:
    """A webhook topic that starts a job: the type, and how a payload becomes its input."""

    job_type: JobType
    make_input: Callable[[dict[str, Any]], dict[str, Any]]
