"""The app-proxy endpoints against real Postgres and Redis: every row of docs/app-proxy.md."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from uuid import UUID, uuid4

import httpx
import pytest
from arq.connections import ArqRedis
from databases import Database

from service import queue, store
from service.core.settings import Settings
from service.shopify.proxy_url import signed_proxy_url
from service.web.parsing import MAX_BODY_BYTES
from tests.support.breakable import RedisServer, Relay
from tests.support.config import TEST_SECRET
from tests.support.net import free_port
from tests.support.queue_entries import drop_entry, queue_entries
from tools.services import Services

SHOP = "proxy-test.myshopify.com"
OTHER_SHOP = "other-shop.myshopify.com"
ECHO = {"type": "echo", "input": {"message": "hello"}}


def signed(
    path: str,
    *,
    customer: str = "",
    shop: str = SHOP,
    secret: str = TEST_SECRET,
    skew: int = 0,
) -> str:
    """A relative app-proxy URL signed the way Shopify signs it."""
    return signed_proxy_url(
        "",
        path,
        shop=shop,
        secret=secret,
        customer_id=customer,
        timestamp=int(time.time()) + skew,
    )


@pytest.fixture
async def shop(database: Database) -> store.Shop:
    return await store.upsert_shop(database, SHOP, "shpat_proxy", "")


@pytest.fixture
async def client(app_client: httpx.AsyncClient, shop: store.Shop) -> httpx.AsyncClient:
    return app_client


async def _job_count(database: Database) -> int:
    return int(await database.fetch_val("SELECT count(*) FROM jobs"))


async def _create(client: httpx.AsyncClient, customer: str = "", **kwargs: object) -> str:
    response = await client.post(signed("/proxy/process", customer=customer), json=ECHO, **kwargs)
    assert response.status_code == 200, response.text
    return str(response.json()["jobId"])


async def _set(database: Database, job_id: str, **columns: object) -> None:
    """Move a job along as a worker would (test-only SQL)."""
    assignments = ", ".join(
        f"{name} = CAST(:{name} AS jsonb)" if name == "result" else f"{name} = :{name}"
        for name in columns
    )
    await database.execute(
        f"UPDATE jobs SET {assignments} WHERE id = :id", {"id": UUID(job_id), **columns}
    )


@asynccontextmanager
async def app_with(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The app built from other settings (a dead Redis, a relayed Postgres), lifespan running."""
    from service.app import create_app

    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            yield c


# -- POST /proxy/process: 200 ----------------------------------------------------------------


async def test_process_writes_a_pending_row_then_queues_it(
    client: httpx.AsyncClient, database: Database, redis: ArqRedis, shop: store.Shop
) -> None:
    response = await client.post(signed("/proxy/process", customer="42"), json=ECHO)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"jobId", "status"} and body["status"] == "pending"
    job = await store.get_job(database, UUID(body["jobId"]))
    assert job is not None
    assert (job.shop_id, job.type, job.status, job.customer_id, job.source) == (
        shop.id,
        "echo",
        "pending",
        "42",
        "proxy",
    )
    # The validated input is stored as the caller gave it, no default added: a default is
    # the running release's to fill (docs/upgrading.md#job-inputs-across-releases).
    assert job.input == {"message": "hello"}
    # Queue contract: arq function = the type, one argument = the job id, _job_id = the job id.
    assert list(await queue_entries(redis)) == [body["jobId"]]
    queued = queue.deserialize(await redis.get(f"arq:job:{body['jobId']}"))
    assert queued["f"] == "echo" and queued["a"] == [body["jobId"], "proxy-test.myshopify.com"]


async def test_anonymous_visitor_is_recorded_as_null(
    client: httpx.AsyncClient, database: Database
) -> None:
    job_id = await _create(client, customer="")
    job = await store.get_job(database, UUID(job_id))
    assert job is not None and job.customer_id is None


