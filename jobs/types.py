"""What a job type is: a name, a pydantic input model, an async handler, and its own limits;
and what the app's code reads back about a job (its status, JobView).

A type is declared once and used by both processes: the web validates input against
`input_model` before a row is written; the worker runs `handler` with the validated input.
The bottom layer: this module imports nothing of the project, so anything may import it.
"""

from __future__ import annotations

import functools
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol
from uuid import UUID

from pydantic import AliasChoices, AliasPath, BaseModel

if TYPE_CHECKING:
    import asyncpg
    from databases import Database


class JobStatus(StrEnum):
    """A job's status in Postgres: pending -> processing -> (retrying -> processing)* -> final.

    Defined here, with the job author's contract, so that `jobs` can export it; the service's
    other vocabularies (service/core/states.py) re-export it. `StrEnum` members are `str`s:
    they go into SQL parameters, JSON answers and metric labels as they are.
    """

    PENDING = "pending"
    PROCESSING = "processing"
    RETRYING = "retrying"
    COMPLETED = "completed"
    FAILED = "failed"


# A write to the app's own tables, run on the connection whose transaction completes the job.
CompletionWrite = Callable[["asyncpg.Connection"], Awaitable[None]]


class NonRetryableError(Exception):
    """Raise from a handler to fail the job at once: retrying cannot help (bad input, gone).

    Its message is shown to the storefront and the merchant (any other exception's is not:
    they see "The job failed"), so write it for them, without secrets.
    """


class BulkRows(Protocol):
    """A completed bulk query's JSONL rows, streamed once (service/shopify/bulk_rows.py).

    `async for row in rows`: each row a dict; rows of a nested connection carry `__parentId`.
    `async for parent, children in rows.grouped()`: each top-level row with its descendants.
    """

    rows_read: int

    @property
    def operation_id(self) -> str: ...

    @property
    def object_count(self) -> int: ...

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]: ...

    def grouped(self) -> AsyncIterator[tuple[dict[str, Any], list[dict[str, Any]]]]: ...


class MutationResultRow(Protocol):
    @property
    def line(self) -> int: ...  # the input line (0-based)

    @property
    def data(self) -> dict[str, Any] | None: ...

    @property
    def errors(self) -> list[str]: ...  # GraphQL errors and userErrors; empty when it succeeded


class BulkMutationResults(Protocol):
    """A completed bulk mutation's results, one per input line; counts filled as they stream."""

    succeeded: int
    failed: int

    @property
    def operation_id(self) -> str: ...

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


@dataclass(frozen=True)
class Debounce:
    """Collapse a burst into one job (docs/starting-jobs.md#debounce): enqueues with the same
    `key` (per shop and job type) that come within `seconds` of each other become one job,
    run once with the LAST input, `seconds` after the last of them but never later than
    `max_seconds` after the first. A job already running is not cut short: the next enqueue
    starts a new window (a new job).

    `key`: on `JobsClient.enqueue` / `ctx.enqueue`, a string; on a `WebhookJob`, a function of
    the webhook's payload returning one (e.g. `lambda p: str(p["id"])`: one job per product).
    """

    key: str | Callable[[dict[str, Any]], str]
    seconds: float
    max_seconds: float | None = None  # None: 10 x seconds

    def __post_init__(self) -> None:
        if not 0 < self.seconds <= 86_400:
            raise ValueError("Debounce.seconds must be more than 0 and at most 86400")
        if self.max_seconds is not None and not self.seconds <= self.max_seconds <= 30 * 86_400:
            raise ValueError("Debounce.max_seconds must be at least seconds, at most 30 days")

    @property
    def max_wait(self) -> float:
        return self.max_seconds if self.max_seconds is not None else self.seconds * 10


@dataclass(frozen=True)
class RateLimit:
    """At most `max` starts of a job type in any `per_seconds`, across every worker; with
    `per_shop`, for each shop on its own (docs/worker.md#rate-limits). A job over it stays
    waiting, without using an attempt, and says until when in its `progress_message`
    ("Rate limited until <ISO time>")."""

    max: int
    per_seconds: float
    per_shop: bool = False

    def __post_init__(self) -> None:
        if self.max < 1 or not self.per_seconds > 0:
            raise ValueError("RateLimit needs max >= 1 and per_seconds > 0")


