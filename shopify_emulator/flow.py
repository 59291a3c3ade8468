"""Shopify Flow, as far as an app's Flow actions and triggers meet it.

- POST /_emulator/flow/actions {"shop", "handle", "properties", "action_run_id"?, "attempts"?,
  "retry_seconds"?, "secret"?}: runs a workflow step of the app's action as Flow does: the
  JSON body Flow sends (shop_id, shopify_domain, action_run_id, action_definition_id, handle,
  properties), signed with X-Shopify-Hmac-SHA256 (base64 HMAC-SHA256 of the body with the
  app's secret, or `secret` to forge one), POSTed to {app_url}/flow/actions/{handle}, and sent
  again with the same body while the answer is not 200 (Flow retries for a day; here up to
  `attempts` times, `retry_seconds` apart). Answers every attempt's status and body.
- flowTriggerReceive(handle, payload): the Admin GraphQL mutation, recorded per shop.
- GET /_emulator/flow: the recorded flowTriggerReceive calls and the action requests sent.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid
import zlib
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from shopify_emulator.state import EmulatorState

# Shopify refuses a trigger payload larger than this.
MAX_TRIGGER_PAYLOAD_BYTES = 50_000


def _records(state: EmulatorState) -> dict[str, list[dict[str, Any]]]:
    records: dict[str, list[dict[str, Any]]] = state.__dict__.setdefault(
        "flow_records", {"triggers": [], "actions": []}
    )
    return records


def resolvers(state: EmulatorState, shop: str) -> dict[str, Any]:
    """The Flow fields of the Admin GraphQL root for `shop`."""

    def flow_trigger_receive(
        info: Any, handle: str | None = None, payload: Any = None, body: str | None = None
    ) -> dict[str, Any]:
        if not handle:
            return {"userErrors": [{"field": ["handle"], "message": "Handle is required"}]}
        if not isinstance(payload, dict):
            return {"userErrors": [{"field": ["payload"], "message": "Payload must be an object"}]}
        if len(json.dumps(payload).encode()) > MAX_TRIGGER_PAYLOAD_BYTES:
            message = f"Payload is larger than {MAX_TRIGGER_PAYLOAD_BYTES} bytes"
            return {"userErrors": [{"field": ["payload"], "message": message}]}
        _records(state)["triggers"].append(
            {"shop": shop, "handle": handle, "payload": payload, "at": time.time()}
        )
        return {"userErrors": []}

    return {"flowTriggerReceive": flow_trigger_receive}


def sign(body: bytes, secret: str) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def action_body(shop: str, handle: str, properties: dict[str, Any], run_id: str) -> bytes:
    return json.dumps(
        {
            "shop_id": f"gid://shopify/Shop/{zlib.crc32(shop.encode())}",
            "shopify_domain": shop,
            "action_run_id": run_id,
            "action_definition_id": handle,
            "handle": handle,
            "properties": properties,
        },
        ensure_ascii=False,
        separators=(",", ":"),
    ).encode()


async def send_action(request: Request) -> JSONResponse:
    state: EmulatorState = request.app.state.emulator
    try:
        spec = await request.json()
    except ValueError:
        spec = None
    if not isinstance(spec, dict) or not isinstance(spec.get("shop"), str):
        return JSONResponse({"error": "shop is required"}, status_code=400)
    handle = str(spec.get("handle") or "")
    if not handle:
        return JSONResponse({"error": "handle is required"}, status_code=400)
    run_id = str(spec.get("action_run_id") or uuid.uuid4())
    properties = spec.get("properties") or {}
    body = action_body(spec["shop"], handle, properties, run_id)
    headers = {
        "Content-Type": "application/json",
        "X-Shopify-Hmac-SHA256": sign(body, str(spec.get("secret") or state.config.api_secret)),
        "User-Agent": "Shopify-Flow (emulated)",
    }
    url = f"{state.config.app_url}/flow/actions/{handle}"
    attempts: list[dict[str, Any]] = []
    http = request.app.state.http
    for attempt in range(max(1, int(spec.get("attempts", 3)))):
        if attempt:
            await asyncio.sleep(float(spec.get("retry_seconds", 0.5)))
        try:
            answer = await http.post(url, content=body, headers=headers, timeout=30)
            try:
                shown: Any = answer.json()
            except ValueError:
                shown = answer.text[:500]
            attempts.append({"status": answer.status_code, "body": shown})
        except Exception as exc:  # Flow retries a connection that fails too
            attempts.append({"status": None, "error": repr(exc)})
        if attempts[-1]["status"] == 200:
            break
    record = {"shop": spec["shop"], "handle": handle, "action_run_id": run_id,
              "attempts": attempts}  # fmt: skip
    _records(state)["actions"].append(record)
    return JSONResponse(record)


async def recorded(request: Request) -> JSONResponse:
    state: EmulatorState = request.app.state.emulator
    records = _records(state)
    shop = request.query_params.get("shop")
    triggers = [t for t in records["triggers"] if shop is None or t["shop"] == shop]
    return JSONResponse({"triggers": triggers, "actions": records["actions"]})
