"""Request bodies, read with a size limit: the one reader of the proxy, webhooks and dashboard."""

from __future__ import annotations

from starlette.requests import ClientDisconnect, Request

from service.web.errors import ApiError


async def read_body(request: Request, limit: int) -> bytes:
    """The body, counted while it arrives (a chunked upload has no Content-Length to trust);
    413 once it passes `limit` bytes."""
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise ApiError(413, "Request body too large", {"limit": limit})
    except ClientDisconnect:
        # Nobody is left to read the answer; this only keeps it out of the 500s in the log.
        raise ApiError(400, "Client disconnected before the body was complete") from None
    return bytes(body)