@dataclass(frozen=True)
class EnqueuedJob:
    """A job an enqueue stands for: its id, status and due time (None: due at once).
    `created` is False when its idempotency key already named a job, when a pending job held
    its `unique_key`, or when its debounce key joined it to a pending job (that one is
    returned; a debounce pushed its `run_at`)."""

    id: UUID
    status: JobStatus
    run_at: datetime | None
    created: bool = True


@dataclass(frozen=True)
class JobView:
    """A job as the app's own code reads it: `await client.get(job_id)` (service/jobs_client.py).

    `error` is the failure's own text, as the dashboard shows it; it may name internals (a
    driver's error, a host) unless `error_public` (a NonRetryableError's message, the worker's
    own), so show it to a merchant or a shopper only then. `children`: a batch parent's
    children counted by status, with "total"; None for any other job.
    """

    id: UUID
    type: str
    shop: str  # the shop's domain
    status: JobStatus
    progress: int
    progress_message: str | None
    input: dict[str, Any]
    result: Any
    error: str | None
    error_public: bool
    attempts: int  # every start, crash re-runs included
    retry_count: int  # failed attempts retried
    source: str  # who asked for it: proxy, webhook, admin (the merchant API), app, job, ...
    idempotency_key: str | None
    run_at: datetime | None  # a delayed job's due time
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    parent_id: UUID | None = None
    children: dict[str, int] | None = None
    # A suspended job's wait: {"for": "sleep" | "bulk_operation" | "bulk_slot" | "event",
    # "until": ISO time or None}; None unless the job is processing and waits.
    waiting: dict[str, str | None] | None = None
    # Its shop's work is paused (JobsClient.pause_shop): a pending job stays pending until the
    # shop is resumed. Beside `status`, which keeps its five values.
    paused: bool = False


class JobContext(Protocol):
    """What a handler gets besides its input."""

    job_id: str
    job_type: str
    shop: str  # the shop's domain, e.g. demo-shop.myshopify.com
    attempt: int  # failed attempts so far + 1: what the retry policy counts
    run: int  # every start of the job, crash re-runs included (jobs.attempts)

    # The shop's Admin GraphQL API: `await ctx.admin.graphql(query, variables)`. Built by the
    # worker with `AdminClient.admin_for(shop)`; it loads the token only on first use.
    @property
    def admin(self) -> AdminAPI: ...

    # Postgres, for jobs that act on the app's own data (the compliance webhooks).
    database: Database

    async def report_progress(self, percent: int, message: str | None = None) -> None: ...

    # Commit a write to the app's database in the same transaction as this job's completion:
    # exactly once per completed job (see jobs/worker/context.py).
    def on_completion(self, write: CompletionWrite) -> None: ...

    # Start another job, for this job's shop unless `shop` is given (docs/starting-jobs.md).
    async def enqueue(
        self,
        job_type: str,
        input: BaseModel | dict[str, Any] | None = None,
        *,
        shop: str | None = None,
        delay: float | timedelta | None = None,
        run_at: datetime | None = None,
        idempotency_key: str | None = None,
        priority: int | None = None,
        unique_key: str | None = None,
        debounce: Debounce | None = None,
    ) -> EnqueuedJob: ...

    # Fan out children of this job, one per input, created in bulk. This job becomes final
    # only when every child is final: completed with {"completed": n, "failed": m, "result":
    # what the handler returned}, or failed if `fail_parent_on_child_failure` and one failed.
    # `on_complete` names a job type run once when the batch is done. Returns how many
    # children this call added; call it again to add more (a page at a time, say).
    async def enqueue_batch(
        self,
        job_type: str,
        inputs: Sequence[BaseModel | dict[str, Any]],
        *,
        on_complete: str | None = None,
        fail_parent_on_child_failure: bool = False,
    ) -> int: ...

    # Waiting without a slot (docs/waits.md). A wait suspends the job: its run ends, its
    # worker slot, shop count and lease are freed, and it runs again from the start of its
    # handler when the wait is over; what it recorded is read back, not done again.
    # `step`: runs `fn()` (a value or an awaitable, JSON) once per job; later runs get the
    # record. `sleep`: until `seconds` from the first run (or `until`), `limit` overriding
    # JOB_WAIT_TIMEOUT_SECONDS. `wait_for_event`: the payload of the first event `name` sent to
    # the job's shop after the job was created (JobsClient.send_event); past `timeout` the job
    # fails naming the event. `send_event`: to this job's shop unless `shop` is given; how many
    # waiting jobs it woke.
    async def step(self, name: str, fn: Callable[[], Any]) -> Any: ...

    async def sleep(
        self,
        name: str,
        seconds: float | timedelta | None = None,
        *,
        until: datetime | None = None,
        limit: float | None = None,
    ) -> None: ...

    async def wait_for_event(self, name: str, timeout: float | timedelta | None = None) -> Any: ...

    async def send_event(
        self, name: str, payload: Any = None, *, shop: str | None = None
    ) -> int: ...


