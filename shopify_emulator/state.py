"""Everything the emulator remembers while it runs: shops, tokens, buckets, faults, counters.

In memory only; one emulator process is one little Shopify. Token lifetimes use wall-clock
time (`now` from the caller); buckets use the monotonic clock given at construction.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from starlette.requests import Request

from shopify_emulator.bucket import LeakyBucket
from shopify_emulator.bulk import BulkOperations
from shopify_emulator.catalogue import Product, build
from shopify_emulator.config import EmulatorConfig

FAULT_KINDS = ("429", "503", "500", "slow")
SHOP_RE = re.compile(r"^[a-z0-9][a-z0-9-]*\.myshopify\.com$")
CODE_LIFETIME_SECONDS = 600.0
# An online token lives as long as the staff member's admin session: Shopify says a day.
ONLINE_TOKEN_SECONDS = 86_399


@dataclass
class Token:
    shop: str
    expires_at: float | None  # None: a non-expiring offline token


@dataclass
class ShopState:
    domain: str
    bucket: LeakyBucket
    scopes: str = ""
    installed: bool = True
    counters: dict[str, int] = field(
        default_factory=lambda: {"requests": 0, "throttled": 0, "faults": 0, "points": 0}
    )


@dataclass
class Fault:
    kind: str  # one of FAULT_KINDS
    remaining: int
    shop: str | None = None  # None: any shop
    retry_after: float | None = None  # seconds, for 429 and 503
    delay: float = 0.0  # seconds, for slow answers

    def matches(self, shop: str) -> bool:
        return self.remaining > 0 and (self.shop is None or self.shop == shop)


@dataclass
class Grant:
    """An authorization code, handed to the app by the OAuth redirect, usable once."""

    shop: str
    scopes: str
    expires_at: float


class EmulatorState:
    def __init__(self, config: EmulatorConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.clock = clock
        self.catalogue: dict[int, Product] = build(
            config.products, config.max_variants, config.seed
        )
        self.shops: dict[str, ShopState] = {}
        self.tokens: dict[str, Token] = {}
        self.refresh_tokens: dict[str, Token] = {}
        self.codes: dict[str, Grant] = {}
        self.faults: list[Fault] = []
        self.deliveries: list[dict[str, Any]] = []
        self.bulk = BulkOperations(self)
        self.http: httpx.AsyncClient | None = None  # the app's lifespan sets it
        for domain, token in config.shops.items():
            self.add_shop(domain, token)

    def shop(self, domain: str) -> ShopState:
        """The shop, created on first mention: every well-formed domain is a shop here."""
        if domain not in self.shops:
            bucket = LeakyBucket.full(
                self.config.bucket_size, self.config.restore_rate, self.clock()
            )
            self.shops[domain] = ShopState(domain, bucket)
        return self.shops[domain]

    def token_shop(self, token: str, now: float) -> str | None:
        found = self.tokens.get(token)
        if found is None or (found.expires_at is not None and found.expires_at <= now):
            return None
        shop = self.shops.get(found.shop)
        return found.shop if shop is not None and shop.installed else None

    def issue_code(self, shop: str, scopes: str, now: float) -> str:
        code = secrets.token_hex(16)
        self.codes[code] = Grant(shop, scopes, now + CODE_LIFETIME_SECONDS)
        return code

    def redeem_code(self, code: str, now: float) -> Grant | None:
        grant = self.codes.pop(code, None)
        return grant if grant is not None and grant.expires_at > now else None

    def issue_tokens(self, shop: str, now: float, *, expiring: bool) -> dict[str, Any]:
        """A new offline token (and, when expiring, a refresh token) for `shop`."""
        state = self.shop(shop)
        state.installed = True
        access = "shpat_" + secrets.token_hex(16)
        answer: dict[str, Any] = {"access_token": access, "scope": state.scopes}
        if not expiring:
            self.tokens[access] = Token(shop, None)
            return answer
        lifetime = self.config.token_lifetime_seconds
        refresh_lifetime = self.config.refresh_token_lifetime_seconds
        refresh = "shprt_" + secrets.token_hex(16)
        self.tokens[access] = Token(shop, now + lifetime)
        self.refresh_tokens[refresh] = Token(shop, now + refresh_lifetime)
        answer.update(
            expires_in=int(lifetime),
            refresh_token=refresh,
            refresh_token_expires_in=int(refresh_lifetime),
        )
        return answer

    def issue_online_token(self, shop: str, user: str, now: float) -> dict[str, Any]:
        """An online token for staff member `user` of `shop`, answered as Shopify answers it."""
        state = self.shop(shop)
        access = "shpua_" + secrets.token_hex(16)
        self.tokens[access] = Token(shop, now + ONLINE_TOKEN_SECONDS)
        user_id = int(user) if user.isdigit() else 0
        return {
            "access_token": access,
            "scope": state.scopes,
            "expires_in": ONLINE_TOKEN_SECONDS,
            "associated_user_scope": state.scopes,
            "associated_user": {
                "id": user_id,
                "first_name": "Staff",
                "last_name": f"Member {user_id}",
                "email": f"staff-{user_id}@{shop}",
                "email_verified": True,
                "account_owner": False,
                "locale": "en",
                "collaborator": False,
            },
        }

    def redeem_refresh_token(self, refresh: str, now: float) -> str | None:
        """The shop of a valid refresh token, which is used up (Shopify rotates them)."""
        found = self.refresh_tokens.pop(refresh, None)
        if found is None or (found.expires_at is not None and found.expires_at <= now):
            return None
        return found.shop

    def uninstall(self, shop: str) -> None:
        """Shopify revokes every token of the app when a shop uninstalls it."""
        if shop in self.shops:
            self.shops[shop].installed = False
        for table in (self.tokens, self.refresh_tokens):
            for key in [k for k, t in table.items() if t.shop == shop]:
                del table[key]

    def take_fault(self, shop: str) -> Fault | None:
        for fault in self.faults:
            if fault.matches(shop):
                fault.remaining -= 1
                return fault
        return None

    def add_shop(self, domain: str, token: str) -> None:
        """A shop with a non-expiring offline token, as a custom app gets one."""
        self.shop(domain).installed = True
        self.tokens[token] = Token(domain, None)

    def stats(self) -> dict[str, Any]:
        now = self.clock()
        return {
            "shops": {
                domain: {
                    **state.counters,
                    "installed": state.installed,
                    "throttleStatus": state.bucket.status(now),
                }
                for domain, state in self.shops.items()
            },
            "faultsPending": sum(f.remaining for f in self.faults),
            "webhookDeliveries": len(self.deliveries),
            "bulkOperations": len(self.bulk.operations),
        }

    def reset(self) -> None:
        """Fresh counters, full buckets, no pending faults; shops and tokens are kept."""
        now = self.clock()
        self.faults.clear()
        self.deliveries.clear()
        for state in self.shops.values():
            state.bucket = LeakyBucket.full(self.config.bucket_size, self.config.restore_rate, now)
            for key in state.counters:
                state.counters[key] = 0


def request_shop(request: Request, state: EmulatorState) -> str | None:
    """Which shop a request is for: `?shop=`, else a *.myshopify.com Host, else the first shop.

    Shopify knows the shop from the host name; the emulator serves every shop on one host.
    """
    candidates = [request.query_params.get("shop", ""), request.url.hostname or ""]
    for candidate in candidates:
        if SHOP_RE.fullmatch(candidate):
            return candidate
    return next(iter(state.shops), None)
