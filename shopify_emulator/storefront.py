"""The storefront side: Shopify's app proxy, plus a tiny shop page to try it in a browser.

`/apps/{subpath}/...` is forwarded to the app's proxy URL with the query parameters Shopify
adds (`shop`, `logged_in_customer_id`, `path_prefix`, `timestamp`, `signature`); the method,
body and ordinary headers pass through, cookies do not (Shopify strips them). Who is
shopping is chosen per request: the `X-Emulator-Shop` / `X-Emulator-Customer` headers, else
the `emulator_shop` / `emulator_customer` cookies (set by /_emulator/login), else the first
shop and an anonymous visitor.
"""

from __future__ import annotations

import html
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


PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{shop} (Shopify emulator)</title>
<style>body{{font:15px system-ui;margin:2rem;max-width:52rem}} td{{padding:.2rem .6rem}}
pre{{background:#f4f4f4;padding:.6rem;white-space:pre-wrap}}</style></head>
<body><h1>{shop}</h1>
<p>Customer: <b>{customer}</b> &middot;
<a href="/_emulator/login?customer=1001">log in as 1001</a> &middot;
<a href="/_emulator/login?customer=1002">as 1002</a> &middot;
<a href="/_emulator/login?customer=">log out</a></p>
<p>Every button goes through the app proxy <code>/apps/{subpath}</code>, exactly like theme
JavaScript on a real storefront: it queues a <code>product_summary</code> job and polls it.</p>
<table>{rows}</table><pre id="out">No job yet.</pre>
<script>
const out = document.getElementById("out");
async function summarise(gid) {{
  const res = await fetch("/apps/{subpath}/process", {{method: "POST",
    headers: {{"Content-Type": "application/json"}},
    body: JSON.stringify({{type: "product_summary", input: {{product_id: gid}}}})}});
  let body = await res.json();
  out.textContent = JSON.stringify(body, null, 2);
  if (!res.ok) return;
  const id = body.jobId;
  while (!["completed", "failed"].includes(body.status)) {{
    await new Promise(r => setTimeout(r, 500));
    body = await (await fetch("/apps/{subpath}/status?jobId=" + id)).json();
    out.textContent = JSON.stringify(body, null, 2);
    if (body.error && !body.status) return;
  }}
}}
</script></body></html>"""


async def home(request: Request) -> HTMLResponse:
    state: EmulatorState = request.app.state.emulator
    shop, customer = visitor(request, state)
    rows = "".join(
        f"<tr><td>{html.escape(p.title)}</td><td>{len(p.variants)} variants</td>"
        f"<td><button onclick=\"summarise('{p.gid}')\">Summarise</button></td></tr>"
        for p in state.catalogue.values()
    )
    page = PAGE.format(
        shop=html.escape(shop or "no shop"),
        customer=html.escape(customer or "anonymous"),
        subpath=html.escape(state.config.proxy_subpath),
        rows=rows,
    )
    return HTMLResponse(page)
