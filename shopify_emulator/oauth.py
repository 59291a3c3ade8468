"""Shopify's OAuth endpoints: the merchant's consent (auto-approved) and the token exchange.

GET /admin/oauth/authorize redirects back to the app's `redirect_uri` with `code`, `hmac`,
`host`, `shop`, `state` and `timestamp`, signed as Shopify signs them (sorted `key=value`
pairs joined by `&`, hex HMAC-SHA256 with the app's secret; computed here independently of
the app's code so a round trip really checks it). POST /admin/oauth/access_token trades a
code, or a refresh token, for an offline token; `expiring=1` asks for an expiring one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Any
from urllib.parse import parse_qsl, urlencode

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from shopify_emulator import embedded
from shopify_emulator.state import EmulatorState, request_shop


def callback_hmac(params: dict[str, str], secret: str) -> str:
    message = "&".join(f"{key}={params[key]}" for key in sorted(params))
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


def _refuse(message: str) -> HTMLResponse:
    return HTMLResponse(f"<h1>Oauth error invalid_request</h1><p>{message}</p>", status_code=400)


async def authorize(request: Request) -> Response:
    state: EmulatorState = request.app.state.emulator
    config = state.config
    query = request.query_params
    shop = request_shop(request, state)
    if shop is None:
        return _refuse("Unknown shop")
    if query.get("client_id") != config.api_key:
        return _refuse("The client_id provided is invalid")
    redirect_uri = query.get("redirect_uri", "")
    if not redirect_uri.startswith(config.app_url + "/"):
        return _refuse("The redirect_uri is not whitelisted")
    if not query.get("state"):
        return _refuse("A state parameter is required")
    now = time.time()
    state.shop(shop).scopes = query.get("scope", "")
    host = base64.urlsafe_b64encode(f"admin.shopify.com/store/{shop.split('.')[0]}".encode())
    params = {
        "code": state.issue_code(shop, query.get("scope", ""), now),
        "host": host.decode().rstrip("="),
        "shop": shop,
        "state": query["state"],
        "timestamp": str(int(now)),
    }
    params["hmac"] = callback_hmac(params, config.api_secret)
    return RedirectResponse(f"{redirect_uri}?{urlencode(params)}", status_code=302)


async def _form(request: Request) -> dict[str, Any]:
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            body = await request.json()
        except ValueError:
            return {}
        return body if isinstance(body, dict) else {}
    return dict(parse_qsl((await request.body()).decode(errors="replace")))


async def access_token(request: Request) -> JSONResponse:
    state: EmulatorState = request.app.state.emulator
    config = state.config
    params = await _form(request)
    if params.get("client_id") != config.api_key or not hmac.compare_digest(
        str(params.get("client_secret", "")).encode(), config.api_secret.encode()
    ):
        return JSONResponse(
            {"error": "invalid_client", "error_description": "Client credentials are invalid"},
            status_code=401,
        )
    now = time.time()
    if params.get("grant_type") == embedded.TOKEN_EXCHANGE_GRANT:
        return embedded.exchange(state, params, now)
    if params.get("grant_type") == "refresh_token":
        shop = state.redeem_refresh_token(str(params.get("refresh_token", "")), now)
        if shop is None:
            return JSONResponse(
                {"error": "invalid_grant", "error_description": "Refresh token is invalid"},
                status_code=400,
            )
        return JSONResponse(state.issue_tokens(shop, now, expiring=True))
    grant = state.redeem_code(str(params.get("code", "")), now)
    if grant is None:
        return JSONResponse(
            {
                "error": "invalid_request",
                "error_description": "The authorization code was not found or was already used",
            },
            status_code=400,
        )
    expiring = str(params.get("expiring", "0")).lower() in ("1", "true")
    return JSONResponse(state.issue_tokens(grant.shop, now, expiring=expiring))
