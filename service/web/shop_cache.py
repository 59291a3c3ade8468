"""Installed shops by domain, cached for a few seconds in each web process.

Every app-proxy request names its shop; reading the row each time was a third of the enqueue
endpoint's database work. A shop's install or uninstall reaches the process that handled it at
once (`forget`), and every other web process within SHOP_CACHE_SECONDS (0: no cache).
"""

from __future__ import annotations

import time

from databases import Database

from service import store


class ShopCache:
    def __init__(self, database: Database, ttl: float) -> None:
        self.database = database
        self.ttl = ttl
        self._entries: dict[str, tuple[float, store.Shop | None]] = {}

    async def get(self, domain: str) -> store.Shop | None:
        if self.ttl <= 0:
            return await store.get_shop(self.database, domain)
        now = time.monotonic()
        entry = self._entries.get(domain)
        if entry is not None and entry[0] > now:
            return entry[1]
        shop = await store.get_shop(self.database, domain)
        if len(self._entries) > 10_000:  # unknown domains must not grow it without bound
            self._entries.clear()
        self._entries[domain] = (now + self.ttl, shop)
        return shop

    def forget(self, domain: str) -> None:
        self._entries.pop(domain, None)
