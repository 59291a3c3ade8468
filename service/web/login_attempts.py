"""Failed dashboard logins, counted per client, so that a password cannot be guessed at speed.

The dashboard (service/web/dashboard.py) sits behind HTTP basic auth, which a script can try
as fast as the web answers. Each request that carries credentials that do not match counts
one failure against its client; after DASHBOARD_LOGIN_MAX_FAILURES failures within
DASHBOARD_LOGIN_WINDOW_SECONDS (counted from the first), every request with credentials from
that client, right or wrong, is answered 429 with Retry-After until the window ends: were the
right password let through, the answer would tell a guesser when it guessed right. A request
without credentials (a browser's first, which draws the login prompt) is not a failure.

The client is the connection's address as uvicorn reports it, which is the X-Forwarded-For
address behind Fly's proxy (FORWARDED_ALLOW_IPS, fly.web.toml); IPv6 clients are counted per
/64, the block one host usually holds. The counters live in Redis (one key per client, expiring
with its window), so every web process shares them. If Redis does not answer within
TIMEOUT_SECONDS, the attempt is let through uncounted and a warning logged: the password is
at least 12 characters, so an outage's worth of guesses does not find it, and the operators
keep their dashboard while Redis is down.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging

from redis.asyncio import Redis

logger = logging.getLogger("shopjobs.dashboard")

KEY_PREFIX = "shopjobs:dashboard-login-failures"
TIMEOUT_SECONDS = 1.0


def client_key(host: str | None) -> str:
    """The client a failure counts against: its IPv4 address, or its IPv6 /64."""
    if not host:
        return "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host[:100]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class LoginAttempts:
    """Per-client failure counters in Redis, in fixed windows started by a first failure."""

    def __init__(self, redis: Redis, max_failures: int, window_seconds: int) -> None:
        self.redis = redis
        self.max_failures = max_failures
        self.window_seconds = window_seconds

    def _key(self, client: str) -> str:
        return f"{KEY_PREFIX}:{client}"

    async def locked_for(self, client: str) -> int | None:
        """Seconds until `client` may try again, or None when it may try now."""
        if not self.max_failures:
            return None
        pipe = self.redis.pipeline(transaction=False)
        pipe.get(self._key(client))
        pipe.ttl(self._key(client))
        try:
            count, ttl = await asyncio.wait_for(pipe.execute(), TIMEOUT_SECONDS)
        except Exception as exc:  # Redis down or slow: see the module docstring
            logger.warning("dashboard login failures not read for %s: %r", client, exc)
            return None
        if count is None or int(count) < self.max_failures:
            return None
        return max(int(ttl), 1)

    async def failed(self, client: str) -> None:
        """Count one failure; the first of a window starts it."""
        if not self.max_failures:
            return
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(self._key(client), 0, ex=self.window_seconds, nx=True)
        pipe.incr(self._key(client))
        try:
            await asyncio.wait_for(pipe.execute(), TIMEOUT_SECONDS)
        except Exception as exc:
            logger.warning("dashboard login failure not counted for %s: %r", client, exc)
