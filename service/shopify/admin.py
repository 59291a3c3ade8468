"""The worker's Admin GraphQL client: `AdminClient(...).admin_for(shop).graphql(query, vars)`.

One `AdminClient` per process owns one `httpx.AsyncClient` (connection pooling across jobs)
and the Redis-shared cost buckets; `admin_for(shop)` is cheap and does no I/O, so a worker
can hand one to every job. A call:

- waits until the shop's bucket (shared by all workers, see `throttle.py`) holds the query's
  estimated cost: the caller's `cost=`, else the last requestedQueryCost seen for that query
  text, else DEFAULT_COST_ESTIMATE;
- on THROTTLED, learns the real requested cost and Shopify's bucket level, then waits for the
  deficit divided by the restore rate before trying again;
- on 429 or 503 waits `Retry-After` seconds; on other 5xx and network errors backs off
  exponentially; after SHOPIFY_ADMIN_MAX_RETRIES such failures raises AdminUnavailable,
  an ordinary exception, so the job itself is retried later;
- on 401 refreshes an expiring token once, then (like 403) raises AdminAuthError; 404 raises
  AdminNotFound; GraphQL errors raise AdminQueryError. All three are NonRetryableError: a
  retry cannot fix them, so the job fails at once.

Tokens go in a header only, never into a log line, an exception or a repr.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterable, Iterable
from typing import Any

import httpx
from databases import Database
from redis.asyncio import Redis

from jobs.types import NonRetryableError
from service import store
from service.core import tracing
from service.core.settings import Settings
from service.shopify import bulk, endpoints, tokens
from service.shopify.throttle import UNKNOWN, CostBuckets, ThrottleStatus

logger = logging.getLogger("shopjobs.shopify")

DEFAULT_COST_ESTIMATE = 50.0
MAX_THROTTLED_RETRIES = 20
PROBE_POLL_SECONDS = 0.05
MAX_RETRY_AFTER_SECONDS = 120.0


class AdminAuthError(NonRetryableError):
    """Shopify refused the token (401/403): uninstalled, revoked, or missing a scope."""


class AdminNotFound(NonRetryableError):
    """Shopify answered 404: no such shop or API version."""


class AdminQueryError(NonRetryableError):
    """The query itself was refused (GraphQL errors, query too expensive, other 4xx)."""


class AdminUnavailable(Exception):
    """Shopify kept failing (throttling, 429, 5xx, network); the job may succeed later."""


def backoff_seconds(failures: int, base: float, cap: float) -> float:
    """Exponential backoff with full jitter: the n-th failure waits up to base * 2**(n-1)."""
    return random.uniform(0, min(cap, base * 2 ** (failures - 1)))


def retry_after(response: httpx.Response) -> float | None:
    try:
        seconds = float(response.headers.get("retry-after", ""))
    except ValueError:
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)


def error_codes(errors: Any) -> set[str]:
    if not isinstance(errors, list):
        return set()
    return {
        str(e.get("extensions", {}).get("code", ""))
        for e in errors
        if isinstance(e, dict) and isinstance(e.get("extensions"), dict)
    }


def error_text(errors: Any) -> str:
    if isinstance(errors, list):
        return "; ".join(str(e.get("message", e) if isinstance(e, dict) else e) for e in errors)
    return str(errors)


class AdminClient:
    """Per process: the HTTP client, the shared buckets, and learned query costs."""

    def __init__(
        self,
        settings: Settings,
        database: Database,
        redis: Redis,
        *,
        backoff_base_seconds: float = 0.5,
        backoff_cap_seconds: float = 10.0,
    ) -> None:
        self.settings = settings
        self.database = database
        self.redis = redis
        self.buckets = CostBuckets(redis)
        self.http = httpx.AsyncClient(
            timeout=settings.shopify_admin_timeout_seconds,
            limits=httpx.Limits(max_connections=50, max_keepalive_connections=20),
        )
        self.backoff_base_seconds = backoff_base_seconds
        self.backoff_cap_seconds = backoff_cap_seconds
        self.learned_costs: dict[str, float] = {}

    def admin_for(self, shop: str, job: bulk.JobLink | None = None) -> ShopAdmin:
        return ShopAdmin(self, shop, job)

    async def aclose(self) -> None:
        await self.http.aclose()


class ShopAdmin:
    """One shop's Admin API, as seen by one job."""

    def __init__(self, client: AdminClient, shop: str, job: bulk.JobLink | None = None) -> None:
        self.client = client
        self.shop = shop
        self.job = job  # the job it works for: bulk operations keep their id with it
        self._credentials: store.Shop | None = None

    def __repr__(self) -> str:
        return f"ShopAdmin({self.shop!r})"

    async def _token(self, *, force_refresh: bool = False) -> str:
        c = self.client
        if self._credentials is None or force_refresh or tokens.expiring(self._credentials):
            self._credentials = await tokens.offline_token(
                c.database, c.redis, c.http, c.settings, self.shop, force_refresh=force_refresh
            )
        assert self._credentials.access_token is not None
        return self._credentials.access_token

    async def _wait_for_points(self, cost: float) -> None:
        while True:
            wait = await self.client.buckets.reserve(self.shop, cost)
            if wait == UNKNOWN:
                await asyncio.sleep(PROBE_POLL_SECONDS)
                continue
            if wait > 0:
                logger.debug("%s: waiting %.2fs for %g cost points", self.shop, wait, cost)
                await asyncio.sleep(wait)
            return

    async def _pause(self, failures: int, what: str, response: httpx.Response | None) -> None:
        c = self.client
        if failures > c.settings.shopify_admin_max_retries:
            raise AdminUnavailable(f"Shopify Admin API unavailable for {self.shop}: {what}")
        delay = retry_after(response) if response is not None else None
        if delay is None:
            delay = backoff_seconds(failures, c.backoff_base_seconds, c.backoff_cap_seconds)
        logger.warning("%s: %s; retry %d in %.2fs", self.shop, what, failures, delay)
        await asyncio.sleep(delay)

    async def graphql(
        self, query: str, variables: dict[str, Any] | None = None, *, cost: float | None = None
    ) -> dict[str, Any]:
        """The `data` of a successful query; raises as the module docstring describes.

        With traces on, one `shopify.admin.graphql` span covers the call, its throttling
        waits and retries included (service/core/tracing.py)."""
        with tracing.span("shopify.admin.graphql", {"shopjobs.shop": self.shop}, kind="CLIENT"):
            return await self._graphql(query, variables, cost=cost)

    async def _graphql(
        self, query: str, variables: dict[str, Any] | None, *, cost: float | None
    ) -> dict[str, Any]:
        c = self.client
        url = endpoints.graphql_url(c.settings, self.shop)
        estimate = cost if cost is not None else c.learned_costs.get(query, DEFAULT_COST_ESTIMATE)
        failures = throttled = 0
        refreshed = False
        while True:
            token = await self._token()
            await self._wait_for_points(estimate)
            try:
                response = await c.http.post(
                    url,
                    json={"query": query, "variables": variables or {}},
                    headers={"X-Shopify-Access-Token": token},
                )
            except httpx.HTTPError as exc:
                await c.buckets.settle(self.shop, estimate, None)
                failures += 1
                await self._pause(failures, f"network error {exc.__class__.__name__}", None)
                continue
            status = response.status_code
            if status != 200:
                await c.buckets.settle(self.shop, estimate, None)
            if status == 401 and not refreshed and self._credentials is not None:
                if self._credentials.refresh_token:
                    refreshed = True
                    await self._token(force_refresh=True)
                    continue
            if status in (401, 403):
                raise AdminAuthError(f"Shopify refused the token of {self.shop} ({status})")
            if status == 404:
                raise AdminNotFound(f"Shopify answered 404 for {self.shop}")
            if status == 429 or status >= 500:
                failures += 1
                await self._pause(failures, f"HTTP {status}", response)
                continue
            if status != 200:
                raise AdminQueryError(f"Shopify refused the query ({status})")
            try:
                body = response.json()
            except ValueError:
                await c.buckets.settle(self.shop, estimate, None)
                failures += 1
                await self._pause(failures, "answer is not JSON", None)
                continue
            extensions = body.get("extensions") if isinstance(body, dict) else None
            bucket = ThrottleStatus.from_extensions(extensions)
            spent = (extensions or {}).get("cost") or {}
            requested = spent.get("requestedQueryCost")
            if isinstance(requested, int | float) and requested > 0:
                c.learned_costs[query] = float(requested)
            errors = body.get("errors")
            codes = error_codes(errors)
            if "THROTTLED" in codes:
                await c.buckets.settle(self.shop, estimate, bucket)
                throttled += 1
                if throttled > MAX_THROTTLED_RETRIES:
                    raise AdminUnavailable(f"Shopify kept throttling {self.shop}")
                if isinstance(requested, int | float):
                    estimate = float(requested)
                logger.info("%s: throttled, waiting for %g cost points", self.shop, estimate)
                continue
            actual = spent.get("actualQueryCost")
            charged = float(actual) if isinstance(actual, int | float) else 0.0
            await c.buckets.settle(self.shop, estimate - charged, bucket)
            if "INTERNAL_SERVER_ERROR" in codes:
                failures += 1
                await self._pause(failures, "internal server error", None)
                continue
            if errors:
                raise AdminQueryError(f"Admin API query failed: {error_text(errors)}")
            data = body.get("data")
            if not isinstance(data, dict):
                raise AdminQueryError("Admin API answer has no data")
            return data

    async def bulk_query(self, query: str, *, expected_objects: int | None = None) -> bulk.BulkRows:
        """Run `query` as a Shopify bulk operation and stream its rows (service/shopify/bulk.py).

        `expected_objects`, when known, turns the running operation's objectCount into a
        percentage of the job's progress.
        """
        attributes = {"shopjobs.shop": self.shop, "shopjobs.bulk.kind": "QUERY"}
        with tracing.span("shopify.bulk_operation", attributes):
            return await bulk.bulk_query(self, query, expected_objects=expected_objects)

    async def bulk_mutation(
        self,
        mutation: str,
        rows: Iterable[dict[str, Any]] | AsyncIterable[dict[str, Any]],
    ) -> bulk.BulkMutationResults:
        """Run `mutation` once per row of variables as a bulk operation; stream the results."""
        attributes = {"shopjobs.shop": self.shop, "shopjobs.bulk.kind": "MUTATION"}
        with tracing.span("shopify.bulk_operation", attributes):
            return await bulk.bulk_mutation(self, mutation, rows)
