"""The job dashboard (/admin) in-process: access, pages, filters, paging and the actions."""

from __future__ import annotations

import base64
import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from html import unescape

import httpx
import orjson
import pytest
from arq.connections import ArqRedis
from databases import Database
from pydantic import SecretStr, ValidationError

from service import store
from service.app import create_app
from service.core.settings import Settings
from service.web.dashboard import credentials_match, csrf_token
from tests.support.config import TEST_API_KEY, TEST_SECRET, TEST_TOKEN_KEYS
from tests.support.jobs import add_job, make_shop
from tests.support.queue_entries import queue_entries, queued_score

USER, PASSWORD = "ops", "correct horse battery"


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


AUTH = basic(USER, PASSWORD)


@pytest.fixture
def admin_settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={"dashboard_username": USER, "dashboard_password": SecretStr(PASSWORD)}
    )


async def _client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client


@pytest.fixture
async def admin(
    admin_settings: Settings, database: Database, redis: ArqRedis
) -> AsyncIterator[httpx.AsyncClient]:
    async for client in _client(admin_settings):
        yield client


async def set_row(database: Database, job_id: uuid.UUID, **values: object) -> None:
    sets = ", ".join(f"{name} = :{name}" for name in values)
    await database.execute(f"UPDATE jobs SET {sets} WHERE id = :id", {"id": job_id, **values})


def rows(html: str) -> list[tuple[str, str]]:
    """(job id, status) of each row of the jobs table, in order."""
    return re.findall(r'<tr data-job-id="([0-9a-f-]+)" data-status="(\w+)">', html)


def card(html: str, status: str) -> int:
    match = re.search(rf'data-status="{status}"\s+href="[^"]*">\s*<b>(\d+)</b>', html)
    assert match, f"no {status} card"
    return int(match.group(1))


async def post(client: httpx.AsyncClient, path: str, **form: str) -> httpx.Response:
    return await client.post(path, data=form, headers=AUTH)


# -- access --------------------------------------------------------------------------------


async def test_without_a_password_the_dashboard_does_not_exist(
    settings: Settings, database: Database, redis: ArqRedis
) -> None:
    assert settings.dashboard_password is None
    async for client in _client(settings):
        for path in ("/admin/", "/admin/jobs/x"):
            answer = await client.get(path, headers=AUTH)
            assert answer.status_code == 404
            assert "DASHBOARD_PASSWORD" in answer.json()["error"]
        answer = await client.post("/admin/retry-failed", headers=AUTH, data={"type": "echo"})
        assert answer.status_code == 404


async def test_credentials_are_required(admin: httpx.AsyncClient) -> None:
    for headers in (
        {},
        basic(USER, "wrong password"),
        basic("someone", PASSWORD),
        basic(USER, PASSWORD + "x"),
        {"Authorization": "Bearer " + PASSWORD},
        {"Authorization": "Basic !!!not-base64"},
    ):
        for method, path in (("GET", "/admin/"), ("POST", "/admin/retry-failed")):
            answer = await admin.request(method, path, headers=headers)
            assert answer.status_code == 401, (headers, path)
            assert answer.headers["www-authenticate"].startswith('Basic realm="shopjobs admin"')
            assert answer.json() == {"error": "Unauthorized"}
    bare = await admin.get("/admin", headers=AUTH)
    assert bare.status_code == 307 and bare.headers["location"].endswith("/admin/")
    answer = await admin.get("/admin/", headers=AUTH)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/html")
    assert answer.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]
    assert answer.headers["cache-control"] == "no-store"


def test_credentials_match() -> None:
    header = basic("admin", "p:ss wörd")["Authorization"]
    assert credentials_match(header, "admin", "p:ss wörd")
    assert credentials_match(header.replace("Basic", "basic"), "admin", "p:ss wörd")
    assert not credentials_match(header, "admin", "p:ss word")
    assert not credentials_match(header, "Admin", "p:ss wörd")
    assert not credentials_match(None, "admin", "p:ss wörd")
    assert not credentials_match("Basic " + base64.b64encode(b"admin").decode(), "admin", "")


