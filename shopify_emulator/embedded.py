"""The admin side of an embedded app: session tokens, the token-exchange grant, the admin page.

- GET  /admin/apps/{api_key}?shop=&user=   the shop's admin with the app's /app in an iframe.
  Opening it installs the app on the shop (Shopify-managed installation: no OAuth redirect).
- GET  /cdn/shopifycloud/app-bridge.js     a stand-in for App Bridge, loaded by the app's page
  when APP_BRIDGE_URL points here: `shopify.idToken()` asks the admin page (its parent window,
  by postMessage) for a fresh session token.
- POST /_emulator/id-token {"shop", "user"?} a session token (emulator-only; the admin page and
  the tests use it).
- token exchange: `oauth.access_token` hands `grant_type=...token-exchange` to `exchange` here:
  an offline token (expiring or not), or an online one for the token's staff member (24 hours,
  `associated_user` and `associated_user_scope`, as Shopify answers).

Session tokens are HS256 JWTs signed with the app's secret, built here by hand (not with the
app's library) so that the app's verification is checked against an independent signer. They
live SESSION_TOKEN_SECONDS, like Shopify's.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import secrets
import time
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from shopify_emulator.config import EmulatorConfig
from shopify_emulator.state import EmulatorState, request_shop

SESSION_TOKEN_SECONDS = 60
TOKEN_EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
ID_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:id_token"
OFFLINE_TOKEN_TYPE = "urn:shopify:params:oauth:token-type:offline-access-token"
ONLINE_TOKEN_TYPE = "urn:shopify:params:oauth:token-type:online-access-token"
DEFAULT_STAFF_USER = "42"
# The admin's product list, as far as the emulated admin shows it (its selection's bulk action).
PRODUCT_LIST_SIZE = 20


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(claims: dict[str, Any], secret: str, header: dict[str, Any] | None = None) -> str:
    """A JWT of `claims`, HS256-signed with `secret` (tests pass odd headers to forge ones)."""
    head = _b64(json.dumps(header or {"alg": "HS256", "typ": "JWT"}).encode())
    body = _b64(json.dumps(claims).encode())
    mac = hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(mac)}"


def session_claims(config: EmulatorConfig, shop: str, user: str, now: float) -> dict[str, Any]:
    issued = int(now)
    return {
        "iss": f"https://{shop}/admin",
        "dest": f"https://{shop}",
        "aud": config.api_key,
        "sub": user,
        "exp": issued + SESSION_TOKEN_SECONDS,
        "nbf": issued,
        "iat": issued,
        "jti": secrets.token_hex(16),
        "sid": secrets.token_hex(16),
    }


def session_token(config: EmulatorConfig, shop: str, user: str, now: float) -> str:
    return sign(session_claims(config, shop, user, now), config.api_secret)


def token_claims(token: str, config: EmulatorConfig, now: float) -> dict[str, Any] | None:
    """The claims of a session token Shopify itself would accept back, else None."""
    try:
        head, body, mac = token.split(".")
        header = json.loads(_unb64(head))
        claims = json.loads(_unb64(body))
        expected = hmac.new(
            config.api_secret.encode(), f"{head}.{body}".encode(), hashlib.sha256
        ).digest()
        good = (
            header.get("alg") == "HS256"
            and hmac.compare_digest(expected, _unb64(mac))
            and claims.get("aud") == config.api_key
            and float(claims.get("exp", 0)) > now
            and str(claims.get("dest", "")).startswith("https://")
        )
    except (ValueError, TypeError, AttributeError):
        return None
    return claims if good and isinstance(claims, dict) else None


def exchange(state: EmulatorState, params: dict[str, Any], now: float) -> JSONResponse:
    """The token-exchange grant: a session token for an offline or online token of its shop."""
    if params.get("subject_token_type") != ID_TOKEN_TYPE:
        return _grant_error("invalid_request", "subject_token_type must be an id_token")
    wanted = params.get("requested_token_type")
    if wanted not in (OFFLINE_TOKEN_TYPE, ONLINE_TOKEN_TYPE):
        return _grant_error("invalid_request", "requested_token_type is not supported")
    claims = token_claims(str(params.get("subject_token", "")), state.config, now)
    if claims is None:
        return _grant_error("invalid_subject_token", "The session token is not valid")
    shop = str(claims["dest"]).removeprefix("https://")
    known = state.shops.get(shop)
    if known is None or not known.installed:
        return _grant_error("invalid_subject_token", "The app is not installed on this shop")
    known.counters["token_exchanges"] = known.counters.get("token_exchanges", 0) + 1
    if not known.scopes:
        known.scopes = state.config.scopes
    if wanted == ONLINE_TOKEN_TYPE:
        return JSONResponse(state.issue_online_token(shop, str(claims.get("sub", "")), now))
    expiring = str(params.get("expiring", "0")).lower() in ("1", "true")
    return JSONResponse(state.issue_tokens(shop, now, expiring=expiring))


def _grant_error(code: str, description: str) -> JSONResponse:
    return JSONResponse({"error": code, "error_description": description}, status_code=400)


def _staff_user(request: Request) -> str:
    user = request.query_params.get("user") or DEFAULT_STAFF_USER
    return user if user.isdigit() and len(user) <= 20 else DEFAULT_STAFF_USER


async def admin_page(request: Request) -> Response:
    """The shop's admin with the app embedded; opening it installs the app (managed install)."""
    state: EmulatorState = request.app.state.emulator
    config = state.config
    if request.path_params["api_key"] != config.api_key:
        return HTMLResponse("<h1>App not found</h1>", status_code=404)
    shop = request_shop(request, state)
    if shop is None:
        return HTMLResponse("<h1>No shop</h1>", status_code=404)
    installed = state.shop(shop)
    installed.installed = True
    installed.scopes = installed.scopes or config.scopes
    user = _staff_user(request)
    now = time.time()
    host = _b64(f"admin.shopify.com/store/{shop.split('.')[0]}".encode())
    query = urlencode(
        {
            "embedded": "1",
            "host": host,
            "id_token": session_token(config, shop, user, now),
            "shop": shop,
            "timestamp": str(int(now)),
        }
    )
    src = f"{config.app_url}/app?{query}"
    products = [state.catalogue[key] for key in sorted(state.catalogue)][:PRODUCT_LIST_SIZE]
    rows = "".join(
        f'<label class="row"><input type="checkbox" name="product" value="{p.id}"> '
        f"{html.escape(p.title)}</label>"
        for p in products
    )
    page = ADMIN_PAGE.format(
        products=rows,
        bulk_base=json.dumps(f"{config.app_url}/app/bulk/products?{query}"),
        shop=html.escape(shop),
        user=html.escape(user),
        src=html.escape(src),
        app_origin=json.dumps(config.app_url),
        shop_json=json.dumps(shop),
        user_json=json.dumps(user),
    )
    return HTMLResponse(page)


