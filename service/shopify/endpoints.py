"""Where a shop's Shopify endpoints are: `https://{shop}`, or SHOPIFY_ADMIN_URL when set.

SHOPIFY_ADMIN_URL points every shop at one host (the local emulator in dev and tests);
such a host cannot tell shops apart by name, so the OAuth authorize URL then also carries
`shop` (tokens already identify the shop for API calls).
"""

from __future__ import annotations

from urllib.parse import urlencode

from service.core.settings import Settings


def admin_base(settings: Settings, shop: str) -> str:
    return settings.shopify_admin_url or f"https://{shop}"


def graphql_url(settings: Settings, shop: str) -> str:
    return f"{admin_base(settings, shop)}/admin/api/{settings.shopify_api_version}/graphql.json"


def access_token_url(settings: Settings, shop: str) -> str:
    return f"{admin_base(settings, shop)}/admin/oauth/access_token"


def authorize_url(settings: Settings, shop: str, state: str) -> str:
    params = {
        "client_id": settings.shopify_api_key,
        "scope": settings.shopify_scopes,
        "redirect_uri": f"{settings.shopify_app_url}/auth/callback",
        "state": state,
    }
    if settings.shopify_admin_url:
        params["shop"] = shop
    return f"{admin_base(settings, shop)}/admin/oauth/authorize?{urlencode(params)}"


def app_home_url(settings: Settings, shop: str) -> str:
    """The app inside the shop's admin, where a merchant lands after installing."""
    return f"{admin_base(settings, shop)}/admin/apps/{settings.shopify_api_key}"
