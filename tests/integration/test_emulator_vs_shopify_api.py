"""The emulator, and the service's checks, judged by Shopify's own library (@shopify/shopify-api).

The emulator signs tokens, webhooks and app-proxy queries by its own code, and answers Admin
GraphQL and the token exchange by its own reading of Shopify's docs. Here the library Shopify
ships for Node apps (pinned in tests/support/shopify_api_check/package.json) reads all of them
as an app built on it would: each check fails if the emulator drifts from what that library
accepts. The other way round, what the library's own helpers sign is accepted by the service.
A missing Node or a failed `npm ci` fails these tests (tests/support/shopify_api.py).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlsplit

import httpx
import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from service.shopify import session_tokens
from service.shopify.signatures import verify_app_proxy, verify_webhook
from tests.support.config import TEST_API_KEY, TEST_SECRET
from tests.support.net import ServedApp
from tests.support.processes import start_web
from tests.support.shopify_api import ShopifyApi, install
from tests.support.shopify_payloads import product_update_body

SHOP = "judged-shop.myshopify.com"
TOKEN = "shpat_judged_shop"
PRODUCTS = (
    "query Products($first: Int!) { shop { name } products(first: $first) { nodes { id title } } }"
)


@pytest.fixture(scope="module")
def node() -> Path:
    """Node with the pinned library installed (once; kept between runs)."""
    return install()


def judge(node: Path, emulator: ServedApp | None = None, secret: str = TEST_SECRET) -> ShopifyApi:
    return ShopifyApi(node, TEST_API_KEY, secret, emulator.url if emulator else None)


def recorder() -> tuple[Starlette, list[dict[str, Any]]]:
    """A stand-in app that records every request reaching it and answers 200."""
    seen: list[dict[str, Any]] = []

    async def record(request: Request) -> JSONResponse:
        seen.append(
            {
                "path": request.url.path,
                "query": list(request.query_params.multi_items()),
                "headers": dict(request.headers),
                "body": await request.body(),
            }
        )
        return JSONResponse({"ok": True})

    return Starlette(routes=[Route("/{path:path}", record, methods=["GET", "POST"])]), seen


def as_query_object(pairs: list[tuple[str, str]]) -> dict[str, str | list[str]]:
    """A query as a Node app hands it to the library: a repeated key's values as an array."""
    grouped: dict[str, list[str]] = {}
    for key, value in pairs:
        grouped.setdefault(key, []).append(value)
    return {k: v[0] if len(v) == 1 else v for k, v in grouped.items()}


# -- session tokens -----------------------------------------------------------------------------


def test_emulator_session_tokens_decode_with_the_library(node: Path, emulator) -> None:
    shopify = emulator(shops={SHOP: TOKEN})
    token = httpx.post(
        f"{shopify.url}/_emulator/id-token", json={"shop": SHOP, "user": "7"}
    ).json()["token"]
    payload = judge(node).run("decodeSessionToken", token=token)
    assert payload["aud"] == TEST_API_KEY and payload["sub"] == "7"
    assert payload["dest"] == f"https://{SHOP}" and payload["iss"] == f"https://{SHOP}/admin"
    assert payload["nbf"] <= time.time() + 10 < payload["exp"] + 10

    # The admin page hands the app an id_token and a host in the iframe's URL, as Shopify does.
    page = httpx.get(f"{shopify.url}/admin/apps/{TEST_API_KEY}", params={"shop": SHOP}).text
    src = page.split('<iframe id="app" title="App" src="', 1)[1].split('"', 1)[0]
    query = dict(parse_qsl(urlsplit(src.replace("&amp;", "&")).query))
    assert (
        judge(node).run("decodeSessionToken", token=query["id_token"])["dest"] == f"https://{SHOP}"
    )
    assert judge(node).run("sanitizeHost", host=query["host"]) == query["host"]

    # The judge can say no: another app's secret does not verify the emulator's token.
    refused = judge(node, secret="another-app-secret").refusal("decodeSessionToken", token=token)
    assert refused["name"] == "InvalidJwtError"


