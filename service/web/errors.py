"""JSON error answers: every error body is `{"error": str, "details"?: ...}`, never HTML.

Endpoints (and the dashboard's guard) raise `ApiError`; the handlers registered in `create_app`
turn it, Starlette's HTTPException, an unreachable database and a job the queue did not take
into their answer, so no endpoint builds an error response or catches these itself.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ExceptionHandler

from service.core.db import UNAVAILABLE_ERRORS
from service.intake import NotQueued

logger = logging.getLogger("shopjobs.web")

# Every 503 says when to try again (a dependency down, a budget full): what a client that
# honours Retry-After (Shopify's webhook delivery, a storefront poll) waits.
RETRY_AFTER_SECONDS = 5

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


class ApiError(Exception):
    """An answer other than 2xx: its status, message, optional details and extra headers."""

    def __init__(
        self,
        status: int,
        message: str,
        details: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details
        self.headers = headers


def _answer(status: int, message: str, details: Any = None) -> JSONResponse:
    body: dict[str, Any] = {"error": message}
    if details is not None:
        body["details"] = details
    headers = {"Cache-Control": "no-store"}
    if status == 503:
        headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return JSONResponse(body, status_code=status, headers=headers)


async def api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    response = _answer(exc.status, exc.message, exc.details)
    if exc.headers:
        response.headers.update(exc.headers)
    return response


async def http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = (
        exc.detail if exc.detail and exc.detail != "" else REASONS.get(exc.status_code, "Error")
    )
    return await api_error(request, ApiError(exc.status_code, str(message), headers=exc.headers))


async def database_unavailable(request: Request, exc: Exception) -> Response:
    """Postgres unreachable is a 503 the caller may retry, never a 500."""
    logger.warning("database unavailable on %s: %r", request.url.path, exc)
    return _answer(503, "Database unavailable")


async def not_queued(request: Request, exc: Exception) -> Response:
    return _answer(503, "Failed to queue job")


async def server_error(request: Request, exc: Exception) -> Response:
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return _answer(500, "Internal server error")


EXCEPTION_HANDLERS: dict[Any, ExceptionHandler] = {
    ApiError: api_error,
    HTTPException: http_exception,
    NotQueued: not_queued,
    **dict.fromkeys(UNAVAILABLE_ERRORS, database_unavailable),
    Exception: server_error,
}
