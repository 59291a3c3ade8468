"""Reading a webhook's body before anyone knows who sent it.

The HMAC can only be checked once the whole body is here, so until then the sender is anyone
on the internet. What such a sender can cost is bounded by what it actually sends, never by
what it announces: a connection that announces a large `Content-Length` and sends nothing
holds nothing, so no number of idle or trickling connections can make a signed webhook wait
or fail. (Bodies used to reserve their announced length for up to 10 s: sixteen idle sockets
then refused every webhook with 503.)

- a `Content-Length` above `WEBHOOK_MAX_BODY_BYTES` is refused with 413 before a byte is
  read, and a body is counted as it arrives (a chunked upload has no length to trust): 413
  past the limit. The default (16 MiB) takes Shopify's largest payloads, a product with
  2,048 variants is about 3 MiB (tests/integration/test_webhook_bodies.py builds one);
- time: the first bytes must come within `WEBHOOK_FIRST_BYTES_SECONDS`, and from then on the
  sender must keep up an average of `WEBHOOK_MIN_BYTES_PER_SECOND` (the deadline for the next
  chunk is start + first-bytes time + bytes received / floor rate), and the whole body must be
  here within `WEBHOOK_READ_TIMEOUT_SECONDS`; else 408 and the connection is closed. Shopify
  sends its body at once and gives up after 5 s, so nothing genuine comes near these bounds;
  an idle or trickling connection is dropped within a few seconds;
- memory: the bytes received and not yet checked are counted against one budget for the
  process (`WEBHOOK_BODY_BUDGET_BYTES`) and one per client address
  (`WEBHOOK_CLIENT_BUDGET_BYTES`), charged as each chunk arrives. A chunk that does not fit is
  refused with 503 and Retry-After (Shopify delivers again). To fill the budget a sender has to
  actually send that many bytes, from several addresses, again and again within the time
  bounds above; one address can hold at most its share.

The charge ends when the body is handed back: the caller checks the HMAC right away, without
awaiting anything in between, so the budget covers every body no one has vouched for yet. A
body that passes the check is Shopify's, and its size is bounded by the limit above.

The body is kept in memory (not streamed into the HMAC and dropped) because the handler
parses it once the HMAC passes; with the limits above that costs at most the budget.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from starlette.requests import ClientDisconnect, Request

from service.web.errors import ApiError
from service.web.parsing import announced_length

RETRY_AFTER_SECONDS = 5


class BodyLimits(Protocol):
    """The settings that bound a webhook body (service/core/settings.py, `WEBHOOK_*`)."""

    @property
    def webhook_max_body_bytes(self) -> int: ...
    @property
    def webhook_first_bytes_seconds(self) -> float: ...
    @property
    def webhook_min_bytes_per_second(self) -> float: ...
    @property
    def webhook_read_timeout_seconds(self) -> float: ...
    @property
    def webhook_client_budget_bytes(self) -> int: ...


class BodyBudget:
    """Bytes of webhook bodies this process holds before their HMAC is checked: in all, and
    per client address.

    Charged as bytes arrive (never at an announced length), so an idle connection costs
    nothing. One event loop per process: charges need no lock.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self.by_client: dict[str, int] = {}

    def take(self, client: str, size: int, client_limit: int) -> bool:
        """Charge `size` more bytes to `client`; False (and nothing charged) past either bound."""
        mine = self.by_client.get(client, 0)
        if self.held + size > self.limit or mine + size > client_limit:
            return False
        self.held += size
        self.by_client[client] = mine + size
        return True

    def give_back(self, client: str, size: int) -> None:
        """Return what `client` was charged for one body; an address holding nothing is
        forgotten, so the table stays as small as the set of senders in flight."""
        if size == 0:
            return
        self.held -= size
        left = self.by_client.get(client, 0) - size
        if left > 0:
            self.by_client[client] = left
        else:
            self.by_client.pop(client, None)


def _too_slow() -> ApiError:
    return ApiError(408, "Request body not received in time", headers={"Connection": "close"})


async def read_webhook_body(request: Request, budget: BodyBudget, limits: BodyLimits) -> bytes:
    """The whole body within the bounds above, or ApiError (400, 408, 413, 503)."""
    max_bytes = limits.webhook_max_body_bytes
    announced_length(request, max_bytes)  # 413 before a byte is read
    client = request.client.host if request.client is not None else ""
    loop = asyncio.get_running_loop()
    start = loop.time()
    last_moment = start + limits.webhook_read_timeout_seconds
    first_bytes = start + limits.webhook_first_bytes_seconds
    rate = limits.webhook_min_bytes_per_second
    body = bytearray()
    chunks = request.stream()
    try:
        while True:
            # Every byte received buys 1/rate seconds more; nothing received buys nothing.
            deadline = min(last_moment, first_bytes + len(body) / rate)
            try:
                async with asyncio.timeout_at(deadline):
                    chunk = await anext(chunks)
            except StopAsyncIteration:
                break
            except TimeoutError:
                raise _too_slow() from None
            if len(body) + len(chunk) > max_bytes:
                raise ApiError(413, "Request body too large", {"limit": max_bytes})
            if not budget.take(client, len(chunk), limits.webhook_client_budget_bytes):
                raise ApiError(
                    503,
                    "Too many webhook bodies in flight",
                    headers={"Retry-After": str(RETRY_AFTER_SECONDS), "Connection": "close"},
                )
            body += chunk
    except ClientDisconnect:
        # Nobody is left to read the answer; this only keeps it out of the 500s in the log.
        raise ApiError(400, "Client disconnected before the body was complete") from None
    finally:
        budget.give_back(client, len(body))
    return bytes(body)