async def test_a_body_near_the_limit_is_read_not_refused(client: httpx.AsyncClient) -> None:
    body = b'{"type": "echo", "input": {"message": "hi"}}' + b" " * (MAX_BODY_BYTES - 100)
    response = await client.post(
        signed("/proxy/process"), content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 200, response.text


# -- Idempotency-Key -------------------------------------------------------------------------


async def test_the_same_key_returns_the_same_job_without_a_second_enqueue(
    client: httpx.AsyncClient, database: Database, redis: ArqRedis
) -> None:
    headers = {"Idempotency-Key": "order-1001"}
    first = await _create(client, headers=headers)
    await redis.delete(f"arq:job:{first}")  # a second enqueue would now succeed: it must not
    await drop_entry(redis, first)
    second = await _create(client, headers=headers)
    assert second == first
    assert await _job_count(database) == 1
    assert await queue_entries(redis) == {}
    other = await _create(client, headers={"Idempotency-Key": "order-1002"})
    assert other != first and await _job_count(database) == 2


async def test_a_repeat_reports_the_jobs_current_status(
    client: httpx.AsyncClient, database: Database
) -> None:
    headers = {"Idempotency-Key": "k"}
    job_id = await _create(client, headers=headers)
    await _set(database, job_id, status="processing")
    response = await client.post(signed("/proxy/process"), json=ECHO, headers=headers)
    assert response.json() == {"jobId": job_id, "status": "processing"}


async def test_the_same_key_in_another_shop_is_another_job(
    client: httpx.AsyncClient, database: Database
) -> None:
    await store.upsert_shop(database, OTHER_SHOP, "t", "")
    headers = {"Idempotency-Key": "k"}
    mine = await _create(client, headers=headers)
    response = await client.post(
        signed("/proxy/process", shop=OTHER_SHOP), json=ECHO, headers=headers
    )
    assert response.status_code == 200 and response.json()["jobId"] != mine


@pytest.mark.parametrize(
    ("customer", "payload"),
    [
        ("", {"type": "echo", "input": {"message": "different"}}),
        ("99", ECHO),
    ],
    ids=["different-input", "different-customer"],
)
async def test_a_key_reused_for_a_different_request_is_refused(
    client: httpx.AsyncClient, database: Database, customer: str, payload: dict
) -> None:
    headers = {"Idempotency-Key": "k"}
    job_id = await _create(client, headers=headers)
    response = await client.post(
        signed("/proxy/process", customer=customer), json=payload, headers=headers
    )
    assert response.status_code == 422
    assert job_id not in response.text and "error" in response.json()
    assert await _job_count(database) == 1


@pytest.mark.parametrize("key", ["", "x" * 256, "naïve", "a\tb"])
async def test_a_malformed_key_is_refused(
    client: httpx.AsyncClient, database: Database, key: str
) -> None:
    response = await client.post(
        signed("/proxy/process"), json=ECHO, headers={"Idempotency-Key": key.encode("utf-8")}
    )
    assert response.status_code == 400 and response.json()["error"] == "Invalid Idempotency-Key"
    assert await _job_count(database) == 0


async def test_twenty_concurrent_duplicates_give_one_row_and_one_queue_entry(
    client: httpx.AsyncClient, database: Database, redis: ArqRedis
) -> None:
    headers = {"Idempotency-Key": "burst"}
    url = signed("/proxy/process")
    responses = await asyncio.gather(
        *[client.post(url, json=ECHO, headers=headers) for _ in range(20)]
    )
    assert [r.status_code for r in responses] == [200] * 20
    assert len({r.json()["jobId"] for r in responses}) == 1
    assert await _job_count(database) == 1
    assert len(await queue_entries(redis)) == 1


# -- 401 -----------------------------------------------------------------------------------


def _tampered(url: str) -> str:
    return url.replace("shop=", "x=1&shop=", 1)


@pytest.mark.parametrize(
    "make_url",
    [
        pytest.param(lambda path: signed(path, secret="wrong"), id="wrong-secret"),
        pytest.param(lambda path: path + "?shop=" + SHOP, id="unsigned"),
        pytest.param(lambda path: _tampered(signed(path)), id="tampered"),
        pytest.param(lambda path: signed(path, skew=-300), id="stale"),
        pytest.param(lambda path: signed(path, skew=300), id="future"),
        pytest.param(lambda path: signed(path) + "&shop=" + OTHER_SHOP, id="repeated-shop"),
    ],
)
@pytest.mark.parametrize("method", ["POST", "GET"])
async def test_bad_signatures_are_401(
    client: httpx.AsyncClient, database: Database, method: str, make_url: object
) -> None:
    path = "/proxy/process" if method == "POST" else f"/proxy/status?jobId={uuid4()}"
    url = make_url(path)  # type: ignore[operator]
    response = await client.request(method, url, json=ECHO if method == "POST" else None)
    assert response.status_code == 401
    assert isinstance(response.json()["error"], str)
    assert await _job_count(database) == 0


# -- 404 Shop not found ---------------------------------------------------------------------


@pytest.mark.parametrize("method", ["POST", "GET"])
async def test_unknown_shop_is_404(client: httpx.AsyncClient, method: str) -> None:
    path = "/proxy/process" if method == "POST" else f"/proxy/status?jobId={uuid4()}"
    response = await client.request(
        method, signed(path, shop="nobody.myshopify.com"), json=ECHO if method == "POST" else None
    )
    assert response.status_code == 404 and response.json() == {"error": "Shop not found"}


async def test_uninstalled_shop_is_404(client: httpx.AsyncClient, database: Database) -> None:
    job_id = await _create(client)
    await database.execute("UPDATE shops SET uninstalled_at = now() WHERE domain = :d", {"d": SHOP})
    created = await client.post(signed("/proxy/process"), json=ECHO)
    polled = await client.get(signed(f"/proxy/status?jobId={job_id}"))
    for response in (created, polled):
        assert response.status_code == 404 and response.json() == {"error": "Shop not found"}
    assert await _job_count(database) == 1


async def test_a_signed_shop_that_is_not_a_shop_domain_is_404(client: httpx.AsyncClient) -> None:
    response = await client.post(signed("/proxy/process", shop="evil\x00.example.com"), json=ECHO)
    assert response.status_code == 404 and response.json() == {"error": "Shop not found"}


# -- 400 -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "error"),
    [
        (b"", "Body must be JSON"),
        (b"type=echo", "Body must be JSON"),
        (b'{"type": "echo", ', "Body must be JSON"),
        (b'"\xff"', "Body must be JSON"),
        (b"[1, 2]", 'Body must be a JSON object {"type": ..., "input": {...}}'),
        (b"null", 'Body must be a JSON object {"type": ..., "input": {...}}'),
        (b'{"input": {"message": "x"}}', "Invalid request"),
        (b'{"type": 5, "input": {}}', "Invalid request"),
        (b'{"type": "echo"}', "Invalid request"),
        (b'{"type": "echo", "input": "hello"}', "Invalid request"),
        (b'{"type": "nope", "input": {}}', "Unknown job type"),
        (b'{"type": "__class__", "input": {}}', "Unknown job type"),
    ],
)
async def test_malformed_bodies_are_400(
    client: httpx.AsyncClient, database: Database, content: bytes, error: str
) -> None:
    response = await client.post(
        signed("/proxy/process"), content=content, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"] == error
    assert await _job_count(database) == 0


async def test_input_failing_the_types_model_names_the_fields(
    client: httpx.AsyncClient, database: Database, redis: ArqRedis
) -> None:
    payload = {"type": "echo", "input": {"sleep_ms": "soon", "fail_times": -1, "bogus": 1}}
    response = await client.post(signed("/proxy/process"), json=payload)
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "Invalid input"
    fields = {d["field"]: d["type"] for d in body["details"]}
    assert fields == {
        "input.message": "missing",
        "input.sleep_ms": "int_parsing",
        "input.fail_times": "greater_than_equal",
        "input.bogus": "extra_forbidden",
    }
    assert await _job_count(database) == 0
    assert await queue_entries(redis) == {}


async def test_validation_errors_do_not_echo_huge_input(client: httpx.AsyncClient) -> None:
    huge = "x" * 50_000
    payload = {"type": "echo", "input": {"message": huge, huge[:5_000]: 1}}
    response = await client.post(signed("/proxy/process"), json=payload)
    assert response.status_code == 400
    assert len(response.content) < 2_000 and "x" * 100 not in response.text
    fields = {d["field"]: d["type"] for d in response.json()["details"]}
    assert fields == {
        "input.message": "string_too_long",
        "input." + "x" * 63 + "…": "extra_forbidden",
    }


async def test_a_nul_character_in_input_is_400_not_500(
    client: httpx.AsyncClient, database: Database
) -> None:
    payload = {"type": "echo", "input": {"message": "a\x00b"}}
    response = await client.post(signed("/proxy/process"), json=payload)
    assert response.status_code == 400 and response.json()["error"] == "Invalid input"
    assert await _job_count(database) == 0


async def test_deeply_nested_json_is_400_not_500(client: httpx.AsyncClient) -> None:
    body = b'{"type": "echo", "input": {"message": "x", "deep": ' + b"[" * 500 + b"]" * 500 + b"}}"
    response = await client.post(
        signed("/proxy/process"), content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400 and response.json()["error"] == "Body is nested too deeply"


async def test_echo_is_unknown_when_diagnostic_jobs_are_off(
    settings: Settings, database: Database, shop: store.Shop
) -> None:
    async with app_with(settings.model_copy(update={"enable_diagnostic_jobs": False})) as c:
        response = await c.post(signed("/proxy/process"), json=ECHO)
    assert response.status_code == 400 and response.json()["error"] == "Unknown job type"


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ("", "Missing jobId"),
        ("?jobId=", "Missing jobId"),
        ("?jobId=not-a-uuid", "Malformed jobId: expected a UUID"),
        ("?jobId=12345678-1234-1234-1234-1234567890123", "Malformed jobId: expected a UUID"),
        (f"?jobId={'a' * 5000}", "Malformed jobId: expected a UUID"),
        (f"?jobId={uuid4()}{'-' * 28}junk", "Malformed jobId: expected a UUID"),
        (f"?jobId={uuid4()}&jobId={uuid4()}", "Repeated jobId"),
    ],
)
async def test_status_without_a_valid_job_id_is_400(
    client: httpx.AsyncClient, query: str, error: str
) -> None:
    response = await client.get(signed(f"/proxy/status{query}"))
    assert response.status_code == 400 and response.json()["error"] == error


