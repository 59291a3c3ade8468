"""The embedded app's API (/api) and page (/app), in-process, with the emulator as Shopify.

Session tokens are minted by the emulator's own HS256 signer, so the app's PyJWT verification
is checked against an independent implementation; the token exchange goes over HTTP to the
emulator, which counts the exchanges it grants.
"""

from __future__ import annotations

import asyncio
import base64
import time
import uuid

import httpx
import jwt
import pytest
from arq.connections import ArqRedis
from databases import Database

from service import store
from service.app import create_app
from service.core.settings import Settings
from service.web.merchant_api import RETRY_HEADER
from shopify_emulator.config import EmulatorConfig
from shopify_emulator.embedded import session_claims, sign
from tests.support.config import TEST_API_KEY, TEST_SECRET
from tests.support.jobs import add_job, make_shop, shop_with_tokens

ALPINE, HARBOR, NEW = "alpine.myshopify.com", "harbor.myshopify.com", "fresh.myshopify.com"


@pytest.fixture
async def admin(settings: Settings, database: Database, redis: ArqRedis, emulator):
    """(client, shopify): the app in-process, its Admin API and token grants at the emulator."""
    shopify = emulator(shops={ALPINE: "shpat_test", HARBOR: "shpat_test"})
    app = create_app(settings.model_copy(update={"shopify_admin_url": shopify.url}))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client, shopify


def token(shop: str = ALPINE, user: str = "1001", secret: str = TEST_SECRET, **changes) -> str:  # type: ignore[no-untyped-def]
    claims = session_claims(admin_config(), shop, user, time.time())
    claims.update(changes)
    return sign({k: v for k, v in claims.items() if v is not None}, secret)


def admin_config() -> EmulatorConfig:
    return EmulatorConfig(app_url="http://testserver", api_key=TEST_API_KEY, api_secret=TEST_SECRET)


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


async def shops(database: Database) -> dict[str, store.Shop]:
    return {d: await make_shop(database, d) for d in (ALPINE, HARBOR)}


async def start_echo(client: httpx.AsyncClient, shop: str, message: str, **extra) -> dict:  # type: ignore[no-untyped-def]
    answer = await client.post(
        "/api/jobs",
        json={"type": "echo", "input": {"message": message, **extra}},
        headers=bearer(token(shop)),
    )
    assert answer.status_code == 201, answer.text
    return answer.json()


BAD_TOKENS = {
    "expired": lambda: token(exp=int(time.time()) - 60),
    "not yet valid": lambda: token(nbf=int(time.time()) + 60),
    "wrong audience": lambda: token(aud="another-app"),
    "wrong secret": lambda: token(secret="not-the-app-secret"),
    "alg none": lambda: jwt.encode(session_claims(admin_config(), ALPINE, "1", time.time()),
                                   None, algorithm="none"),
    "HS512": lambda: jwt.encode(session_claims(admin_config(), ALPINE, "1", time.time()),
                                TEST_SECRET, algorithm="HS512"),
    "RS256 header": lambda: sign(session_claims(admin_config(), ALPINE, "1", time.time()),
                                 TEST_SECRET, {"alg": "RS256", "typ": "JWT"}),
    "dest not a shop": lambda: token(dest="https://evil.example.com",
                                     iss="https://evil.example.com/admin"),
    "iss not matching": lambda: token(iss=f"https://{HARBOR}/admin"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BAD_TOKENS))
async def test_bad_session_tokens_get_401_with_the_retry_header(admin, database, case) -> None:  # type: ignore[no-untyped-def]
    client, _ = admin
    await shops(database)
    for path in ("/api/jobs", "/api/job-types"):
        answer = await client.get(path, headers=bearer(BAD_TOKENS[case]()))
        assert answer.status_code == 401, (case, answer.text)
        assert answer.headers[RETRY_HEADER] == "1"
        assert answer.json()["error"]


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz"])
async def test_missing_bearer_gets_401_with_the_retry_header(admin, database, header) -> None:  # type: ignore[no-untyped-def]
    client, _ = admin
    headers = {} if header is None else {"Authorization": header}
    answer = await client.post("/api/jobs", json={"type": "echo", "input": {}}, headers=headers)
    assert answer.status_code == 401 and answer.headers[RETRY_HEADER] == "1"
    assert await database.fetch_val("SELECT count(*) FROM jobs") == 0