def test_dashboard_settings_are_checked() -> None:
    base = {
        "database_url": "postgresql://x/y",
        "redis_url": "redis://x",
        "shopify_api_key": TEST_API_KEY,
        "shopify_api_secret": TEST_SECRET,
        "token_encryption_keys": TEST_TOKEN_KEYS,
    }
    assert Settings(**base, dashboard_password="").dashboard_password is None
    with pytest.raises(ValidationError, match="at least 12 characters"):
        Settings(**base, dashboard_password="short")
    with pytest.raises(ValidationError, match="must not contain ':'"):
        Settings(**base, dashboard_username="a:b", dashboard_password=PASSWORD)
    with pytest.raises(ValidationError, match="log_format"):
        Settings(**base, log_format="xml")


# -- pages ---------------------------------------------------------------------------------


async def test_the_list_counts_filters_and_pages(
    admin: httpx.AsyncClient, database: Database, redis: ArqRedis
) -> None:
    alpha = await make_shop(database, "alpha-store.myshopify.com")
    bravo = await make_shop(database, "bravo-store.myshopify.com")
    ids = []
    for n in range(53):
        shop = alpha if n % 2 else bravo
        ids.append(await add_job(database, redis, shop, {"message": f"m{n}"}, enqueue=False))
        await set_row(database, ids[-1], created_at=datetime(2025, 1, 1, 0, n, tzinfo=UTC))
    await set_row(database, ids[0], status="failed", error_message="boom")
    await set_row(database, ids[1], status="completed")
    await set_row(database, ids[2], type="other")

    page = (await admin.get("/admin/", headers=AUTH)).text
    assert card(page, "pending") == 51 and card(page, "failed") == 1
    assert card(page, "completed") == 1 and card(page, "processing") == 0
    listed = rows(page)
    assert len(listed) == 50 and listed[0][0] == str(ids[-1])  # newest first
    assert 'rel="next"' in page and 'rel="prev"' not in page
    older = (await admin.get("/admin/?page=2", headers=AUTH)).text
    assert [job for job, _ in rows(older)] == [str(i) for i in reversed(ids[:3])]
    assert 'rel="prev"' in older and 'rel="next"' not in older

    failed = (await admin.get("/admin/?status=failed", headers=AUTH)).text
    assert rows(failed) == [(str(ids[0]), "failed")] and "boom" in failed
    bravo_only = (await admin.get("/admin/?shop=BRAVO", headers=AUTH)).text
    assert len(rows(bravo_only)) == 27 and "alpha-store" not in bravo_only.split("<table")[1]
    assert card(bravo_only, "pending") == 26  # the counts follow the shop and type filters
    other = (await admin.get("/admin/?type=other", headers=AUTH)).text
    assert rows(other) == [(str(ids[2]), "pending")]
    none = (await admin.get("/admin/?shop=%25", headers=AUTH)).text  # LIKE wildcards are text
    assert rows(none) == [] and 'id="no-jobs"' in none

    too_long = ("page=" + "9" * 5000, "shop=" + "x" * 300)  # int() refuses over 4300 digits
    for bad in ("status=done", "page=0", "page=x", "page=10001", *too_long):
        answer = await admin.get(f"/admin/?{bad}", headers=AUTH)
        assert answer.status_code == 400, bad
        assert "error" in answer.json()


