"""The OAuth install flow, end to end against the emulator, and what it refuses."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
from arq.connections import ArqRedis
from databases import Database

from service import store
from service.app import create_app
from service.core.settings import Settings
from service.shopify import oauth
from service.shopify.admin import AdminClient
from service.shopify.signatures import oauth_hmac
from tests.support.config import TEST_API_KEY, TEST_SECRET
from tests.support.jobs import shop_with_tokens
from tests.support.net import free_port

NEW_SHOP = "new-shop.myshopify.com"


@pytest.fixture
def installable(settings: Settings, database: Database, redis: ArqRedis, emulator, serve):
    """The app served over HTTP and an emulated Shopify that knows the app's URL."""
    port = free_port()
    app_url = f"http://127.0.0.1:{port}"
    shopify = emulator(app_url=app_url)
    configured = settings.model_copy(
        update={"shopify_admin_url": shopify.url, "shopify_app_url": app_url}
    )
    app = serve(create_app(configured), port=port)
    return app, shopify, configured


async def _to_callback(browser: httpx.AsyncClient, app_url: str, shop: str) -> httpx.URL:
    """Follow /auth to Shopify's authorize page; return the callback URL Shopify sends back."""
    started = await browser.get(f"{app_url}/auth", params={"shop": shop})
    assert started.status_code == 302
    authorized = await browser.get(started.headers["location"])
    assert authorized.status_code == 302
    return httpx.URL(authorized.headers["location"])


def test_state_cookie_binds_nonce_shop_and_time() -> None:
    nonce, cookie = oauth.new_state(NEW_SHOP, "s3cret", now=1000)
    assert oauth.check_state(cookie, nonce, NEW_SHOP, "s3cret", now=1100)
    assert not oauth.check_state(cookie, nonce, "other.myshopify.com", "s3cret", now=1100)
    assert not oauth.check_state(cookie, "other-nonce", NEW_SHOP, "s3cret", now=1100)
    assert not oauth.check_state(cookie, "nonce-é", NEW_SHOP, "s3cret", now=1100)  # no TypeError
    assert not oauth.check_state(cookie, nonce, NEW_SHOP, "other-secret", now=1100)
    assert not oauth.check_state(cookie, nonce, NEW_SHOP, "s3cret", now=1000 + 601)
    assert not oauth.check_state(
        cookie.replace(NEW_SHOP, "x.myshopify.com"), nonce, "x.myshopify.com", "s3cret", 1100
    )
    assert not oauth.check_state(None, nonce, NEW_SHOP, "s3cret", now=1100)


async def test_install_round_trip_stores_a_working_expiring_token(
    installable, database: Database, redis: ArqRedis
) -> None:
    app, shopify, configured = installable
    async with httpx.AsyncClient(follow_redirects=True) as browser:
        landed = await browser.get(f"{app.url}/auth", params={"shop": NEW_SHOP})
    assert landed.status_code == 200
    assert str(landed.url) == f"{shopify.url}/admin/apps/{TEST_API_KEY}"
    hops = [str(r.url).split("?")[0] for r in landed.history]
    assert hops == [
        f"{app.url}/auth",
        f"{shopify.url}/admin/oauth/authorize",
        f"{app.url}/auth/callback",
    ]

    stored = await store.get_shop(database, NEW_SHOP, tokens=True)
    assert stored is not None and stored.access_token and stored.refresh_token
    assert stored.access_token.startswith("fernet:") and stored.refresh_token.startswith("fernet:")
    shop = await shop_with_tokens(database, NEW_SHOP)
    assert shop is not None and shop.installed and shop.scopes == configured.shopify_scopes
    assert shop.access_token and shop.access_token.startswith("shpat_")
    assert shop.refresh_token and shop.token_expires_at and shop.refresh_token_expires_at
    in_an_hour = datetime.now(UTC) + timedelta(hours=1)
    assert abs((shop.token_expires_at - in_an_hour).total_seconds()) < 60
    assert shop.access_token not in repr(shop)

    client = AdminClient(configured, database, redis)
    try:
        data = await client.admin_for(NEW_SHOP).graphql("{ shop { myshopifyDomain } }")
    finally:
        await client.aclose()
    assert data == {"shop": {"myshopifyDomain": NEW_SHOP}}


async def test_malformed_shop_is_refused(installable) -> None:
    app, _, _ = installable
    async with httpx.AsyncClient() as browser:
        for bad in ("evil.com", "https://evil.com/x.myshopify.com", "", "a_b.myshopify.com"):
            answer = await browser.get(f"{app.url}/auth", params={"shop": bad})
            assert answer.status_code == 400 and "error" in answer.json()
        callback = await _to_callback(browser, app.url, NEW_SHOP)
        forged = callback.copy_set_param("shop", "evil.example.com")
        answer = await browser.get(forged)
    assert answer.status_code == 400


async def test_bad_hmac_is_refused(installable, database: Database) -> None:
    app, _, _ = installable
    async with httpx.AsyncClient() as browser:
        callback = await _to_callback(browser, app.url, NEW_SHOP)
        tampered = await browser.get(callback.copy_set_param("timestamp", "1"))
        unsigned = await browser.get(callback.copy_remove_param("hmac"))
        wrong = await browser.get(callback.copy_set_param("hmac", "0" * 64))
    assert tampered.status_code == unsigned.status_code == wrong.status_code == 401
    assert await store.get_shop(database, NEW_SHOP) is None


async def test_bad_state_is_refused(installable, database: Database) -> None:
    app, _, _ = installable
    async with httpx.AsyncClient() as browser:
        first = await _to_callback(browser, app.url, NEW_SHOP)
        second = await _to_callback(browser, app.url, NEW_SHOP)  # replaces the state cookie
        stale = await browser.get(first)
    async with httpx.AsyncClient() as other_browser:  # no state cookie at all
        stolen = await other_browser.get(second)
    assert stale.status_code == 403 and stolen.status_code == 403
    assert stale.json() == {"error": "Invalid state"}
    assert await store.get_shop(database, NEW_SHOP) is None


async def test_a_code_cannot_be_used_twice(installable, database: Database) -> None:
    app, _, _ = installable
    async with httpx.AsyncClient() as browser:
        callback = await _to_callback(browser, app.url, NEW_SHOP)
        cookies = dict(browser.cookies)
        first = await browser.get(callback)
        browser.cookies.update(cookies)  # even with the state cookie put back
        replay = await browser.get(callback)
    assert first.status_code == 302 and replay.status_code == 400


def test_callback_checks_are_pure() -> None:
    nonce, cookie = oauth.new_state(NEW_SHOP, TEST_SECRET, now=5000)
    params = {"code": "c", "shop": NEW_SHOP, "state": nonce, "timestamp": "5000"}
    params["hmac"] = oauth_hmac(params, TEST_SECRET)
    assert oauth.verify_callback(params, cookie, TEST_SECRET, now=5010) == (NEW_SHOP, "c")
    with pytest.raises(oauth.OAuthError) as stale:
        oauth.verify_callback(params, cookie, TEST_SECRET, now=5000 + 3600)
    assert stale.value.status == 401