async def test_a_shop_never_sees_another_shops_jobs(admin, database: Database) -> None:  # type: ignore[no-untyped-def]
    client, _ = admin
    await shops(database)
    alpine_job = await start_echo(client, ALPINE, "alpine's", sleep_ms=60_000)
    await start_echo(client, HARBOR, "harbor's")
    job_id = alpine_job["jobId"]
    assert alpine_job["startedBy"] == "1001" and alpine_job["source"] == "admin"

    listed = (await client.get("/api/jobs", headers=bearer(token(HARBOR)))).json()["jobs"]
    assert [j["input"]["message"] for j in listed] == ["harbor's"]
    for method, path in [
        ("GET", f"/api/jobs/{job_id}"),
        ("POST", f"/api/jobs/{job_id}/cancel"),
        ("POST", f"/api/jobs/{job_id}/retry"),
    ]:
        answer = await client.request(method, path, headers=bearer(token(HARBOR)))
        assert (answer.status_code, answer.json()) == (404, {"error": "Job not found"}), path
    row = await store.get_job(database, uuid.UUID(job_id))
    assert row is not None and row.status == "pending" and row.staff_user_id == "1001"

    # Its own shop reads, cancels (pending) and retries (failed) it.
    mine = await client.get(f"/api/jobs/{job_id}", headers=bearer(token(ALPINE)))
    assert mine.status_code == 200 and mine.json()["cancellable"]
    cancelled = await client.post(f"/api/jobs/{job_id}/cancel", headers=bearer(token(ALPINE)))
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "failed" and cancelled.json()["cancelled"]
    again = await client.post(f"/api/jobs/{job_id}/cancel", headers=bearer(token(ALPINE)))
    assert again.status_code == 409
    retried = await client.post(f"/api/jobs/{job_id}/retry", headers=bearer(token(ALPINE)))
    assert retried.status_code == 200 and retried.json()["status"] == "pending"
    not_failed = await client.post(f"/api/jobs/{job_id}/retry", headers=bearer(token(ALPINE)))
    assert not_failed.status_code == 409


async def test_list_is_newest_first_filtered_and_paged_by_cursor(admin, database) -> None:  # type: ignore[no-untyped-def]
    client, _ = admin
    await shops(database)
    ids = [(await start_echo(client, ALPINE, f"job {n}"))["jobId"] for n in range(5)]
    await client.post(f"/api/jobs/{ids[1]}/cancel", headers=bearer(token()))
    seen, cursor = [], None
    while True:
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/api/jobs", params=params, headers=bearer(token()))).json()
        seen += [j["jobId"] for j in page["jobs"]]
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert seen == ids[::-1]
    failed = await client.get("/api/jobs", params={"status": "failed"}, headers=bearer(token()))
    assert [j["jobId"] for j in failed.json()["jobs"]] == [ids[1]]
    by_type = await client.get(
        "/api/jobs", params={"type": "product_summary"}, headers=bearer(token())
    )
    assert by_type.json()["jobs"] == []
    for params in (
        {"status": "nope"},
        {"limit": "0"},
        {"limit": "101"},
        {"limit": "\u00b2"},  # a digit to str.isdigit, not to int()
        {"limit": "9" * 5000},  # more digits than int() converts
        {"cursor": "%%%"},
    ):
        bad = await client.get("/api/jobs", params=params, headers=bearer(token()))
        assert bad.status_code == 400 and "error" in bad.json(), params


async def test_list_filters_postgres_cannot_take_are_400_not_500(admin, database) -> None:  # type: ignore[no-untyped-def]
    client, _ = admin
    await shops(database)
    # A well-formed cursor whose moment is before year 1 once in UTC, and a NUL in the type:
    # Python takes both, Postgres neither.
    edge = f"0001-01-01T00:00:00+14:00|{uuid.uuid4()}".encode()
    for params in (
        {"cursor": base64.urlsafe_b64encode(edge).decode().rstrip("=")},
        {"type": "echo\x00"},
    ):
        answer = await client.get("/api/jobs", params=params, headers=bearer(token()))
        assert answer.status_code == 400 and "error" in answer.json(), (params, answer.text)