Handler = Callable[[JobContext, Any], Awaitable[Any]]


@dataclass(frozen=True)
class Schedule:
    """Run a job type on a cron schedule (docs/starting-jobs.md).

    `cron`: five fields (minute hour day month weekday), or six with seconds first, in UTC.
    `per_shop`: one run per installed shop, spread over the interval to the next tick by a
    hash of the shop (a thousand shops do not start in the same second); False: one run per
    tick for the app, recorded under its first installed shop (every job belongs to a shop).
    `input`: the input of every run. Each tick runs once however many workers run; a tick
    missed while no worker ran runs once when one is back (only the latest); a schedule starts
    with the first tick after a worker first sees it.
    """

    cron: str
    per_shop: bool = True
    input: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FlowAction:
    """Shopify Flow may start the type: a Flow action (docs/shopify-flow.md).

    Flow POSTs the merchant's workflow step to `/flow/actions/{handle}`; its `properties` are
    the job's input, one extension field per input field (extensions/{handle}/, generated by
    `python -m tools.shopify_extensions`). `handle`: Shopify's rules, at most 30
    characters, letters, digits and hyphens; `name` and `description` are what the merchant
    reads in the Flow editor (the job type's name when empty).
    """

    handle: str
    name: str = ""
    description: str = ""
    # The input fields Flow offers the merchant (None: every field of the input model); a
    # request's `properties` may set only these.
    fields: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        _check_handle(self.handle)


@dataclass(frozen=True)
class FlowTrigger:
    """Tell Shopify Flow when a job of the type ends: `flowTriggerReceive(handle, payload)`
    for the job's shop, sent by a job of its own (retried, sent once per job).

    The payload carries "Job ID", "Job type" and "Status", and each of `fields` (the payload's
    key -> Flow's field type, e.g. {"message": "single_line_text_field"}) read from the job's
    result (a dict) by its key. `on_failure`: a job that failed for good triggers it too.
    """

    handle: str
    name: str = ""
    description: str = ""
    fields: dict[str, str] = field(default_factory=dict)
    on_failure: bool = False

    def __post_init__(self) -> None:
        _check_handle(self.handle)


@dataclass(frozen=True)
class BulkAction:
    """The merchant may run the type on a selection of the admin's product or order list:
    one batch, a child per selected id, whose input is `{field: "gid://shopify/Product/1"}`
    (docs/shopify-flow.md#admin-bulk-actions). `resources`: "product", "order" or both."""

    field: str
    resources: tuple[str, ...] = ("product",)

    def __post_init__(self) -> None:
        unknown = set(self.resources) - set(BULK_RESOURCES)
        if not self.resources or unknown:
            raise ValueError(f"BulkAction resources must be some of {sorted(BULK_RESOURCES)}")