def test_library_session_tokens_verify_in_the_service(node: Path) -> None:
    signed = judge(node).run(
        "signSessionToken",
        shop="judged-shop",
        apiKey=TEST_API_KEY,
        apiSecret=TEST_SECRET,
        # Real tokens' `iss` is the admin's URL; the helper leaves out the scheme by default.
        overrides={"iss": f"https://{SHOP}/admin", "sub": "99"},
    )
    session = session_tokens.verify(signed["token"], api_key=TEST_API_KEY, secret=TEST_SECRET)
    assert (session.shop, session.user, session.session) == (SHOP, "99", "0987654321")
    with pytest.raises(session_tokens.InvalidSessionToken):
        session_tokens.verify(signed["token"], api_key="another-app", secret=TEST_SECRET)


# -- webhooks and signed queries ----------------------------------------------------------------


def test_emulator_webhooks_validate_with_the_library(node: Path, serve, emulator) -> None:
    target, seen = recorder()
    app = serve(target)
    shopify = emulator(app_url=app.url, shops={SHOP: TOKEN})
    payload = {"id": 1, "title": "Crème brûlée", "tags": ["a", "b"]}
    sent = httpx.post(
        f"{shopify.url}/_emulator/webhooks/send",
        json={"topic": "products/update", "shop": SHOP, "payload": payload, "wait": True},
    ).json()
    assert sent["delivered"]
    delivery = seen[-1]
    # Shopify sends UTF-8 as it is, not \u escapes: the HMAC is over these bytes.
    assert '"title":"Crème brûlée"'.encode() in delivery["body"]
    body = delivery["body"].decode()
    valid = judge(node).run("validateWebhook", body=body, headers=delivery["headers"])
    assert valid["valid"] is True and valid["webhookType"] == "webhooks"
    assert valid["topic"] == "PRODUCTS_UPDATE" and valid["domain"] == SHOP
    assert valid["apiVersion"] == shopify.config.api_version
    assert valid["webhookId"] == sent["webhookId"] and valid["eventId"] == sent["eventId"]
    assert valid["triggeredAt"]

    tampered = judge(node).run(
        "validateWebhook", body=body.replace("brûlée", "brulee"), headers=delivery["headers"]
    )
    assert tampered == {"valid": False, "reason": "invalid_hmac"}


def test_library_webhook_signatures_verify_in_the_service(node: Path) -> None:
    body = '{"id":1,"title":"Crème brûlée"}'
    signature = judge(node).run("signWebhook", body=body, apiSecret=TEST_SECRET)
    assert verify_webhook(body.encode(), signature, TEST_SECRET)
    assert not verify_webhook(body.encode(), signature, "another-app-secret")


def test_emulator_app_proxy_signatures_validate_with_the_library(
    node: Path, serve, emulator
) -> None:
    target, seen = recorder()
    app = serve(target)
    shopify = emulator(app_url=app.url, shops={SHOP: TOKEN})
    for customer in ("77", ""):  # a logged-in customer, then an anonymous visitor
        httpx.get(
            f"{shopify.url}/apps/jobs/jobs/abc?tag=a&tag=b&note=caf%C3%A9&empty=",
            headers={"X-Emulator-Shop": SHOP, "X-Emulator-Customer": customer},
        )
        pairs = seen[-1]["query"]
        query = as_query_object(pairs)
        assert query["logged_in_customer_id"] == customer and query["tag"] == ["a", "b"]
        assert judge(node).run("validateHmac", query=query, signator="appProxy") is True
        forged = {**query, "logged_in_customer_id": "1"}
        assert judge(node).run("validateHmac", query=forged, signator="appProxy") is False


def test_library_app_proxy_requests_verify_in_the_service(node: Path) -> None:
    url = judge(node).run(
        "signAppProxyUrl",
        url="https://app.example.com/proxy/jobs?path_prefix=%2Fapps%2Fjobs&logged_in_customer_id=5",
        shop="judged-shop",
        apiKey=TEST_API_KEY,
        apiSecret=TEST_SECRET,
    )
    pairs = parse_qsl(urlsplit(url).query, keep_blank_values=True)
    assert verify_app_proxy(pairs, TEST_SECRET, time.time()) == SHOP