async def id_token(request: Request) -> JSONResponse:
    state: EmulatorState = request.app.state.emulator
    try:
        body = await request.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or not isinstance(body.get("shop"), str):
        return JSONResponse({"error": "shop is required"}, status_code=400)
    known = state.shops.get(body["shop"])
    if known is None or not known.installed:
        return JSONResponse({"error": "The app is not installed on this shop"}, status_code=404)
    user = str(body.get("user") or DEFAULT_STAFF_USER)
    token = session_token(state.config, body["shop"], user, time.time())
    known.counters["id_tokens"] = known.counters.get("id_tokens", 0) + 1
    return JSONResponse({"token": token})


async def app_bridge(request: Request) -> Response:
    origin = f"{request.url.scheme}://{request.url.netloc}"
    script = APP_BRIDGE.replace("__ADMIN_ORIGIN__", json.dumps(origin))
    return Response(script, media_type="text/javascript", headers={"Cache-Control": "no-cache"})


# App Bridge's `shopify` global, as far as the app's page uses it: idToken() by asking the
# admin (the parent window) over postMessage, which answers only its own iframe.
APP_BRIDGE = """// Shopify emulator: a stand-in for https://cdn.shopify.com/shopifycloud/app-bridge.js
(function () {
  "use strict";
  var admin = __ADMIN_ORIGIN__;
  var next = 0, waiting = {};
  window.addEventListener("message", function (event) {
    var data = event.data || {};
    if (event.origin !== admin || data.type !== "emulator:id-token" || !waiting[data.id]) return;
    var pending = waiting[data.id];
    delete waiting[data.id];
    if (data.token) pending.resolve(data.token); else pending.reject(new Error(data.error));
  });
  var meta = document.querySelector('meta[name="shopify-api-key"]');
  window.shopify = {
    config: { apiKey: meta ? meta.content : null,
              shop: new URLSearchParams(location.search).get("shop") },
    idToken: function () {
      return new Promise(function (resolve, reject) {
        var id = ++next;
        waiting[id] = { resolve: resolve, reject: reject };
        window.parent.postMessage({ type: "emulator:id-token-request", id: id }, admin);
      });
    },
  };
})();
"""

