"""The merchant's page inside the Shopify admin: GET /app (and its script, /app/app.js).

Shopify loads the app's home in an iframe of the admin, as
`/app?shop=NAME.myshopify.com&host=...&embedded=1&id_token=...`. The page itself holds no
data: it loads App Bridge (first, synchronously, as Shopify requires), which gives it session
tokens, and everything it shows comes from /api (service/web/merchant_api.py) with one of them.
So the page only needs a well-formed shop, for its frame-ancestors policy: only that shop's
admin (and admin.shopify.com, or the emulator's admin in dev) may frame it.
"""

from __future__ import annotations

from pathlib import Path

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from service.shopify import shop_domain
from service.web.errors import ApiError
from service.web.state import web_state

TEMPLATES = Path(__file__).parent / "templates" / "embedded"
_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True, undefined=jinja2.StrictUndefined
)
SCRIPT = (TEMPLATES / "app.js").read_bytes()


def frame_ancestors(shop: str, admin_url: str | None) -> str:
    """Who may frame the page: the shop's own admin, Shopify's unified admin, and the admin
    that SHOPIFY_ADMIN_URL points at (the emulator) when set."""
    sources = [f"https://{shop}", "https://admin.shopify.com"]
    if admin_url:
        sources.append(admin_url)
    return "frame-ancestors " + " ".join(sources)


# The admin's lists whose selection the bulk action link opens (service/web/bulk_actions.py).
BULK_PAGES = {"products": "product", "orders": "order"}


async def page(request: Request) -> Response:
    settings = web_state(request).settings
    bulk = request.path_params.get("resource")
    if bulk is not None and bulk not in BULK_PAGES:
        raise ApiError(404, "No bulk action for this list")
    try:
        shop = shop_domain.normalize(request.query_params.get("shop", ""))
    except ValueError:
        raise ApiError(400, "Invalid shop domain: expected NAME.myshopify.com") from None
    html = _ENV.get_template("app.html").render(
        api_key=settings.shopify_api_key,
        app_bridge_url=settings.app_bridge_url,
        shop=shop,
        bulk_resource=BULK_PAGES.get(bulk or "", ""),
    )
    return HTMLResponse(
        html,
        headers={
            "Content-Security-Policy": frame_ancestors(shop, settings.shopify_admin_url),
            "Cache-Control": "no-store",
        },
    )


async def script(request: Request) -> Response:
    return Response(
        SCRIPT,
        media_type="text/javascript",
        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
    )


routes = [
    Route("/app", page, methods=["GET"]),
    Route("/app/app.js", script, methods=["GET"]),
    # The admin link on the product and order lists' selection: the same page, with the ids.
    Route("/app/bulk/{resource}", page, methods=["GET"]),
    # Its path before "admin" came to mean only Shopify's Admin API; kept for pages still open.
    Route("/app/admin.js", script, methods=["GET"]),
]