# The admin lists a bulk action is offered on, and the GID of their ids.
BULK_RESOURCES = {"product": "Product", "order": "Order"}


def _check_handle(handle: str) -> None:
    """Shopify's rule for an extension handle: 1 to 30 letters, digits and hyphens."""
    if not (
        0 < len(handle) <= 30 and all(c.isascii() and (c.isalnum() or c == "-") for c in handle)
    ):
        raise ValueError(f"Flow handle {handle!r}: 1 to 30 letters, digits and hyphens")


@dataclass(frozen=True)
class JobType:
    """A job type: its name, input, handler, retry limits, and who may start it
    (docs/starting-jobs.md).

    The app itself may enqueue any type; the storefront (`proxy`) and the merchant's embedded
    app (`admin`) only those that opt in, because both are reachable by people the app does not
    control, and every job spends the shop's Admin API budget and the shared workers' time.
    """

    name: str
    input_model: type[BaseModel]
    handler: Handler
    timeout_seconds: float | None = None  # None: JOB_TIMEOUT_SECONDS
    max_attempts: int | None = None  # None: JOB_MAX_ATTEMPTS
    backoff_seconds: float | None = None  # None: JOB_BACKOFF_SECONDS
    non_retryable: tuple[type[BaseException], ...] = field(default=())
    # May theme JavaScript create it through the app proxy? Opt-in: anyone who can load the
    # shop's storefront can reach it, anonymously, and it runs with the merchant's token. A
    # type that does not say `proxy=True` is "Unknown job type" to the storefront
    # (docs/app-proxy.md; the upgrade note in docs/starting-jobs.md).
    proxy: bool = False
    # What one storefront request may cost. `proxy_input_model`: the stricter model a
    # storefront request's input must fit (narrower bounds, e.g. a smaller page size; None:
    # `input_model`); subclass `input_model` so that what it accepts the worker accepts too.
    # `proxy_limit_per_minute`: how many jobs of this type one shop's storefront may start per
    # minute, all visitors together (None: only the PROXY_LIMIT_* quotas); over it, 429.
    proxy_input_model: type[BaseModel] | None = None
    proxy_limit_per_minute: int | None = None
    # May the merchant start it from the embedded app (POST /api/jobs, a form on /app)?
    admin: bool = False
    # Run it on a cron schedule too (None: only when something enqueues it).
    schedule: Schedule | None = None
    # Brings an input an earlier release stored up to `input_model` (docs/upgrading.md#job-
    # inputs-across-releases): takes the stored dict, returns one the current model accepts.
    # Needed only for a rename or a reshape; a removed field needs nothing (below). It runs
    # on every stored input, old or new, at every run, so it must leave a current one alone.
    upgrade_input: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    # Flow control (docs/starting-jobs.md). `priority`: 0 to 9, higher first within a shop
    # (across shops the round-robin is unchanged); None: 5 when the merchant starts it, else 0;
    # `priority=` on an enqueue overrides it. `concurrency`: at most this many of the type run
    # at once across every worker (0: no cap). `concurrency_key`: a function of the validated
    # input naming what the job works on (a product's id, say): at most `key_concurrency` jobs
    # of the type with the same key run at once per shop. Held at the take; a job waiting
    # (suspended) holds none of these.
    priority: int | None = None
    concurrency: int = 0
    concurrency_key: Callable[[Any], str] | None = None
    key_concurrency: int = 1
    # At most so many starts per window, across every worker (per shop with per_shop=True),
    # beside the global RATE_LIMIT_MAX (None: only that).
    rate_limit: RateLimit | None = None
    # Shopify's entry points (docs/shopify-flow.md): a Flow action that starts it, a Flow
    # trigger sent when it ends, and the admin's product or order list bulk action.
    flow_action: FlowAction | None = None
    flow_trigger: FlowTrigger | None = None
    bulk_action: BulkAction | None = None

    def __post_init__(self) -> None:
        """Refuse, at import, a bound that would silently not bound anything."""
        if self.priority is not None and not 0 <= self.priority <= 9:
            raise ValueError(f"{self.name}: priority must be from 0 to 9, or None")
        if self.concurrency < 0 or self.key_concurrency < 1:
            raise ValueError(
                f"{self.name}: concurrency must be 0 or more, key_concurrency 1 or more"
            )
        if self.proxy_limit_per_minute is not None and self.proxy_limit_per_minute < 1:
            raise ValueError(f"{self.name}: proxy_limit_per_minute must be 1 or more, or None")
        model = self.proxy_input_model
        if model is not None and not issubclass(model, self.input_model):
            # The web stores what the storefront model accepts and the worker reads it back
            # with `input_model`: only a narrowing subclass is sure to round-trip.
            raise ValueError(f"{self.name}: proxy_input_model must subclass input_model")

    def parse_stored_input(self, stored: Any) -> BaseModel:
        """A stored input (a job row's `input`) as `input_model`, for the worker to run.

        A row may have been written by an earlier release, and a queued, delayed, retrying or
        waiting job must still run after a deploy. So, unlike a new request (which the web
        validates strictly: an unknown field is the caller's mistake), a stored input is
        first passed through `upgrade_input`, and then its top-level keys that the model does
        not declare are dropped: a field since removed, or a default an earlier release
        stored along with the caller's values. What is left must still fit the model: a
        value out of bounds or a required field missing is still refused (pydantic's
        ValidationError). Defaults the caller did not give are filled here, by the model.
        """
        data = stored
        if self.upgrade_input is not None and isinstance(data, dict):
            data = self.upgrade_input(dict(data))
        model = self.input_model
        if isinstance(data, dict) and model.model_config.get("extra") != "allow":
            known = _declared_keys(model)
            data = {key: value for key, value in data.items() if key in known}
        return model.model_validate(data)


