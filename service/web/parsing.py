"""Reading what a web request asks for: its body, job request, Idempotency-Key and job id.

One module for every endpoint that takes these (the storefront's proxy, the merchant API, the
dashboard, the webhook receiver), so each rule is written once and a refusal reads the same
wherever it happens. Every refusal is an ApiError (service/web/errors.py answers it as JSON);
nothing here knows who is asking.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from uuid import UUID

import orjson
from pydantic import BaseModel
from starlette.requests import ClientDisconnect, Request

from jobs.types import JobType
from service.intake import (
    MAX_IDEMPOTENCY_KEY_LENGTH,
    InputProblem,
    InvalidJobInput,
    validate_input,
)
from service.web.errors import ApiError

# A job request's body (the proxy's and the merchant API's): inputs are small.
MAX_BODY_BYTES = 64 * 1024
# Deeper than any sensible job input, and well inside what orjson can write back (254 levels).
MAX_JSON_DEPTH = 64
MAX_ERROR_DETAILS = 20
MAX_DETAIL_TEXT = 200
MAX_FIELD_PART = 64
# The longest text UUID() takes: "urn:uuid:{...}" is 47 characters.
MAX_UUID_TEXT = 64
# Longer than any Content-Length a limit here allows, short enough that int() is cheap.
MAX_LENGTH_DIGITS = 20


# -- the body ------------------------------------------------------------------------------


def announced_length(request: Request, max_bytes: int = MAX_BODY_BYTES) -> int | None:
    """The request's Content-Length (None: not sent), refused before a byte is read when it
    is not a plain number (400) or above `max_bytes` (413)."""
    length = request.headers.get("content-length")
    if length is None:
        return None
    if not (len(length) <= MAX_LENGTH_DIGITS and length.isascii() and length.isdigit()):
        raise ApiError(400, "Invalid Content-Length")
    if int(length) > max_bytes:
        raise ApiError(413, "Request body too large", {"limit": max_bytes})
    return int(length)


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


# -- a job request -------------------------------------------------------------------------


def _json_depth(value: Any) -> int:
    deepest = 0
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            children = item.values() if isinstance(item, dict) else item
            pending.extend((child, depth + 1) for child in children)
    return deepest


def _clip(text: str, limit: int = MAX_DETAIL_TEXT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _field_error(field: str, message: str) -> list[dict[str, str]]:
    return [{"field": field, "message": message}]


def problem_details(problems: list[InputProblem]) -> list[dict[str, str]]:
    """An input's problems as `{field, message, type}`, clipped and at most MAX_ERROR_DETAILS:
    the answer echoes neither the input nor an unbounded list of complaints about it."""
    details = []
    for problem in problems[:MAX_ERROR_DETAILS]:
        item = {
            "field": ".".join(_clip(part, MAX_FIELD_PART) for part in problem.path),
            "message": _clip(problem.message),
        }
        if problem.type is not None:
            item["type"] = problem.type
        details.append(item)
    return details


def parse_job_request(
    body: bytes,
    types: dict[str, JobType],
    offered: Callable[[JobType], bool],
    model_for: Callable[[JobType], type[BaseModel] | None] = lambda _: None,
) -> tuple[JobType, dict[str, Any]]:
    """Body -> (job type, validated input as JSON-ready data), or a 400 naming the fields.

    Only the types `offered` to this caller exist for it (the storefront's, the merchant's).
    `model_for`: a narrower model this caller's input must fit (the storefront's
    `proxy_input_model`); None: the type's `input_model`."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ApiError(400, "Body must be JSON") from None
    if not isinstance(payload, dict):
        raise ApiError(400, 'Body must be a JSON object {"type": ..., "input": {...}}')
    if _json_depth(payload) > MAX_JSON_DEPTH:
        raise ApiError(400, "Body is nested too deeply")
    name = payload.get("type")
    if not isinstance(name, str):
        raise ApiError(400, "Invalid request", _field_error("type", "a job type name is required"))
    job_type = types.get(name)
    if job_type is None or not offered(job_type):  # types not offered look like unknown ones
        raise ApiError(400, "Unknown job type", _field_error("type", "no such job type"))
    raw_input = payload.get("input")
    if not isinstance(raw_input, dict):
        raise ApiError(400, "Invalid request", _field_error("input", "must be a JSON object"))
    try:
        return job_type, validate_input(job_type, raw_input, model_for(job_type))
    except InvalidJobInput as exc:
        raise ApiError(400, "Invalid input", problem_details(exc.problems)) from None


# -- headers and ids -----------------------------------------------------------------------


def idempotency_key(request: Request, prefix: str) -> str | None:
    """The client's Idempotency-Key, stored as `{prefix}KEY` (`proxy:KEY`, `admin:KEY`).

    The prefix keeps clients out of the keys the app writes itself (`webhook:EVENT`): a
    visitor who sends `webhook:...` gets a job of their own, never a webhook's.
    """
    values = request.headers.getlist("idempotency-key")
    if not values:
        return None
    key = values[0].strip()
    valid = (
        len(values) == 1
        and 0 < len(key) <= MAX_IDEMPOTENCY_KEY_LENGTH
        and key.isascii()
        and key.isprintable()
    )
    if not valid:
        message = f"one header of 1 to {MAX_IDEMPOTENCY_KEY_LENGTH} printable ASCII characters"
        raise ApiError(400, "Invalid Idempotency-Key", _field_error("Idempotency-Key", message))
    return f"{prefix}{key}"


def parse_job_id(text: str) -> UUID | None:
    """A job id as the storefront, the merchant API and the dashboard take it; None if it is
    not a UUID. Too long is refused, not cut: a cut could leave a valid UUID."""
    if len(text) > MAX_UUID_TEXT:
        return None
    try:
        return UUID(text)
    except ValueError:
        return None