ADMIN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{shop} · Shopify admin (emulated)</title>
<style>
  body {{ margin: 0; font: 13px -apple-system, "Segoe UI", Roboto, sans-serif;
         background: #1a1a1a; }}
  header {{ height: 56px; display: flex; align-items: center; gap: 12px; padding: 0 16px;
           color: #e3e3e3; }}
  header b {{ color: #fff; }}
  .frame {{ background: #f1f1f1; border-radius: 12px 12px 0 0; height: calc(100vh - 56px);
           overflow: hidden; }}
  iframe {{ border: 0; width: 100%; height: 100%; display: block; }}
  header button {{ font: inherit; border-radius: 8px; padding: 4px 10px; border: 0; }}
  #products {{ position: absolute; top: 56px; left: 16px; width: 320px; max-height: 70vh;
              overflow: auto; background: #fff; border-radius: 12px; padding: 12px;
              box-shadow: 0 4px 20px rgba(0,0,0,.3); }}
  #products .row {{ display: block; padding: 4px 0; }}
</style></head>
<body>
<header><b>Shopify admin (emulated)</b><span>{shop}</span>
  <button type="button" id="open-products">Products</button>
  <span style="margin-left:auto">staff user {user}</span></header>
<section id="products" aria-label="Products" hidden>
  <form id="product-list">{products}</form>
  <p><button type="button" id="bulk-action" hidden>Run a background job</button></p>
</section>
<div class="frame"><iframe id="app" title="App" src="{src}"></iframe></div>
<script>
  const appOrigin = {app_origin}, shop = {shop_json}, user = {user_json};
  const bulkBase = {bulk_base};
  const frame = document.getElementById("app");
  // The product list's selection and its bulk action: the app's admin link
  // (admin.product-index.selection-link) opens the app's page with the selected ids.
  const panel = document.getElementById("products"), run = document.getElementById("bulk-action");
  document.getElementById("open-products").addEventListener("click", () => {{
    panel.hidden = !panel.hidden;
  }});
  const selected = () => [...document.querySelectorAll("#product-list input:checked")]
    .map((box) => box.value);
  document.getElementById("product-list").addEventListener("change", () => {{
    run.hidden = selected().length === 0;
  }});
  run.addEventListener("click", () => {{
    const ids = selected().map((id) => "ids%5B%5D=" + encodeURIComponent(id)).join("&");
    frame.src = bulkBase + "&" + ids;
    panel.hidden = true;
  }});
  window.addEventListener("message", async (event) => {{
    const data = event.data || {{}};
    if (event.source !== frame.contentWindow || event.origin !== appOrigin) return;
    if (data.type !== "emulator:id-token-request") return;
    let answer = {{ type: "emulator:id-token", id: data.id }};
    try {{
      const reply = await fetch("/_emulator/id-token", {{
        method: "POST", headers: {{ "Content-Type": "application/json" }},
        body: JSON.stringify({{ shop, user }}) }});
      const body = await reply.json();
      answer = reply.ok ? {{ ...answer, token: body.token }} : {{ ...answer, error: body.error }};
    }} catch (error) {{ answer.error = String(error); }}
    frame.contentWindow.postMessage(answer, appOrigin);
  }});
</script>
</body></html>
"""
