"""The local Shopify emulator behaves like Shopify where the app depends on it."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
from graphql import FragmentDefinitionNode, get_operation_ast, parse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from service.shopify.signatures import verify_app_proxy, verify_oauth_hmac, verify_webhook
from shopify_emulator import EmulatorConfig, create_app
from shopify_emulator.admin_schema import SCHEMA
from shopify_emulator.bucket import LeakyBucket
from shopify_emulator.query_cost import actual_cost, requested_cost
from tests.support.config import TEST_API_KEY, TEST_SECRET
from tests.support.net import free_port, wait_for_http

SHOP = "emu-shop.myshopify.com"
TOKEN = "shpat_emulator_test"
PRODUCT_QUERY = """
query Product($id: ID!, $first: Int!, $after: String) {
  product(id: $id) {
    id title
    variants(first: $first, after: $after) {
      edges { node { id price inventoryQuantity } }
      pageInfo { hasNextPage endCursor }
    }
  }
}
"""


def test_leaky_bucket_restores_at_its_rate_and_refuses_what_it_lacks() -> None:
    bucket = LeakyBucket.full(100, 10, now=0.0)
    assert bucket.take(80, now=0.0) and bucket.level(0.0) == 20
    assert not bucket.take(50, now=1.0)  # 30 available: nothing is taken
    assert bucket.level(1.0) == 30
    assert bucket.take(50, now=3.0)  # restored to 50
    bucket.give_back(20, now=3.0)
    assert bucket.level(3.0) == 20 and bucket.level(100.0) == 100


def test_query_cost_follows_shopifys_rules() -> None:
    document = parse(PRODUCT_QUERY)
    operation = get_operation_ast(document)
    assert operation is not None
    fragments: dict[str, FragmentDefinitionNode] = {}
    # product 1 + variants connection 2 + 25 variants x 1; scalars and pageInfo are free
    assert requested_cost(SCHEMA, operation, fragments, {"first": 25}) == 28
    data = {"product": {"variants": {"edges": [{"node": {}}] * 7, "pageInfo": {}}}}
    assert actual_cost(SCHEMA, operation, fragments, {"first": 25}, data) == 10
    assert actual_cost(SCHEMA, operation, fragments, {"first": 25}, {"product": None}) == 1


@asynccontextmanager
async def in_process(
    bucket_size: float, restore_rate: float, max_variants: int
) -> AsyncIterator[httpx.AsyncClient]:
    """The emulator in-process (ASGI), one shop of three products, with this bucket."""
    config = EmulatorConfig(
        app_url="http://app.test",
        api_key=TEST_API_KEY,
        api_secret=TEST_SECRET,
        shops={SHOP: TOKEN},
        bucket_size=bucket_size,
        restore_rate=restore_rate,
        products=3,
        max_variants=max_variants,
    )
    app = create_app(config)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://shopify.test") as c:
            yield c


@pytest.fixture
async def shopify() -> AsyncIterator[httpx.AsyncClient]:
    """A 60-point bucket refilled at 30/s, products of up to 23 variants."""
    async with in_process(bucket_size=60, restore_rate=30, max_variants=23) as client:
        yield client


async def _query(client: httpx.AsyncClient, variables: dict, token: str = TOKEN) -> httpx.Response:
    return await client.post(
        "/admin/api/2025-10/graphql.json",
        json={"query": PRODUCT_QUERY, "variables": variables},
        headers={"X-Shopify-Access-Token": token},
    )


async def test_pages_through_every_variant_with_costs(shopify: httpx.AsyncClient) -> None:
    products = (await shopify.get("/_emulator/products")).json()
    first = products[0]
    assert first["variants"] == 23
    seen, after = [], None
    while True:
        body = (await _query(shopify, {"id": first["id"], "first": 10, "after": after})).json()
        cost = body["extensions"]["cost"]
        assert cost["requestedQueryCost"] == 13
        connection = body["data"]["product"]["variants"]
        seen += [edge["node"]["id"] for edge in connection["edges"]]
        assert cost["actualQueryCost"] == 3 + len(connection["edges"])
        assert set(cost["throttleStatus"]) == {
            "maximumAvailable",
            "currentlyAvailable",
            "restoreRate",
        }
        if not connection["pageInfo"]["hasNextPage"]:
            break
        after = connection["pageInfo"]["endCursor"]
    assert len(seen) == len(set(seen)) == 23


async def test_unknown_token_is_401_and_unknown_product_is_null(
    shopify: httpx.AsyncClient,
) -> None:
    assert (
        await _query(shopify, {"id": "gid://shopify/Product/1", "first": 1}, "x")
    ).status_code == 401
    body = (await _query(shopify, {"id": "gid://shopify/Product/1", "first": 1})).json()
    assert body["data"] == {"product": None} and "errors" not in body
    bad = (await _query(shopify, {"id": "not-a-gid", "first": 1})).json()
    assert "Invalid global id" in bad["errors"][0]["message"]


async def test_throttled_when_the_bucket_lacks_the_cost(shopify: httpx.AsyncClient) -> None:
    gid = (await shopify.get("/_emulator/products")).json()[0]["id"]
    answers = [(await _query(shopify, {"id": gid, "first": 20})).json() for _ in range(3)]
    throttled = answers[-1]
    assert throttled["errors"][0]["extensions"]["code"] == "THROTTLED"
    assert "data" not in throttled
    status = throttled["extensions"]["cost"]["throttleStatus"]
    assert status["maximumAvailable"] == 60 and status["currentlyAvailable"] < 23
    stats = (await shopify.get("/_emulator/stats")).json()["shops"][SHOP]
    assert stats["throttled"] == 1 and stats["requests"] == 3
    too_big = (await _query(shopify, {"id": gid, "first": 100})).json()
    assert too_big["errors"][0]["extensions"]["code"] == "MAX_COST_EXCEEDED"


async def test_injected_faults(shopify: httpx.AsyncClient) -> None:
    gid = (await shopify.get("/_emulator/products")).json()[0]["id"]
    await shopify.post("/_emulator/faults", json={"kind": "429", "count": 1, "retry_after": 2})
    await shopify.post("/_emulator/faults", json={"kind": "503", "count": 1})
    await shopify.post("/_emulator/faults", json={"kind": "slow", "count": 1, "delay": 0.3})
    limited = await _query(shopify, {"id": gid, "first": 1})
    assert limited.status_code == 429 and limited.headers["retry-after"] == "2"
    assert (await _query(shopify, {"id": gid, "first": 1})).status_code == 503
    started = time.monotonic()
    slow = await _query(shopify, {"id": gid, "first": 1})
    assert slow.status_code == 200 and time.monotonic() - started >= 0.3
    assert (await _query(shopify, {"id": gid, "first": 1})).status_code == 200
    bad = await shopify.post("/_emulator/faults", json={"kind": "teapot"})
    assert bad.status_code == 400


async def test_oauth_authorize_and_token_exchange(shopify: httpx.AsyncClient) -> None:
    shop = "new-shop.myshopify.com"
    redirect = "http://app.test/auth/callback"
    answer = await shopify.get(
        "/admin/oauth/authorize",
        params={
            "client_id": TEST_API_KEY,
            "scope": "read_products",
            "redirect_uri": redirect,
            "state": "nonce-1",
            "shop": shop,
        },
    )
    assert answer.status_code == 302
    location = urlsplit(answer.headers["location"])
    params = dict(parse_qsl(location.query))
    assert f"{location.scheme}://{location.netloc}{location.path}" == redirect
    assert set(params) == {"code", "hmac", "host", "shop", "state", "timestamp"}
    assert params["shop"] == shop and params["state"] == "nonce-1"
    assert verify_oauth_hmac(params, TEST_SECRET)  # the app's check agrees with the emulator

    credentials = {"client_id": TEST_API_KEY, "client_secret": TEST_SECRET}
    grant = await shopify.post(
        "/admin/oauth/access_token", json={**credentials, "code": params["code"], "expiring": 1}
    )
    tokens = grant.json()
    assert grant.status_code == 200 and tokens["scope"] == "read_products"
    assert tokens["expires_in"] == 3600 and tokens["refresh_token"].startswith("shprt_")
    reused = await shopify.post("/admin/oauth/access_token", json={**credentials, **params})
    assert reused.status_code == 400  # a code works once
    gid = (await shopify.get("/_emulator/products")).json()[0]["id"]
    assert (
        await _query(shopify, {"id": gid, "first": 1}, tokens["access_token"])
    ).status_code == 200

    refreshed = await shopify.post(
        "/admin/oauth/access_token",
        data={
            **credentials,
            "grant_type": "refresh_token",
            "refresh_token": tokens["refresh_token"],
        },
    )
    assert refreshed.status_code == 200
    assert refreshed.json()["refresh_token"] != tokens["refresh_token"]
    again = await shopify.post(
        "/admin/oauth/access_token",
        data={
            **credentials,
            "grant_type": "refresh_token",
            "refresh_token": tokens["refresh_token"],
        },
    )
    assert again.status_code == 400  # refresh tokens rotate
    wrong = await shopify.post(
        "/admin/oauth/access_token", json={"client_id": TEST_API_KEY, "client_secret": "x"}
    )
    assert wrong.status_code == 401


async def test_oauth_authorize_refuses_a_foreign_redirect(shopify: httpx.AsyncClient) -> None:
    answer = await shopify.get(
        "/admin/oauth/authorize",
        params={
            "client_id": TEST_API_KEY,
            "redirect_uri": "http://evil.test/cb",
            "state": "s",
            "shop": SHOP,
        },
    )
    assert answer.status_code == 400


def _recorder() -> tuple[Starlette, list[dict]]:
    """A stand-in app that records what reaches it and answers as `fail` says."""
    seen: list[dict] = []
    failures = {"left": 0}

    async def record(request: Request) -> JSONResponse:
        seen.append(
            {
                "path": request.url.path,
                "method": request.method,
                "query": list(request.query_params.multi_items()),
                "headers": dict(request.headers),
                "body": await request.body(),
            }
        )
        if failures["left"]:
            failures["left"] -= 1
            return JSONResponse({"error": "boom"}, status_code=500)
        return JSONResponse({"ok": True}, headers={"Set-Cookie": "x=1"})

    app = Starlette(routes=[Route("/{path:path}", record, methods=["GET", "POST"])])
    app.state.failures = failures
    return app, seen


def test_app_proxy_gateway_signs_like_shopify(serve, emulator) -> None:
    target, seen = _recorder()
    app = serve(target)
    shopify = emulator(app_url=app.url, shops={SHOP: TOKEN})
    answer = httpx.post(
        f"{shopify.url}/apps/jobs/process?x=1&x=2&signature=forged",
        content=b'{"type": "echo"}',
        headers={"Content-Type": "application/json", "X-Emulator-Customer": "42"},
        cookies={"session": "secret"},
    )
    assert answer.status_code == 200 and answer.json() == {"ok": True}
    assert "set-cookie" not in answer.headers
    request = seen[-1]
    assert request["path"] == "/proxy/process" and request["method"] == "POST"
    assert request["body"] == b'{"type": "echo"}'
    assert "cookie" not in request["headers"]
    query = dict(request["query"])
    assert query["logged_in_customer_id"] == "42" and query["path_prefix"] == "/apps/jobs"
    assert [v for k, v in request["query"] if k == "x"] == ["1", "2"]
    assert verify_app_proxy(request["query"], TEST_SECRET, time.time()) == SHOP

    with httpx.Client(base_url=shopify.url) as browser:
        assert browser.get("/_emulator/login", params={"customer": "7"}).status_code == 303
        browser.get("/apps/jobs/status", params={"jobId": "abc"})
    assert dict(seen[-1]["query"])["logged_in_customer_id"] == "7"
    assert dict(seen[-1]["query"])["jobId"] == "abc"
    assert httpx.get(f"{shopify.url}/apps/other/x").status_code == 404


def test_webhook_sender_signs_and_retries(serve, emulator) -> None:
    target, seen = _recorder()
    target.state.failures["left"] = 1
    app = serve(target)
    shopify = emulator(app_url=app.url, shops={SHOP: TOKEN})
    sent = httpx.post(
        f"{shopify.url}/_emulator/webhooks/send",
        json={"topic": "products/update", "shop": SHOP, "payload": {"id": 1}, "wait": True},
    ).json()
    assert sent["delivered"] and sent["attempts"] == [{"status": 500}, {"status": 200}]
    first, second = seen[-2:]
    assert first["path"] == "/webhooks"
    headers = second["headers"]
    assert verify_webhook(second["body"], headers["x-shopify-hmac-sha256"], TEST_SECRET)
    assert headers["x-shopify-topic"] == "products/update"
    assert headers["x-shopify-shop-domain"] == SHOP
    assert headers["x-shopify-event-id"] == first["headers"]["x-shopify-event-id"]
    assert headers["x-shopify-webhook-id"] == sent["webhookId"]
    assert headers["x-shopify-api-version"]

    target.state.failures["left"] = 10
    gave_up = httpx.post(
        f"{shopify.url}/_emulator/webhooks/send",
        json={"topic": "x/y", "shop": SHOP, "payload": {}, "event_id": "e-1", "wait": True},
    ).json()
    assert not gave_up["delivered"] and len(gave_up["attempts"]) == 3  # 1 + 2 retries
    assert gave_up["eventId"] == "e-1"


def test_runs_as_a_command(spawn, env) -> None:
    port = free_port()
    proc = spawn(
        [
            sys.executable,
            "-m",
            "shopify_emulator",
            "--port",
            str(port),
            "--app-url",
            "http://127.0.0.1:9",
            "--shop",
            f"{SHOP}={TOKEN}",
            "--bucket-size",
            "77",
        ],
        env,
        "emulator",
    )
    stats = wait_for_http(f"http://127.0.0.1:{port}/_emulator/stats").json()
    assert stats["shops"][SHOP]["throttleStatus"]["maximumAvailable"] == 77
    assert "storefront of" in proc.output or wait_for_http(f"http://127.0.0.1:{port}/")


async def test_concurrent_requests_share_one_bucket(shopify: httpx.AsyncClient) -> None:
    gid = (await shopify.get("/_emulator/products")).json()[0]["id"]
    answers = await asyncio.gather(*(_query(shopify, {"id": gid, "first": 20}) for _ in range(5)))
    codes = [a.json().get("errors", [{}])[0].get("extensions", {}).get("code") for a in answers]
    assert codes.count("THROTTLED") >= 3  # 60 points hold only two 23-point queries


async def test_a_query_over_1000_points_is_refused_whatever_the_bucket() -> None:
    """Shopify: a single query cannot exceed a cost of 1,000, on every plan (a Plus shop's
    bucket is larger), checked on the requested cost before the query runs."""
    # 2 + 10 × (1 product + 2 + 100 variants × 1) = 1,032 requested
    query = "{ products(first: 10) { nodes { variants(first: 100) { nodes { id } } } } }"
    async with in_process(bucket_size=10_000, restore_rate=1000, max_variants=5) as c:
        answer = await c.post(
            "/admin/api/2025-10/graphql.json",
            json={"query": query},
            headers={"X-Shopify-Access-Token": TOKEN},
        )
        fits = await c.post(
            "/admin/api/2025-10/graphql.json",
            json={"query": query.replace("first: 10", "first: 9")},  # 929
            headers={"X-Shopify-Access-Token": TOKEN},
        )
    body = answer.json()
    assert body["errors"][0]["extensions"]["code"] == "MAX_COST_EXCEEDED"
    assert (
        "Query cost is 1032" in body["errors"][0]["message"]
        and "(1000)" in body["errors"][0]["message"]
    )
    assert body["extensions"]["cost"]["requestedQueryCost"] == 1032
    assert "errors" not in fits.json() and len(fits.json()["data"]["products"]["nodes"]) == 3