def test_emulator_oauth_redirect_validates_with_the_library(node: Path, emulator) -> None:
    shopify = emulator(app_url="https://app.example.com", shops={SHOP: TOKEN})
    answer = httpx.get(
        f"{shopify.url}/admin/oauth/authorize",
        params={
            "client_id": TEST_API_KEY,
            "scope": "read_products",
            "redirect_uri": "https://app.example.com/auth/callback",
            "state": "nonce-1",
            "shop": SHOP,
        },
    )
    assert answer.status_code == 302
    query = {k: v[0] for k, v in parse_qs(urlsplit(answer.headers["location"]).query).items()}
    assert judge(node).run("validateHmac", query=query, signator="admin") is True
    assert judge(node).run("sanitizeHost", host=query["host"]) == query["host"]
    forged = {**query, "shop": "other-shop.myshopify.com"}
    assert judge(node).run("validateHmac", query=forged, signator="admin") is False


# -- Admin GraphQL through the library's client --------------------------------------------------


def test_admin_graphql_answers_parse_with_the_library_client(node: Path, emulator) -> None:
    shopify = emulator(shops={SHOP: TOKEN}, bucket_size=20, restore_rate=0.01)
    client = judge(node, shopify)
    answer = client.run(
        "graphql", shop=SHOP, accessToken=TOKEN, query=PRODUCTS, variables={"first": 3}
    )
    assert answer["data"]["shop"]["name"]
    ids = [p["id"] for p in answer["data"]["products"]["nodes"]]
    assert len(set(ids)) == 3 and all(i.startswith("gid://shopify/Product/") for i in ids)
    cost = answer["extensions"]["cost"]
    # shop 1 + products (2 + 3 × 1): everything requested was returned.
    assert cost["requestedQueryCost"] == cost["actualQueryCost"] == 6
    assert cost["throttleStatus"]["maximumAvailable"] == 20

    # 20 - 6 = 14 left, restored at 0.01/s: 12 more fit, the next 12 do not (for 1,000 s).
    assert client.run(
        "graphql", shop=SHOP, accessToken=TOKEN, query=PRODUCTS, variables={"first": 9}
    )
    throttled = client.refusal(
        "graphql", shop=SHOP, accessToken=TOKEN, query=PRODUCTS, variables={"first": 9}
    )
    assert throttled["name"] == "GraphqlQueryError"
    [error] = throttled["body"]["errors"]["graphQLErrors"]
    assert error["extensions"]["code"] == "THROTTLED"
    cost = throttled["body"]["extensions"]["cost"]
    assert cost["requestedQueryCost"] == 12 and cost["actualQueryCost"] is None
    assert cost["throttleStatus"]["currentlyAvailable"] < 12

    too_big = client.refusal(
        "graphql", shop=SHOP, accessToken=TOKEN, query=PRODUCTS, variables={"first": 50}
    )
    assert (
        too_big["body"]["errors"]["graphQLErrors"][0]["extensions"]["code"] == "MAX_COST_EXCEEDED"
    )

    refused = client.refusal(
        "graphql", shop=SHOP, accessToken="shpat_wrong", query=PRODUCTS, variables={"first": 1}
    )
    assert refused["name"] == "HttpResponseError" and refused["response"]["code"] == 401
    assert refused["response"]["body"]["errors"]["networkStatusCode"] == 401


def test_library_client_retries_a_429_from_the_emulator(node: Path, emulator) -> None:
    shopify = emulator(shops={SHOP: TOKEN})
    fault = {"kind": "429", "count": 1, "retry_after": 0.1, "shop": SHOP}
    assert httpx.post(f"{shopify.url}/_emulator/faults", json=fault).status_code < 300
    answer = judge(node, shopify).run(
        "graphql", shop=SHOP, accessToken=TOKEN, query=PRODUCTS, variables={"first": 1}, retries=1
    )
    assert len(answer["data"]["products"]["nodes"]) == 1
    stats = httpx.get(f"{shopify.url}/_emulator/stats").json()["shops"][SHOP]
    assert stats["requests"] == 2 and stats["faults"] == 1


# -- the token exchange -------------------------------------------------------------------------


def id_token(shopify: ServedApp, shop: str = SHOP) -> str:
    answer = httpx.post(f"{shopify.url}/_emulator/id-token", json={"shop": shop, "user": "7"})
    assert answer.status_code == 200, answer.text
    return str(answer.json()["token"])