@pytest.mark.parametrize("user", ["1001\x00", "\ud800"])
async def test_a_staff_user_id_postgres_cannot_store_is_401_not_500(admin, database, user) -> None:  # type: ignore[no-untyped-def]
    client, _ = admin
    await shops(database)
    answer = await client.post(
        "/api/jobs",
        json={"type": "echo", "input": {"message": "x"}},
        headers=bearer(token(user=user)),
    )
    assert answer.status_code == 401 and answer.headers[RETRY_HEADER] == "1", answer.text
    assert await database.fetch_val("SELECT count(*) FROM jobs") == 0


async def test_only_admin_types_and_valid_input_are_accepted(admin, database) -> None:  # type: ignore[no-untyped-def]
    client, _ = admin
    await shops(database)
    types = (await client.get("/api/job-types", headers=bearer(token()))).json()["types"]
    assert {t["name"] for t in types} == {
        "echo",
        "echo_notify",
        "product_summary",
        "inventory_report",
    }
    assert "message" in next(t for t in types if t["name"] == "echo")["schema"]["properties"]
    for body in (
        {"type": "shop_redact", "input": {}},
        {"type": "echo", "input": {"message": 5}},
        {"type": "echo"},
    ):
        answer = await client.post("/api/jobs", json=body, headers=bearer(token()))
        assert answer.status_code == 400, body
    for bad in ("not-a-uuid", f"{uuid.uuid4()}{'-' * 28}junk"):  # not cut to a valid prefix
        bad_id = await client.get(f"/api/jobs/{bad}", headers=bearer(token()))
        assert bad_id.status_code == 400, bad
    assert await database.fetch_val("SELECT count(*) FROM jobs") == 0
    # The catalogue report (issue 17: "started from the app or the admin"): a merchant's job.
    report = await client.post(
        "/api/jobs", json={"type": "inventory_report", "input": {}}, headers=bearer(token())
    )
    assert report.status_code == 201, report.text
    row = await database.fetch_one(
        "SELECT type, source, staff_user_id FROM jobs WHERE id = :id",
        {"id": uuid.UUID(report.json()["jobId"])},
    )
    assert row is not None
    assert (row["type"], row["source"], row["staff_user_id"]) == (
        "inventory_report",
        "admin",
        "1001",
    )


async def test_first_requests_exchange_the_session_token_once(admin, database) -> None:  # type: ignore[no-untyped-def]
    client, shopify = admin
    async with httpx.AsyncClient() as http:
        opened = await http.get(f"{shopify.url}/admin/apps/{TEST_API_KEY}", params={"shop": NEW})
        assert opened.status_code == 200  # the merchant opens the app: Shopify installs it
    assert await store.get_shop(database, NEW) is None
    answers = await asyncio.gather(
        *(client.get("/api/jobs", headers=bearer(token(NEW, user=str(n)))) for n in range(8))
    )
    assert [a.status_code for a in answers] == [200] * 8
    async with httpx.AsyncClient() as http:
        stats = (await http.get(f"{shopify.url}/_emulator/stats")).json()
    assert stats["shops"][NEW]["token_exchanges"] == 1
    stored = await store.get_shop(database, NEW, tokens=True)
    assert stored is not None and stored.access_token.startswith("fernet:")  # encrypted at rest
    shop = await shop_with_tokens(database, NEW)
    assert shop is not None and shop.installed and shop.access_token
    assert shop.token_expires_at is not None and shop.refresh_token  # expiring, as asked
    # The stored token is one the Admin API accepts.
    async with httpx.AsyncClient() as http:
        answer = await http.post(
            f"{shopify.url}/admin/api/2025-10/graphql.json",
            json={"query": "{ shop { name } }"},
            headers={"X-Shopify-Access-Token": shop.access_token},
        )
    assert answer.status_code == 200 and "errors" not in answer.json()
    # Later requests use the stored token: no more exchanges.
    await start_echo(client, NEW, "after install")
    async with httpx.AsyncClient() as http:
        stats = (await http.get(f"{shopify.url}/_emulator/stats")).json()
    assert stats["shops"][NEW]["token_exchanges"] == 1