async def test_a_jobs_page_shows_input_attempts_error_and_timings(
    admin: httpx.AsyncClient, database: Database, redis: ArqRedis
) -> None:
    shop = await make_shop(database)
    job_id = await add_job(database, redis, shop, {"message": "<b>hi</b>"}, enqueue=False)
    await set_row(
        database,
        job_id,
        status="failed",
        attempts=3,
        retry_count=3,
        error_message="Timed out after 5s",
        progress=40,
        progress_message="page 2 of 5",
        started_at=datetime(2025, 1, 1, 0, 0, 1, tzinfo=UTC),
        finished_at=datetime(2025, 1, 1, 0, 0, 4, tzinfo=UTC),
    )
    answer = await admin.get(f"/admin/jobs/{job_id}", headers=AUTH)
    assert answer.status_code == 200
    page = answer.text
    assert "&lt;b&gt;hi&lt;/b&gt;" in page and "<b>hi</b>" not in page  # escaped
    assert orjson.loads(unescape(re.search(r'<pre id="input">(.*?)</pre>', page, re.S)[1])) == {
        "message": "<b>hi</b>"
    }
    assert "3 started, 3 failed" in page and "Timed out after 5s" in page
    assert "page 2 of 5" in page and "2025-01-01 00:00:04 UTC" in page
    assert "3.00s after start" in page
    assert f'action="/admin/jobs/{job_id}/retry"' in page
    assert f'action="/admin/jobs/{job_id}/cancel"' not in page
    for path in (
        f"/admin/jobs/{uuid.uuid4()}",
        "/admin/jobs/not-a-uuid",
        f"/admin/jobs/{job_id}{'-' * 28}junk",  # not cut to its valid prefix
    ):
        answer = await admin.get(path, headers=AUTH)
        assert answer.status_code == 404 and answer.json() == {"error": "Job not found"}


# -- actions -------------------------------------------------------------------------------


async def test_actions_need_the_csrf_token_and_a_form(
    admin: httpx.AsyncClient, admin_settings: Settings, database: Database, redis: ArqRedis
) -> None:
    shop = await make_shop(database)
    job_id = await add_job(database, redis, shop, {"message": "x"}, enqueue=False)
    path = f"/admin/jobs/{job_id}/cancel"
    assert (await post(admin, path, back="")).status_code == 403
    assert (await post(admin, path, csrf="0" * 64)).status_code == 403
    as_json = await admin.post(path, json={"csrf": csrf_token(admin_settings)}, headers=AUTH)
    assert as_json.status_code == 400
    too_big = await post(admin, path, csrf=csrf_token(admin_settings), pad="x" * 5000)
    assert too_big.status_code == 413
    assert (await store.get_job(database, job_id)).status == "pending"
    # The token is in the pages, and changes with the credentials.
    page = (await admin.get("/admin/", headers=AUTH)).text
    assert f'name="csrf" value="{csrf_token(admin_settings)}"' in page
    other = admin_settings.model_copy(update={"dashboard_password": SecretStr("another password")})
    assert csrf_token(other) != csrf_token(admin_settings)


async def test_retry_puts_a_failed_job_back_in_the_queue(
    admin: httpx.AsyncClient, admin_settings: Settings, database: Database, redis: ArqRedis
) -> None:
    shop = await make_shop(database)
    job_id = await add_job(database, redis, shop, {"message": "x"}, enqueue=False)
    await set_row(
        database,
        job_id,
        status="failed",
        attempts=3,
        retry_count=3,
        error_message="boom",
        started_at=datetime(2025, 1, 1, tzinfo=UTC),
        finished_at=datetime(2025, 1, 1, 0, 0, 1, tzinfo=UTC),
    )
    answer = await post(
        admin, f"/admin/jobs/{job_id}/retry", csrf=csrf_token(admin_settings), back="status=failed"
    )
    assert answer.status_code == 303
    assert answer.headers["location"] == (
        f"/admin/jobs/{job_id}?notice=retried&back=status%3Dfailed"
    )
    job = await store.get_job(database, job_id)
    assert (job.status, job.attempts, job.retry_count, job.error_message) == ("pending", 0, 0, None)
    assert job.finished_at is None and job.started_at is None
    assert await queued_score(redis, str(job_id)) is not None
    shown = (await admin.get(answer.headers["location"], headers=AUTH)).text
    assert "Job queued again" in shown and 'href="/admin/?status=failed"' in shown

    # A job that is not failed is left alone.
    again = await post(admin, f"/admin/jobs/{job_id}/retry", csrf=csrf_token(admin_settings))
    assert again.status_code == 303 and "notice=not-failed" in again.headers["location"]
    missing = await post(
        admin, f"/admin/jobs/{uuid.uuid4()}/retry", csrf=csrf_token(admin_settings)
    )
    assert missing.status_code == 404


