"""Installed shops by domain, cached for a few seconds in each web process.

Every app-proxy request names its shop; reading the row each time was a third of the enqueue
endpoint's database work. A shop's install or uninstall reaches the process that handled it at
once (`forget`), and every other web process within SHOP_CACHE_SECONDS (0: no cache).

When an entry expires under load, the requests in flight for that shop share one read (the
first one's) instead of each reading the row: without it, every expiry sent as many identical
SELECTs as there were concurrent requests, which queued for the pool's connections ahead of
the proxy's inserts.
"""

from __future__ import annotations

import asyncio
import time

from databases import Database

from service import store


class ShopCache:
    def __init__(self, database: Database, ttl: float) -> None:
        self.database = database
        self.ttl = ttl
        self._entries: dict[str, tuple[float, store.Shop | None]] = {}
        self._reading: dict[str, asyncio.Future[store.Shop | None]] = {}

    async def get(self, domain: str) -> store.Shop | None:
        if self.ttl <= 0:
            return await store.get_shop(self.database, domain)
        entry = self._entries.get(domain)
        if entry is not None and entry[0] > time.monotonic():
            return entry[1]
        while (reading := self._reading.get(domain)) is not None:
            try:  # shielded: a caller that goes away must not cancel the others' read
                return await asyncio.shield(reading)
            except asyncio.CancelledError:
                if not reading.cancelled():  # this caller was cancelled, not the read
                    raise
        return await self._read(domain)

    async def _read(self, domain: str) -> store.Shop | None:
        """Read the row for this caller and for those who ask meanwhile."""
        reading: asyncio.Future[store.Shop | None] = asyncio.get_running_loop().create_future()
        self._reading[domain] = reading
        now = time.monotonic()
        try:
            shop = await store.get_shop(self.database, domain)
        except BaseException as exc:
            if isinstance(exc, Exception):
                reading.set_exception(exc)
                reading.exception()  # retrieved: nobody else may be waiting for it
            else:  # the reader was cancelled: whoever waits reads for themselves
                reading.cancel()
            raise
        finally:
            forgotten = self._reading.get(domain) is not reading
            if not forgotten:
                del self._reading[domain]
        reading.set_result(shop)
        if not forgotten:  # forgotten meanwhile: the row read may be older than the change
            if len(self._entries) > 10_000:  # unknown domains must not grow it without bound
                self._entries.clear()
            self._entries[domain] = (now + self.ttl, shop)
        return shop

    def forget(self, domain: str) -> None:
        self._entries.pop(domain, None)
        # A read already under way may have seen the row before the change: later callers
        # read again rather than wait for it.
        self._reading.pop(domain, None)
