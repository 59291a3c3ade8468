"""JSON error answers: every error body is `{"error": str, "details"?: ...}`, never HTML."""

from __future__ import annotations

import logging
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

logger = logging.getLogger("shopjobs.web")

REASONS = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    413: "Request body too large",
    415: "Unsupported media type",
    503: "Service unavailable",
}


def error(status: int, message: str, details: Any = None) -> JSONResponse:
    body: dict[str, Any] = {"error": message}
    if details is not None:
        body["details"] = details
    return JSONResponse(body, status_code=status, headers={"Cache-Control": "no-store"})


async def http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = (
        exc.detail if exc.detail and exc.detail != "" else REASONS.get(exc.status_code, "Error")
    )
    response = error(exc.status_code, str(message))
    if exc.headers:
        response.headers.update(exc.headers)
    return response


async def server_error(request: Request, exc: Exception) -> Response:
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return error(500, "Internal server error")


EXCEPTION_HANDLERS = {HTTPException: http_exception, Exception: server_error}