async def test_cancel_touches_every_job_not_yet_final(
    admin: httpx.AsyncClient, admin_settings: Settings, database: Database, redis: ArqRedis
) -> None:
    shop = await make_shop(database)
    token = csrf_token(admin_settings)
    outcomes = {}
    for status in ("pending", "retrying", "processing", "completed", "failed"):
        job_id = await add_job(database, redis, shop, {"message": status}, enqueue=False)
        await set_row(database, job_id, status=status)
        answer = await post(admin, f"/admin/jobs/{job_id}/cancel", csrf=token)
        assert answer.status_code == 303
        job = await store.get_job(database, job_id)
        outcomes[status] = (answer.headers["location"].split("notice=")[1], job.status)
    assert outcomes == {
        "pending": ("cancelled", "failed"),
        "retrying": ("cancelled", "failed"),
        "processing": ("cancelled", "failed"),
        "completed": ("not-cancellable", "completed"),
        "failed": ("not-cancellable", "failed"),
    }
    cancelled = await database.fetch_all(
        "SELECT error_message, finished_at FROM jobs WHERE error_message = 'Cancelled'"
    )
    assert len(cancelled) == 3 and all(row._mapping["finished_at"] for row in cancelled)


async def test_retry_all_failed_jobs_of_a_type(
    admin: httpx.AsyncClient, admin_settings: Settings, database: Database, redis: ArqRedis
) -> None:
    shop = await make_shop(database)
    ids = {}
    for name, job_type, error_message in (
        ("failed-1", "echo", "boom"),
        ("failed-2", "echo", "bang"),
        ("cancelled", "echo", store.CANCELLED_MESSAGE),
        ("other-type", "other", "boom"),
    ):
        ids[name] = await add_job(database, redis, shop, {"message": name}, job_type, enqueue=False)
        await set_row(database, ids[name], status="failed", error_message=error_message)
    page = (await admin.get("/admin/", headers=AUTH)).text
    assert re.search(r'data-type="echo">.*?2 failed', page, re.S)  # cancelled not counted

    answer = await post(admin, "/admin/retry-failed", csrf=csrf_token(admin_settings), type="echo")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/admin/?type=echo&notice=bulk-retried&n=2"
    statuses = {name: (await store.get_job(database, i)).status for name, i in ids.items()}
    assert statuses == {
        "failed-1": "pending",
        "failed-2": "pending",
        "cancelled": "failed",
        "other-type": "failed",
    }
    queued = set(await queue_entries(redis))
    assert queued == {str(ids["failed-1"]), str(ids["failed-2"])}
    shown = (await admin.get(answer.headers["location"], headers=AUTH)).text
    assert "2 failed echo job(s) queued again." in shown
    missing = await post(admin, "/admin/retry-failed", csrf=csrf_token(admin_settings))
    assert missing.status_code == 400


async def test_filters_postgres_cannot_take_are_400_not_500(
    admin: httpx.AsyncClient, admin_settings: Settings, database: Database, redis: ArqRedis
) -> None:
    await make_shop(database)
    for bad in ("type=echo%00", "shop=demo%00"):
        answer = await admin.get(f"/admin/?{bad}", headers=AUTH)
        assert answer.status_code == 400 and "error" in answer.json(), bad
    csrf = csrf_token(admin_settings)
    answer = await post(admin, "/admin/retry-failed", csrf=csrf, type="echo\x00")
    assert answer.status_code == 400 and "error" in answer.json()
