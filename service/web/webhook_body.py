"""Reading a webhook's body before anyone knows who sent it.

The HMAC can only be checked once the whole body is in memory, so until then the sender is
anyone on the internet. Four bounds keep that cheap for the web process:

- a `Content-Length` above the limit is refused with 413 before a byte is read;
- the body is counted while it arrives (a chunked upload has no length to trust) and refused
  with 413 past the limit (`WEBHOOK_MAX_BODY_BYTES`; Shopify's payloads are a few KiB);
- the whole body must arrive within `WEBHOOK_READ_TIMEOUT_SECONDS`, or the answer is 408: a
  sender that trickles bytes (slow-loris) cannot hold its buffer for long;
- every body being read is reserved, at its announced length (the limit when none is
  announced), against one budget for the process (`WEBHOOK_BODY_BUDGET_BYTES`); past it the
  answer is 503 with Retry-After before anything is read. Shopify retries a 503.
"""

from __future__ import annotations

import asyncio

from starlette.requests import Request

from service.web.errors import ApiError
from service.web.parsing import announced_length, read_body

RETRY_AFTER_SECONDS = 5


class BodyBudget:
    """Bytes of webhook bodies this process may hold while they arrive.

    One event loop per process: reservations need no lock.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0

    def reserve(self, size: int) -> bool:
        if self.held + size > self.limit:
            return False
        self.held += size
        return True

    def release(self, size: int) -> None:
        self.held -= size


async def read_webhook_body(
    request: Request, budget: BodyBudget, *, max_bytes: int, timeout_seconds: float
) -> bytes:
    """The whole body within the bounds above, or ApiError."""
    announced = announced_length(request, max_bytes)
    reserved = max_bytes if announced is None else announced
    if not budget.reserve(reserved):
        raise ApiError(
            503,
            "Too many webhook bodies in flight",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    try:
        async with asyncio.timeout(timeout_seconds):
            return await read_body(request, max_bytes)
    except TimeoutError:
        raise ApiError(
            408, "Request body not received in time", headers={"Connection": "close"}
        ) from None
    finally:
        budget.release(reserved)
