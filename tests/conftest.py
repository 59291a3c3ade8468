"""Shared fixtures: one real Postgres and one real Redis per test session, clean per test.

The servers start only when a test asks for them (through `settings`, `database`, `redis`...):
the unit tests ask for none, so `make test-unit` starts nothing. Each folder's tests are
marked with its kind (unit, integration, faults, browser, deploy), registered in pyproject.toml.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest
from arq.connections import ArqRedis
from databases import Database

from service import queue
from service.core.db import create_database
from service.core.settings import Settings
from service.migrations import apply_migrations
from tests.support.breakable import RedisServer
from tests.support.config import TEST_API_KEY, TEST_SECRET, TEST_TOKEN_KEYS
from tests.support.effects import create_effects_table
from tests.support.net import ServedApp, free_port
from tests.support.processes import Process, Spawn
from tools import services as local_services

TESTS = Path(__file__).resolve().parent
KINDS = ("unit", "integration", "faults", "browser", "deploy")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark each test with its folder's kind; a unit test asking for a server is an error."""
    for item in items:
        kind = item.path.relative_to(TESTS).parts[0]
        if kind not in KINDS:
            raise pytest.UsageError(f"{item.nodeid}: a test lives in tests/<kind>/, kinds {KINDS}")
        item.add_marker(kind)
        if kind == "unit" and "servers" in getattr(item, "fixturenames", ()):
            raise pytest.UsageError(
                f"{item.nodeid}: a unit test starts no server; it belongs in tests/integration/"
            )


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[local_services.Services]:
    base = tmp_path_factory.mktemp("servers")
    svc = local_services.start(base, fixed_ports=False, durable=False)

    async def prepare() -> None:
        database = create_database(svc.database_url, min_size=1, max_size=1)
        await database.connect()
        await apply_migrations(database)
        await database.disconnect()

    asyncio.run(prepare())
    yield svc
    local_services.stop(base, remove_data=True)


@pytest.fixture
def settings(servers: local_services.Services) -> Settings:
    return Settings(
        database_url=servers.database_url,
        redis_url=servers.redis_url,
        shopify_api_key=TEST_API_KEY,
        shopify_api_secret=TEST_SECRET,
        token_encryption_keys=TEST_TOKEN_KEYS,
        shopify_app_url="http://testserver",
        enable_diagnostic_jobs=True,
        worker_health_port=free_port(),
        web_metrics_port=0,  # off: tests/integration/test_metrics.py gives each web its own
        job_backoff_seconds=0.2,
        job_lease_seconds=3,
        rate_limit_max=0,  # tests of the limiter turn it on
        proxy_limit_shop_per_minute=0,  # tests of the storefront quotas turn them on
        proxy_limit_customer_per_minute=0,
        dashboard_login_max_failures=0,  # tests/integration/test_dashboard_logins.py turns it on
        shop_cache_seconds=0,  # tests change shops behind the app's back; tests/integration/test_shop_cache.py
    )


@pytest.fixture
def env(settings: Settings) -> dict[str, str]:
    """Environment for a subprocess (web, worker, CLI) that matches `settings`."""
    values = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "SHOPIFY_API_KEY": settings.shopify_api_key,
        "SHOPIFY_API_SECRET": settings.shopify_api_secret.get_secret_value(),
        "TOKEN_ENCRYPTION_KEYS": settings.token_encryption_keys.get_secret_value(),
        "SHOPIFY_APP_URL": settings.shopify_app_url,
        "ENABLE_DIAGNOSTIC_JOBS": "true",
        "WORKER_HEALTH_PORT": str(settings.worker_health_port),
        "WEB_METRICS_PORT": str(settings.web_metrics_port),
        "JOB_BACKOFF_SECONDS": str(settings.job_backoff_seconds),
        "JOB_LEASE_SECONDS": str(settings.job_lease_seconds),
        "RATE_LIMIT_MAX": str(settings.rate_limit_max),
        "PROXY_LIMIT_SHOP_PER_MINUTE": str(settings.proxy_limit_shop_per_minute),
        "PROXY_LIMIT_CUSTOMER_PER_MINUTE": str(settings.proxy_limit_customer_per_minute),
        "DASHBOARD_LOGIN_MAX_FAILURES": str(settings.dashboard_login_max_failures),
        "PYTHONUNBUFFERED": "1",
    }
    return values


@pytest.fixture
async def database(settings: Settings) -> AsyncIterator[Database]:
    """A connection to the test database, with every table emptied first (and the fault
    suite's echo_effects table there: tests/support/effects.py). The record of applied
    migrations stays: `make db` against this database must find it up to date."""
    db = create_database(settings.database_url, min_size=1, max_size=5)
    await db.connect()
    tables = await db.fetch_all(
        "SELECT tablename FROM pg_tables "
        "WHERE schemaname = 'public' AND tablename <> 'schema_migrations'"
    )
    if tables:
        names = ", ".join(t._mapping["tablename"] for t in tables)
        await db.execute(f"TRUNCATE {names} RESTART IDENTITY CASCADE")
    await create_effects_table(db)
    yield db
    await db.disconnect()


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[ArqRedis]:
    """The test Redis, flushed first."""
    pool = queue.connect(settings.redis_url)
    await pool.flushdb()
    yield pool
    await pool.aclose()


@pytest.fixture
async def app_client(
    settings: Settings, database: Database, redis: ArqRedis
) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client talking to the app in-process, with its lifespan running."""
    from service.app import create_app

    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            client.app = app  # type: ignore[attr-defined]
            yield client


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Spawn]:
    """Start project processes; every one still running is stopped after the test."""
    started: list[Process] = []

    def _spawn(
        args: list[str], env: dict[str, str], name: str = "proc", cwd: Path | None = None
    ) -> Process:
        proc = Process(args, env, tmp_path / f"{name}-{len(started)}.log", cwd)
        started.append(proc)
        return proc

    yield _spawn
    for proc in started:
        proc.stop()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A second, breakable Redis (see RedisServer); stopped after the test."""
    server = RedisServer(tmp_path / "own-redis")
    server.start()
    yield server
    server.stop()


# -- HTTP servers in threads (the app, the Shopify emulator, test doubles) ---------------------


@pytest.fixture
def serve() -> Iterator[Callable[..., ServedApp]]:
    """Serve ASGI apps on free ports for the test; all are stopped afterwards."""
    served: list[ServedApp] = []

    def _serve(app: object, port: int | None = None) -> ServedApp:
        server = ServedApp(app, port).start()
        served.append(server)
        return server

    yield _serve
    for server in reversed(served):
        server.stop()


@pytest.fixture
def emulator(serve: Callable[..., ServedApp]) -> Callable[..., ServedApp]:
    """Start a local Shopify: `emulator(app_url=..., shops={...}, bucket_size=...)`."""
    from shopify_emulator import EmulatorConfig, create_app

    def _start(**overrides: object) -> ServedApp:
        values: dict[str, object] = {
            "app_url": "http://127.0.0.1:9",
            "api_key": TEST_API_KEY,
            "api_secret": TEST_SECRET,
            "webhook_retry_delays": (0.05, 0.1),
            **overrides,
        }
        config = EmulatorConfig(**values)  # type: ignore[arg-type]
        server = serve(create_app(config))
        server.config = config  # type: ignore[attr-defined]
        return server

    return _start
