"""The emulator's bulk routes: the result files and staged uploads Shopify's storage serves,
and the test controls of bulk operations (faults, expiry, the list of every operation).

- GET  /bulk-results/{token}.jsonl       a result, streamed; 403 once expired, like S3/GCS
- POST /staged-uploads                   a staged upload's multipart form (key + file)
- POST /_emulator/bulk/faults            the next operation of a shop fails
- GET  /_emulator/bulk                   every operation
- POST /_emulator/bulk/{id}/expire       an operation's result URL expires now
"""

from __future__ import annotations

import email.parser
import email.policy
import time
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from shopify_emulator.bulk import BulkFault

if TYPE_CHECKING:
    from shopify_emulator.state import EmulatorState

EXPIRED_BODY = (
    '<?xml version="1.0" encoding="UTF-8"?><Error><Code>ExpiredToken</Code>'
    "<Message>The provided token has expired.</Message></Error>"
)


async def result(request: Request) -> Response:
    """GET /bulk-results/{name}: a result file, streamed; 403 once expired, like S3/GCS."""
    state: EmulatorState = request.app.state.emulator
    name = request.path_params["name"].removesuffix(".jsonl")
    token, partial = name.removesuffix("-partial"), name.endswith("-partial")
    op = next((o for o in state.bulk.operations.values() if o.token == token), None)
    if op is None:
        return Response("<Error><Code>NoSuchKey</Code></Error>", status_code=404)
    state.bulk.refresh(op)
    if op.status == "EXPIRED" or (op.expires_at and op.expires_at <= time.time()):
        return Response(EXPIRED_BODY, status_code=403, media_type="application/xml")
    if op.status not in ("COMPLETED", "FAILED"):
        return Response("<Error><Code>NoSuchKey</Code></Error>", status_code=404)
    return StreamingResponse(state.bulk.lines(op, partial), media_type="application/jsonl")


async def upload(request: Request) -> Response:
    """POST /staged-uploads: the multipart form a staged upload target takes (key + file)."""
    state: EmulatorState = request.app.state.emulator
    body = await request.body()
    header = f"Content-Type: {request.headers.get('content-type', '')}\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(header + body)
    fields: dict[str, bytes] = {}
    if message.is_multipart():
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True)
            if isinstance(name, str) and isinstance(payload, bytes):
                fields[name] = payload
    key, content = fields.get("key"), fields.get("file")
    if not key or content is None:
        return JSONResponse({"error": "key and file are required"}, status_code=400)
    state.bulk.uploads[key.decode()] = content
    return Response(status_code=201)


async def control_fault(request: Request) -> JSONResponse:
    """POST /_emulator/bulk/faults {"error_code", "partial"?, "shop"?}."""
    state: EmulatorState = request.app.state.emulator
    try:
        body = await request.json()
        fault = BulkFault(str(body["error_code"]), bool(body.get("partial")), body.get("shop"))
    except (ValueError, KeyError, TypeError):
        return JSONResponse({"error": "error_code is required"}, status_code=400)
    state.bulk.faults.append(fault)
    return JSONResponse({"status": "ok"}, status_code=201)


async def control_list(request: Request) -> JSONResponse:
    """GET /_emulator/bulk: every operation (id, shop, type, status, objectCount)."""
    state: EmulatorState = request.app.state.emulator
    return JSONResponse(
        [{**state.bulk.render(o), "shop": o.shop} for o in state.bulk.operations.values()]
    )


async def control_expire(request: Request) -> JSONResponse:
    """POST /_emulator/bulk/{id}/expire: its result URL expires now (403 from then on)."""
    state: EmulatorState = request.app.state.emulator
    op = state.bulk.operations.get(int(request.path_params["id"]))
    if op is None:
        return JSONResponse({"error": "Unknown operation"}, status_code=404)
    op.expires_at = time.time()
    return JSONResponse(state.bulk.render(op))