# -- GET /proxy/status ----------------------------------------------------------------------


async def test_status_of_a_pending_job(client: httpx.AsyncClient) -> None:
    job_id = await _create(client)
    response = await client.get(signed(f"/proxy/status?jobId={job_id}"))
    assert response.status_code == 200
    assert response.json() == {"jobId": job_id, "status": "pending", "progress": 0}
    assert response.headers["cache-control"] == "no-store"


async def test_status_shows_progress_and_result_only_when_completed(
    client: httpx.AsyncClient, database: Database
) -> None:
    job_id = await _create(client)
    url = signed(f"/proxy/status?jobId={job_id}")
    await _set(database, job_id, status="processing", progress=40, progress_message="halfway")
    assert (await client.get(url)).json() == {
        "jobId": job_id,
        "status": "processing",
        "progress": 40,
        "progressMessage": "halfway",
    }
    await _set(database, job_id, status="retrying", error_message="try again")
    assert "error" not in (await client.get(url)).json()
    await _set(
        database,
        job_id,
        status="completed",
        progress=100,
        progress_message=None,
        result='{"message": "hello"}',
    )
    response = await client.get(url)
    assert response.json() == {
        "jobId": job_id,
        "status": "completed",
        "progress": 100,
        "result": {"message": "hello"},
    }
    assert response.headers["cache-control"] == "no-store"


