"""The OAuth install flow's endpoints: GET /auth?shop= and GET /auth/callback.

/auth sends the merchant to the shop's authorize page with a fresh state nonce (remembered
in a short-lived cookie signed with the app's secret); /auth/callback checks the callback
(`service/shopify/oauth.py`), exchanges the code for an offline token, stores it, and sends
the merchant on to the app inside their admin. Refusals are ApiErrors, answered as JSON: 400
for a malformed shop or request, 401 for a bad hmac, 403 for a state that is not ours, 503
when Postgres is down.
"""

from __future__ import annotations

import logging
import time

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from service import store
from service.shopify import endpoints, oauth, shop_domain
from service.web.errors import ApiError
from service.web.state import web_state

logger = logging.getLogger("shopjobs.web")


async def auth(request: Request) -> Response:
    settings = web_state(request).settings
    try:
        shop = shop_domain.normalize(request.query_params.get("shop", ""))
    except ValueError:
        raise ApiError(400, "Invalid shop domain: expected NAME.myshopify.com") from None
    secret = settings.shopify_api_secret.get_secret_value()
    nonce, cookie = oauth.new_state(shop, secret, time.time())
    response = RedirectResponse(endpoints.authorize_url(settings, shop, nonce), status_code=302)
    response.set_cookie(
        oauth.STATE_COOKIE,
        cookie,
        max_age=oauth.STATE_MAX_AGE_SECONDS,
        path="/auth",
        httponly=True,
        secure=settings.shopify_app_url.startswith("https://"),
        samesite="lax",  # sent on the top-level redirect back from Shopify
    )
    return response


async def callback(request: Request) -> Response:
    state = web_state(request)
    settings = state.settings
    pairs = request.query_params.multi_items()
    if len({key for key, _ in pairs}) != len(pairs):
        raise ApiError(400, "Repeated query parameter")
    secret = settings.shopify_api_secret.get_secret_value()
    try:
        shop, code = oauth.verify_callback(
            dict(pairs), request.cookies.get(oauth.STATE_COOKIE), secret, time.time()
        )
        grant = await oauth.exchange_code(state.http, settings, shop, code)
    except oauth.OAuthError as exc:
        logger.warning("install refused: %s", exc)
        if exc.status == 401:  # a bad hmac or a stale timestamp
            state.metrics.rejected_signature("oauth")
        raise ApiError(exc.status, str(exc)) from None
    await store.upsert_shop(
        state.database,
        shop,
        state.settings.token_cipher.encrypt(grant.access_token),
        grant.scopes,
        token_expires_at=grant.expires_at,
        refresh_token=state.settings.token_cipher.encrypt_optional(grant.refresh_token),
        refresh_token_expires_at=grant.refresh_token_expires_at,
    )
    state.shops.forget(shop)
    logger.info("shop %s installed (scopes: %s)", shop, grant.scopes or "none")
    response = RedirectResponse(endpoints.app_home_url(settings, shop), status_code=302)
    response.delete_cookie(oauth.STATE_COOKIE, path="/auth")
    return response


routes = [
    Route("/auth", auth, methods=["GET"]),
    Route("/auth/callback", callback, methods=["GET"]),
]
