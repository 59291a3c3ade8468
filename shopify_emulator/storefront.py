"""The storefront side: Shopify's app proxy and who is shopping (the page is in theme.py).

`/apps/{subpath}/...` is forwarded to the app's proxy URL with the query parameters Shopify
adds (`shop`, `logged_in_customer_id`, `path_prefix`, `timestamp`, `signature`); the method,
body and ordinary headers pass through, cookies do not (Shopify strips them). Who is
shopping is chosen per request: the `X-Emulator-Shop` / `X-Emulator-Customer` headers, else
the `emulator_shop` / `emulator_customer` cookies (set by /_emulator/login), else the first
shop and an anonymous visitor.
"""

from __future__ import annotations

import logging
import time

import httpx
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from service.shopify.proxy_url import signed_query
from shopify_emulator.state import EmulatorState

ADDED_BY_SHOPIFY = {"shop", "logged_in_customer_id", "path_prefix", "timestamp", "signature"}
NOT_FORWARDED = {
    "host",
    "cookie",
    "content-length",
    "connection",
    "transfer-encoding",
    "accept-encoding",
    "x-emulator-shop",
    "x-emulator-customer",
}
RESPONSE_HEADERS = {"content-type", "cache-control", "retry-after", "location"}

logger = logging.getLogger("shopify_emulator")


def visitor(request: Request, state: EmulatorState) -> tuple[str | None, str]:
    shop = request.headers.get("x-emulator-shop") or request.cookies.get("emulator_shop")
    if not shop:
        shop = next(iter(state.shops), None)
    customer = request.headers.get("x-emulator-customer")
    if customer is None:
        customer = request.cookies.get("emulator_customer", "")
    return shop, customer


async def app_proxy(request: Request) -> Response:
    state: EmulatorState = request.app.state.emulator
    config = state.config
    subpath = request.path_params["subpath"]
    if subpath != config.proxy_subpath:
        return HTMLResponse("<h1>404 Page Not Found</h1>", status_code=404)
    shop, customer = visitor(request, state)
    if shop is None:
        return HTMLResponse("<h1>No shop</h1>", status_code=404)
    extra = [(k, v) for k, v in request.query_params.multi_items() if k not in ADDED_BY_SHOPIFY]
    query = signed_query(
        extra,
        shop=shop,
        secret=config.api_secret,
        timestamp=int(time.time()),
        customer_id=customer,
        path_prefix=f"/apps/{subpath}",
    )
    rest = request.path_params.get("rest", "")
    target = f"{config.app_proxy_url}/{rest}" if rest else config.app_proxy_url
    headers = {k: v for k, v in request.headers.items() if k.lower() not in NOT_FORWARDED}
    client: httpx.AsyncClient = request.app.state.http
    try:
        answer = await client.request(
            request.method,
            target,
            params=query,
            content=await request.body(),
            headers=headers,
            timeout=config.proxy_timeout_seconds,
        )
    except httpx.TimeoutException:
        return HTMLResponse("<h1>504 Gateway Timeout</h1>", status_code=504)
    except httpx.HTTPError:
        return HTMLResponse("<h1>502 Bad Gateway</h1>", status_code=502)
    who = f"customer {customer}" if customer else "anonymous"
    logger.info(
        "app proxy %s %s (%s, %s) -> %d",
        request.method,
        request.url.path,
        shop,
        who,
        answer.status_code,
    )
    kept = {k: v for k, v in answer.headers.items() if k.lower() in RESPONSE_HEADERS}
    return Response(answer.content, status_code=answer.status_code, headers=kept)


async def login(request: Request) -> Response:
    """Act as a customer (or anonymous with an empty id) of a shop: sets the two cookies."""
    state: EmulatorState = request.app.state.emulator
    response = RedirectResponse("/", status_code=303)
    customer = request.query_params.get("customer", "")
    response.set_cookie("emulator_customer", customer, httponly=True, samesite="lax")
    shop = request.query_params.get("shop")
    if shop and shop in state.shops:
        response.set_cookie("emulator_shop", shop, httponly=True, samesite="lax")
    return response