async def test_status_shows_the_error_only_when_failed(
    client: httpx.AsyncClient, database: Database
) -> None:
    job_id = await _create(client)
    await _set(database, job_id, status="retrying", error_message="echo: boom", error_public=True)
    response = await client.get(signed(f"/proxy/status?jobId={job_id}"))
    assert "error" not in response.json()
    await _set(database, job_id, status="failed", progress=10)
    response = await client.get(signed(f"/proxy/status?jobId={job_id}"))
    assert response.json() == {
        "jobId": job_id,
        "status": "failed",
        "progress": 10,
        "error": "echo: boom",
    }
    # An unexpected exception's text is not the storefront's to read.
    await _set(database, job_id, error_message="connection to 10.0.0.7:5432 refused")
    await _set(database, job_id, error_public=False)
    response = await client.get(signed(f"/proxy/status?jobId={job_id}"))
    assert response.json()["error"] == "The job failed"


async def test_a_job_of_another_shop_is_not_found(
    client: httpx.AsyncClient, database: Database
) -> None:
    await store.upsert_shop(database, OTHER_SHOP, "t", "")
    job_id = await _create(client)
    response = await client.get(signed(f"/proxy/status?jobId={job_id}", shop=OTHER_SHOP))
    assert response.status_code == 404 and response.json() == {"error": "Job not found"}


async def test_a_job_that_does_not_exist_is_not_found(client: httpx.AsyncClient) -> None:
    response = await client.get(signed(f"/proxy/status?jobId={uuid4()}"))
    assert response.status_code == 404 and response.json() == {"error": "Job not found"}


async def test_a_customers_job_is_theirs_alone(client: httpx.AsyncClient) -> None:
    job_id = await _create(client, customer="1")
    path = f"/proxy/status?jobId={job_id}"
    assert (await client.get(signed(path, customer="1"))).status_code == 200
    for other in ("2", ""):
        response = await client.get(signed(path, customer=other))
        assert response.status_code == 404 and response.json() == {"error": "Job not found"}


async def test_an_anonymous_job_is_visible_to_anyone_of_the_shop_with_its_id(
    client: httpx.AsyncClient,
) -> None:
    job_id = await _create(client, customer="")
    for customer in ("", "5"):
        response = await client.get(signed(f"/proxy/status?jobId={job_id}", customer=customer))
        assert response.status_code == 200 and response.json()["jobId"] == job_id


# -- 413 / 405 -----------------------------------------------------------------------------