def test_token_exchange_with_the_library_returns_a_working_session(node: Path, emulator) -> None:
    shopify = emulator(shops={SHOP: TOKEN})
    client = judge(node, shopify)
    done = client.run(
        "tokenExchange", shop=SHOP, sessionToken=id_token(shopify), expiring=True, refresh=True
    )
    session, refreshed = done["session"], done["refreshed"]
    assert done["active"] is True
    assert session["id"] == f"offline_{SHOP}" and session["isOnline"] is False
    assert session["shop"] == SHOP and session["scope"] == shopify.config.scopes
    assert session["accessToken"].startswith("shpat_") and session["refreshToken"]
    assert session["expires"] and session["refreshTokenExpires"]
    # Refresh tokens rotate: a new pair, and the old refresh token is used up.
    assert refreshed["accessToken"] not in (session["accessToken"], TOKEN)
    assert refreshed["refreshToken"] != session["refreshToken"]
    assert done["reusedRefreshToken"]["ok"] is False
    assert done["reusedRefreshToken"]["error"]["response"]["code"] == 400
    for token in (session["accessToken"], refreshed["accessToken"]):
        answer = client.run(
            "graphql", shop=SHOP, accessToken=token, query=PRODUCTS, variables={"first": 1}
        )
        assert answer["data"]["shop"]["name"]

    offline = client.run("tokenExchange", shop=SHOP, sessionToken=id_token(shopify), expiring=False)
    assert offline["session"]["accessToken"].startswith("shpat_")
    assert "expires" not in offline["session"] and "refreshToken" not in offline["session"]


def test_token_exchange_for_an_online_token_returns_the_staff_members_session(
    node: Path, emulator
) -> None:
    shopify = emulator(shops={SHOP: TOKEN})
    client = judge(node, shopify)
    done = client.run("tokenExchange", shop=SHOP, sessionToken=id_token(shopify), online=True)
    session = done["session"]
    # The library keys an embedded app's online session by shop and staff member (`sub`: 7).
    assert session["isOnline"] is True and session["id"] == f"{SHOP}_7"
    assert session["accessToken"].startswith("shpua_") and session["expires"]
    info = session["onlineAccessInfo"]
    assert info["associated_user"]["id"] == 7 and info["expires_in"] == 86_399
    assert info["associated_user_scope"] == shopify.config.scopes
    answer = client.run(
        "graphql",
        shop=SHOP,
        accessToken=session["accessToken"],
        query=PRODUCTS,
        variables={"first": 1},
    )
    assert answer["data"]["shop"]["name"]


def test_token_exchange_for_an_uninstalled_shop_is_refused(node: Path, emulator) -> None:
    shopify = emulator(shops={SHOP: TOKEN})
    token = id_token(shopify)
    assert httpx.post(f"{shopify.url}/_emulator/shops/{SHOP}/uninstall").status_code < 300
    refused = judge(node, shopify).refusal(
        "tokenExchange", shop=SHOP, sessionToken=token, expiring=True
    )
    assert refused["name"] == "HttpResponseError" and refused["response"]["code"] == 400
    assert refused["response"]["body"]["error"] == "invalid_subject_token"


def test_library_signed_2048_variant_webhook_is_accepted_by_the_service(
    node: Path, env: dict[str, str], spawn
) -> None:
    """Shopify's largest products/update, signed and validated by the library, is read by a
    real web process with the default WEBHOOK_* limits (the 1 MiB limit used to refuse it)."""
    shop = "many-variants-judged.myshopify.com"
    body = product_update_body(shop).decode()
    signature = judge(node).run("signWebhook", body=body, apiSecret=TEST_SECRET)
    headers = {
        "X-Shopify-Topic": "products/update",
        "X-Shopify-Shop-Domain": shop,
        "X-Shopify-Event-Id": "judged-large-1",
        "X-Shopify-Webhook-Id": "judged-large-1",
        "X-Shopify-Api-Version": "2025-10",
        "X-Shopify-Triggered-At": "2025-06-02T14:21:33Z",
        "X-Shopify-Hmac-Sha256": signature,
    }
    valid = judge(node).run("validateWebhook", body=body, headers=headers)
    assert valid["valid"] is True and valid["topic"] == "PRODUCTS_UPDATE"
    _, base = start_web(spawn, env)
    answer = httpx.post(f"{base}/webhooks", content=body.encode(), headers=headers, timeout=30)
    assert answer.status_code == 200, answer.text