@functools.cache
def _declared_keys(model: type[BaseModel]) -> frozenset[str]:
    """Every top-level key `model` reads: its field names and their string aliases (once per
    model: every run of its type reads them)."""
    keys: set[str] = set()
    for name, info in model.model_fields.items():
        keys.add(name)
        for alias in (info.alias, info.validation_alias):
            choices = alias.choices if isinstance(alias, AliasChoices) else [alias]
            for choice in choices:
                if isinstance(choice, str):
                    keys.add(choice)
                elif isinstance(choice, AliasPath) and isinstance(choice.path[0], str):
                    keys.add(choice.path[0])
    return frozenset(keys)


@dataclass(frozen=True)
class WebhookJob:
    """A webhook topic that starts a job: the type, and how a payload becomes its input.

    `debounce`: a burst of events with the same key (its `key` a function of the payload)
    becomes one job with the last event's input. `unique_key`: a string, or a function of the
    payload returning one; while a job of the type with that key is pending for the shop, an
    event adds no other. Every event is recorded and answered 200 either way."""

    job_type: JobType
    make_input: Callable[[dict[str, Any]], dict[str, Any]]
    debounce: Debounce | None = None
    unique_key: str | Callable[[dict[str, Any]], str] | None = None

    def __post_init__(self) -> None:
        if self.debounce is not None and self.unique_key is not None:
            raise ValueError(f"{self.job_type.name}: give debounce or unique_key, not both")


@dataclass(frozen=True)
class App:
    """An app's own place (docs/your-app.md): what shopjobs loads from the module SHOPJOBS_APP
    names, so that an app never edits shopjobs' files.

    The module defines `shopjobs_app`: an App, or a function taking the Settings and returning
    one. `job_types`: the app's types (a type's `schedule` is its schedule). `webhooks`: topic
    to the jobs it starts, several per topic allowed; every app's jobs for a topic run.
    `routes`: Starlette routes mounted into the web (they read `web_state(request).jobs`).
    `loggers`: logger names logged like shopjobs' own, besides the module's top package.
    """

    job_types: Sequence[JobType] = ()
    webhooks: Mapping[str, Sequence[WebhookJob]] = field(default_factory=dict)
    routes: Sequence[Any] = ()  # starlette.routing.BaseRoute
    loggers: Sequence[str] = ()
