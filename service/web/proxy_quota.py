"""Storefront quotas: how many jobs one shop's visitors may start per minute.

`POST /proxy/process` is reachable by anyone who can load the shop's storefront, and every
accepted request is work for the shop's Admin API bucket and for the workers that all shops
share. Two limits per minute, counted in Redis so that every web process shares them:

- `PROXY_LIMIT_SHOP_PER_MINUTE` (default 120): all of a shop's storefront requests;
- `PROXY_LIMIT_CUSTOMER_PER_MINUTE` (default 20): one logged-in customer's
  (`logged_in_customer_id`). Anonymous visitors cannot be told apart (the signature names no
  visitor, and the address is Shopify's proxy), so they count against the shop's limit only.

A job type may also bound its own storefront use (`JobType.proxy_limit_per_minute`: jobs of
that type per shop per minute, all visitors together), checked once the body names the type;
`product_summary` sets it, since each of its jobs spends the shop's Admin API budget.

0 turns a limit off. The windows are fixed minutes (one counter key per shop, or customer,
per minute, expiring after two): a cost of one Redis round trip (INCR + EXPIRE, pipelined) on
the hot path, at the price of a burst of up to twice a limit across a minute's boundary.
Concurrent requests share that round trip (service/core/group_commit.py): a group's requests
on one key are one INCRBY of their number, and each request gets the count its own INCR would
have returned, in the order they came, so a limit refuses exactly the requests it did before.
Jobs the app starts itself (webhooks, the dashboard) do not pass here and are not counted.
If Redis does not answer, the request is let through: it cannot be queued anyway, and is
refused with 503 there.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time

from redis.asyncio import Redis

from service.core.group_commit import GroupCommit

logger = logging.getLogger("shopjobs.web")

KEY_PREFIX = "shopjobs:proxy-quota"
WINDOW_SECONDS = 60
TIMEOUT_SECONDS = 1.0

# One request's count: the keys it counts against, and the loop time it stops waiting at.
Counted = tuple[tuple[str, ...], float]


class ProxyQuota:
    def __init__(self, redis: Redis, per_shop: int, per_customer: int) -> None:
        self.redis = redis
        self.per_shop = per_shop
        self.per_customer = per_customer
        self._counts: GroupCommit[Counted, list[int] | Exception] = GroupCommit(self._increment)

    async def refusal(self, shop: str, customer: str | None) -> int | None:
        """Count this request: None if it is within the limits, else the seconds to wait."""
        now = time.time()
        window = int(now // WINDOW_SECONDS)
        limits: list[tuple[str, int]] = []
        if self.per_shop:
            limits.append((f"{KEY_PREFIX}:{window}:shop:{shop}", self.per_shop))
        if customer is not None and self.per_customer:
            limits.append((f"{KEY_PREFIX}:{window}:customer:{shop}:{customer}", self.per_customer))
        return await self._count(shop, limits, window, now)

    async def type_refusal(self, shop: str, job_type: str, per_minute: int) -> int | None:
        """Count one storefront job of `job_type` for `shop` against the type's own limit."""
        now = time.time()
        window = int(now // WINDOW_SECONDS)
        key = f"{KEY_PREFIX}:{window}:type:{shop}:{job_type}"
        return await self._count(shop, [(key, per_minute)], window, now)

    async def _count(
        self, shop: str, limits: list[tuple[str, int]], window: int, now: float
    ) -> int | None:
        """Increment each key of this window: None if all are within their limits, else the
        seconds until the next window (a Redis that does not answer refuses nothing)."""
        if not limits:
            return None
        deadline = asyncio.get_running_loop().time() + TIMEOUT_SECONDS
        try:
            counts = await self._counts.submit((tuple(key for key, _ in limits), deadline))
        except Exception as exc:  # Redis down or slow: the enqueue that follows says 503
            counts = exc
        if isinstance(counts, Exception):
            logger.warning("proxy quota not counted for %s: %r", shop, counts)
            return None
        if all(count <= limit for count, (_, limit) in zip(counts, limits, strict=True)):
            return None
        return max(1, math.ceil((window + 1) * WINDOW_SECONDS - now))

    async def _increment(self, requests: list[Counted]) -> list[list[int] | Exception]:
        """One pipeline for a group of requests (each the keys it counts against, and when it
        stops waiting): INCRBY and EXPIRE once per key, then each request's count per key as
        its own INCR would have returned it. A failure is every request's result, never
        raised: the group commit would retry it request by request, against a Redis that is
        down.

        One timer for the group, at its earliest deadline: none of its requests waits longer
        than TIMEOUT_SECONDS, since the group before ended by an earlier deadline still (a
        timer per request cost more than the pipeline's own Python code under load)."""
        wanted: dict[str, int] = {}
        for keys, _ in requests:
            for key in keys:
                wanted[key] = wanted.get(key, 0) + 1
        pipe = self.redis.pipeline(transaction=False)
        for key, number in wanted.items():
            pipe.incrby(key, number)
            pipe.expire(key, 2 * WINDOW_SECONDS)
        try:
            async with asyncio.timeout_at(min(deadline for _, deadline in requests)):
                replies = await pipe.execute()
        except Exception as exc:
            return [exc] * len(requests)
        counted = {
            key: int(total) - wanted[key] for key, total in zip(wanted, replies[::2], strict=True)
        }
        counts: list[list[int] | Exception] = []
        for keys, _ in requests:
            mine = []
            for key in keys:
                counted[key] += 1
                mine.append(counted[key])
            counts.append(mine)
        return counts