async def test_an_uninstalled_shop_is_refused(admin, database) -> None:  # type: ignore[no-untyped-def]
    client, shopify = admin
    await shops(database)
    await start_echo(client, HARBOR, "before")
    async with httpx.AsyncClient() as http:
        gone = await http.post(f"{shopify.url}/_emulator/shops/{HARBOR}/uninstall")
        assert gone.status_code in (200, 202)
    await store.mark_shop_uninstalled(database, HARBOR)  # what app/uninstalled does
    answer = await client.get("/api/jobs", headers=bearer(token(HARBOR)))
    assert answer.status_code == 401 and answer.headers[RETRY_HEADER] == "1"
    created = await client.post(
        "/api/jobs", json={"type": "echo", "input": {"message": "x"}}, headers=bearer(token(HARBOR))
    )
    assert created.status_code == 401
    shop = await store.get_shop(database, HARBOR)
    assert shop is not None and not shop.installed and shop.access_token is None
    async with httpx.AsyncClient() as http:
        stats = (await http.get(f"{shopify.url}/_emulator/stats")).json()
    assert stats["shops"][HARBOR].get("token_exchanges", 0) == 0


async def test_the_page_is_framed_only_by_the_shops_admin(admin) -> None:  # type: ignore[no-untyped-def]
    client, shopify = admin
    page = await client.get("/app", params={"shop": ALPINE, "host": "x", "embedded": "1"})
    assert page.status_code == 200
    policy = page.headers["content-security-policy"]
    assert policy == f"frame-ancestors https://{ALPINE} https://admin.shopify.com {shopify.url}"
    assert f'<meta name="shopify-api-key" content="{TEST_API_KEY}">' in page.text
    assert '<script src="https://cdn.shopify.com/shopifycloud/app-bridge.js"></script>' in page.text
    assert 'src="/app/app.js"' in page.text
    for script in ("/app/app.js", "/app/admin.js"):  # the second: its path of earlier releases
        assert (await client.get(script)).headers["content-type"].startswith("text/javascript")
    for shop in ("", "evil.example.com", "https://x.myshopify.com.evil.com"):
        refused = await client.get("/app", params={"shop": shop})
        assert refused.status_code == 400 and "error" in refused.json()


async def test_jobs_the_merchant_cannot_start_are_not_theirs_to_cancel_or_retry(  # type: ignore[no-untyped-def]
    admin, database: Database, redis: ArqRedis
) -> None:
    """A customer's redaction (a compliance webhook's job) is listed, but the merchant cannot
    cancel it while it waits, nor retry it once failed: 403, and the row is left as it was."""
    client, _ = admin
    shop = (await shops(database))[ALPINE]
    redaction = await add_job(
        database, redis, shop, {"customer_id": 7, "orders": []}, "customers_redact", enqueue=False
    )
    listed = (await client.get("/api/jobs", headers=bearer(token()))).json()["jobs"]
    assert [(j["type"], j["cancellable"]) for j in listed] == [("customers_redact", False)]
    cancel = await client.post(f"/api/jobs/{redaction}/cancel", headers=bearer(token()))
    assert cancel.status_code == 403 and "customers_redact" in cancel.json()["error"]
    assert (await store.get_job(database, redaction)).status == "pending"  # type: ignore[union-attr]
    await database.execute(
        "UPDATE jobs SET status = 'failed', error_message = 'x' WHERE id = :id", {"id": redaction}
    )
    retry = await client.post(f"/api/jobs/{redaction}/retry", headers=bearer(token()))
    assert retry.status_code == 403
    assert (await store.get_job(database, redaction)).status == "failed"  # type: ignore[union-attr]
    mine = await start_echo(client, ALPINE, "mine")  # the merchant's own: theirs to cancel
    assert mine["cancellable"]
    cancelled = await client.post(f"/api/jobs/{mine['jobId']}/cancel", headers=bearer(token()))
    assert cancelled.status_code == 200 and cancelled.json()["cancelled"]
