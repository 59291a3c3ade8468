"""Test-only endpoints under /_emulator: counters, faults, shops, webhooks. Not Shopify's.

GET  /_emulator/stats                      per-shop counters (requests, throttled, faults,
                                            points: actual cost spent), buckets
POST /_emulator/reset                      zero counters, refill buckets, drop pending faults
POST /_emulator/faults                     {"kind": "429"|"503"|"500"|"slow", "count", "shop"?,
                                            "retry_after"?, "delay"?}: the next matching
                                            Admin API requests fail (or are slow) that way
GET  /_emulator/products                   the seeded catalogue: GIDs, titles, variant counts
POST /_emulator/shops                      {"domain", "token"?}: a shop with an offline token
POST /_emulator/shops/{domain}/uninstall   revoke its tokens and send app/uninstalled
POST /_emulator/webhooks/send              {"topic", "shop", "payload", "event_id"?, "secret"?,
                                            "wait"?}: sign and deliver (202, or 200 once
                                            finished when "wait" is true)
GET  /_emulator/webhooks                   every delivery and its attempts
GET  /_emulator/bulk                       every bulk operation (shopify_emulator/bulk_routes.py)
POST /_emulator/bulk/faults                {"error_code", "partial"?, "shop"?}: the next bulk
                                            operation ends FAILED (with partial data)
POST /_emulator/bulk/{id}/expire           its result URL expires now (403, status EXPIRED)
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from shopify_emulator import webhooks
from shopify_emulator.state import FAULT_KINDS, SHOP_RE, EmulatorState, Fault


def _state(request: Request) -> EmulatorState:
    return request.app.state.emulator


async def _json(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _bad(message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=400)


async def stats(request: Request) -> JSONResponse:
    return JSONResponse(_state(request).stats())


async def reset(request: Request) -> JSONResponse:
    _state(request).reset()
    return JSONResponse({"status": "ok"})


async def add_fault(request: Request) -> JSONResponse:
    body = await _json(request)
    kind = str(body.get("kind", ""))
    if kind not in FAULT_KINDS:
        return _bad(f"kind must be one of {', '.join(FAULT_KINDS)}")
    try:
        fault = Fault(
            kind=kind,
            remaining=int(body.get("count", 1)),
            shop=body.get("shop"),
            retry_after=float(body["retry_after"]) if body.get("retry_after") is not None else None,
            delay=float(body.get("delay", 0)),
        )
    except (TypeError, ValueError):
        return _bad("count, retry_after and delay must be numbers")
    _state(request).faults.append(fault)
    return JSONResponse({"status": "ok", "pending": fault.remaining}, status_code=201)


async def products(request: Request) -> JSONResponse:
    return JSONResponse(
        [
            {
                "id": p.gid,
                "title": p.title,
                "variants": len(p.variants),
                "totalInventory": p.total_inventory,
            }
            for p in _state(request).catalogue.values()
        ]
    )


async def add_shop(request: Request) -> JSONResponse:
    body = await _json(request)
    domain = str(body.get("domain", ""))
    if not SHOP_RE.fullmatch(domain):
        return _bad("domain must be NAME.myshopify.com")
    token = str(body.get("token") or "shpat_" + secrets.token_hex(16))
    _state(request).add_shop(domain, token)
    return JSONResponse({"domain": domain, "token": token}, status_code=201)


async def send_webhook(request: Request) -> JSONResponse:
    state = _state(request)
    body = await _json(request)
    topic, shop = body.get("topic"), body.get("shop")
    if not isinstance(topic, str) or not isinstance(shop, str) or "payload" not in body:
        return _bad("topic, shop and payload are required")
    delivery = webhooks.new_delivery(
        state.config,
        topic,
        shop,
        body["payload"],
        event_id=body.get("event_id"),
        secret=body.get("secret"),
    )
    return await _dispatch(request, delivery, wait=bool(body.get("wait")))


async def _dispatch(request: Request, delivery: dict[str, Any], *, wait: bool) -> JSONResponse:
    state = _state(request)
    state.deliveries.append(delivery)
    run = webhooks.deliver(request.app.state.http, state.config, delivery)
    if wait:
        await run
        return JSONResponse(webhooks.public(delivery))
    task = asyncio.create_task(run)
    tasks: set[asyncio.Task[None]] = request.app.state.tasks
    tasks.add(task)
    task.add_done_callback(tasks.discard)
    return JSONResponse(webhooks.public(delivery), status_code=202)


async def uninstall(request: Request) -> JSONResponse:
    state = _state(request)
    domain = request.path_params["domain"]
    if domain not in state.shops:
        return JSONResponse({"error": "Unknown shop"}, status_code=404)
    state.uninstall(domain)
    payload = {"id": 1, "name": domain.split(".")[0], "domain": domain, "myshopify_domain": domain}
    delivery = webhooks.new_delivery(state.config, "app/uninstalled", domain, payload)
    return await _dispatch(request, delivery, wait=True)


async def deliveries(request: Request) -> JSONResponse:
    return JSONResponse([webhooks.public(d) for d in _state(request).deliveries])