# -- tags and the webhooks the app's own mutations cause ----------------------------------------

TAGS_ADD = """mutation TagsAdd($id: ID!, $tags: [String!]!) {
  tagsAdd(id: $id, tags: $tags) { node { id ... on Product { tags } } userErrors { field message } }
}"""
TAGS_REMOVE = """mutation TagsRemove($id: ID!, $tags: [String!]!) {
  tagsRemove(id: $id, tags: $tags) { node { id } userErrors { field message } }
}"""
PRODUCT_UPDATE = """mutation Rename($product: ProductUpdateInput!) {
  productUpdate(product: $product) { product { id title tags } userErrors { field message } }
}"""
PRODUCT_TAGS = "query Tags($id: ID!) { product(id: $id) { tags updatedAt } }"
FIRST = "gid://shopify/Product/8000000001"


def _updates(seen: list[dict[str, Any]], count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while len(seen) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return list(seen)


def test_tags_and_the_products_update_they_send_judged_by_the_library(
    node: Path, serve, emulator
) -> None:
    target, seen = recorder()
    app = serve(target)
    shopify = emulator(app_url=app.url, shops={SHOP: TOKEN}, webhook_topics={"products/update"})
    client = judge(node, shopify)

    def graphql(query: str, **variables: Any) -> dict[str, Any]:
        answer = client.run(
            "graphql", shop=SHOP, accessToken=TOKEN, query=query, variables=variables
        )
        return answer["data"]

    before = graphql(PRODUCT_TAGS, id=FIRST)["product"]["tags"]
    added = graphql(TAGS_ADD, id=FIRST, tags=["reviewed", "Sale, summer"])["tagsAdd"]
    assert added["userErrors"] == []
    tags = added["node"]["tags"]
    assert {"reviewed", "Sale", "summer", *before} == set(tags)
    assert tags == sorted(tags, key=str.lower)  # Shopify returns them sorted
    assert graphql(PRODUCT_TAGS, id=FIRST)["product"]["tags"] == tags

    [update] = _updates(seen, 1)  # the app's own change, sent back to it
    valid = judge(node).run(
        "validateWebhook", body=update["body"].decode(), headers=update["headers"]
    )
    assert valid["valid"] is True and valid["topic"] == "PRODUCTS_UPDATE"
    assert valid["domain"] == SHOP
    body = orjson.loads(update["body"])
    assert body["admin_graphql_api_id"] == FIRST and "reviewed" in body["tags"].split(", ")

    # Adding a tag it has (any case) changes nothing: no webhook. Shopify's loop breaker.
    again = graphql(TAGS_ADD, id=FIRST, tags=["REVIEWED"])["tagsAdd"]
    assert again["userErrors"] == [] and again["node"]["tags"] == tags
    time.sleep(0.5)
    assert len(seen) == 1

    removed = graphql(TAGS_REMOVE, id=FIRST, tags=["sale"])["tagsRemove"]
    assert removed["userErrors"] == []
    renamed = graphql(PRODUCT_UPDATE, product={"id": FIRST, "title": "Renamed"})["productUpdate"]
    assert renamed["product"]["title"] == "Renamed" and "Sale" not in renamed["product"]["tags"]
    updates = _updates(seen, 3)
    assert len(updates) == 3
    for delivery in updates[1:]:
        assert judge(node).run(
            "validateWebhook", body=delivery["body"].decode(), headers=delivery["headers"]
        )["valid"]
    assert orjson.loads(updates[2]["body"])["title"] == "Renamed"

    missing = graphql(TAGS_ADD, id="gid://shopify/Product/1", tags=["x"])["tagsAdd"]
    assert missing["node"] is None and missing["userErrors"][0]["field"] == ["id"]


def test_no_products_update_unless_the_app_subscribed(node: Path, serve, emulator) -> None:
    target, seen = recorder()
    app = serve(target)
    shopify = emulator(app_url=app.url, shops={SHOP: TOKEN})
    client = judge(node, shopify)
    client.run(
        "graphql", shop=SHOP, accessToken=TOKEN, query=TAGS_ADD,
        variables={"id": FIRST, "tags": ["quiet"]},
    )  # fmt: skip
    time.sleep(0.5)
    assert seen == []