async def test_a_body_over_64_kib_is_413(client: httpx.AsyncClient, database: Database) -> None:
    payload = {"type": "echo", "input": {"message": "x" * MAX_BODY_BYTES}}
    response = await client.post(signed("/proxy/process"), json=payload)
    assert response.status_code == 413 and response.json()["error"] == "Request body too large"
    assert await _job_count(database) == 0


async def test_a_chunked_body_over_64_kib_is_413(
    client: httpx.AsyncClient, database: Database
) -> None:
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        yield b'{"type": "echo", "input": {"message": "'
        for _ in range(1_000):  # 1 MB if nobody stops reading
            sent += 1
            yield b"x" * 1024
        yield b'"}}'

    response = await client.post(signed("/proxy/process"), content=chunks())
    assert "content-length" not in response.request.headers
    assert response.status_code == 413 and response.json()["error"] == "Request body too large"
    assert await _job_count(database) == 0


async def test_a_client_that_disconnects_mid_body_is_not_a_500(
    client: httpx.AsyncClient, database: Database
) -> None:
    path, _, query = signed("/proxy/process").partition("?")
    incoming = [{"type": "http.request", "body": b'{"type": "echo", ', "more_body": True}]
    sent: list[dict] = []

    async def receive() -> dict:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": query.encode(),
        "headers": [(b"host", b"testserver"), (b"content-type", b"application/json")],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    await client.app(scope, receive, send)  # type: ignore[attr-defined]
    assert sent[0]["status"] == 400
    assert await _job_count(database) == 0


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", "/proxy/process", "POST"),
        ("PUT", "/proxy/process", "POST"),
        ("POST", "/proxy/status", "GET"),
        ("DELETE", "/proxy/status", "GET"),
    ],
)
async def test_wrong_method_is_405_json(
    client: httpx.AsyncClient, method: str, path: str, allowed: str
) -> None:
    response = await client.request(method, signed(path))
    assert response.status_code == 405
    assert isinstance(response.json()["error"], str)
    assert allowed in response.headers["allow"]


# -- 503: queue unreachable ------------------------------------------------------------------


async def _refused_with_503(c: httpx.AsyncClient, database: Database) -> float:
    started = time.monotonic()
    response = await c.post(signed("/proxy/process"), json=ECHO)
    elapsed = time.monotonic() - started
    assert response.status_code == 503, response.text
    assert response.json() == {"error": "Failed to queue job"}
    assert await _job_count(database) == 0
    return elapsed


async def test_nothing_listening_on_the_redis_port_is_503_and_no_row(
    settings: Settings, database: Database, shop: store.Shop
) -> None:
    dead = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    async with app_with(dead) as c:
        assert await _refused_with_503(c, database) < 3.0


async def test_a_redis_that_is_stopped_is_503_and_no_row(
    settings: Settings, database: Database, shop: store.Shop, own_redis: RedisServer
) -> None:
    async with app_with(settings.model_copy(update={"redis_url": own_redis.url})) as c:
        await _create(c)  # the pool now holds a live connection to this Redis
        assert await _job_count(database) == 1
        await database.execute("DELETE FROM jobs")
        own_redis.stop()
        assert await _refused_with_503(c, database) < 3.0


async def test_a_redis_that_hangs_is_503_within_the_timeout_and_no_row(
    settings: Settings, database: Database, shop: store.Shop, own_redis: RedisServer
) -> None:
    async with app_with(settings.model_copy(update={"redis_url": own_redis.url})) as c:
        await _create(c)
        await database.execute("DELETE FROM jobs")
        own_redis.pause()
        try:
            elapsed = await _refused_with_503(c, database)
        finally:
            own_redis.resume()
    assert 0.9 <= elapsed < 3.0  # the enqueue timeout, not an instant refusal


# -- 503: database unreachable ---------------------------------------------------------------


async def test_postgres_going_away_is_503_not_500_and_recovers(
    settings: Settings, database: Database, shop: store.Shop, servers: Services
) -> None:
    relay = Relay(servers.pg_port)
    await relay.start()
    relayed = settings.database_url.replace(f":{relay.target_port}/", f":{relay.port}/")
    try:
        async with app_with(settings.model_copy(update={"database_url": relayed})) as c:
            job_id = await _create(c)
            status_url = signed(f"/proxy/status?jobId={job_id}")
            assert (await c.get(status_url)).status_code == 200
            await relay.cut()
            for response in (
                await c.get(status_url),
                await c.post(signed("/proxy/process"), json=ECHO),
            ):
                assert response.status_code == 503, response.text
                assert response.json() == {"error": "Database unavailable"}
            await relay.start()
            assert (await c.get(status_url)).status_code == 200
    finally:
        await relay.cut()
