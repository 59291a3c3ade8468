"""Shared fixtures: one real Postgres and one real Redis per test session, clean per test."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from arq.connections import ArqRedis
from databases import Database

from service import store
from service.core import queue
from service.core.db import apply_schema, create_database
from service.core.settings import Settings
from service.core.token_cipher import TokenCipher
from tests.breakable import RedisServer
from tools import services as local_services

ROOT = Path(__file__).resolve().parent.parent
TEST_SECRET = "test-api-secret"
TEST_API_KEY = "test-api-key"
# The suite's own key for shops' tokens (TOKEN_ENCRYPTION_KEYS). A constant, not made per run:
# test modules import this file a second time as `tests.conftest`, which must agree.
TEST_TOKEN_KEYS = "sj8ySmE8-lxd2OMc-ZqD2lFMcqbEDdGJ4yNK_EsiEwM="


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """Keep each phase's report on the test item, so fixtures can tell whether the test failed
    (the browser tests save a screenshot then). A plain attribute, not a StashKey: test modules
    import this file as `tests.conftest`, a second copy of the module pytest loaded."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


def item_failed(item: pytest.Item) -> bool:
    reports = (getattr(item, f"report_{when}", None) for when in ("setup", "call"))
    return any(report is not None and report.failed for report in reports)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[local_services.Services]:
    base = tmp_path_factory.mktemp("servers")
    svc = local_services.start(base, fixed_ports=False, durable=False)

    async def prepare() -> None:
        database = create_database(svc.database_url, min_size=1, max_size=1)
        await database.connect()
        await apply_schema(database)
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
        job_backoff_seconds=0.2,
        job_lease_seconds=3,
        rate_limit_max=0,  # tests of the limiter turn it on
        shop_cache_seconds=0,  # tests change shops behind the app's back; tests/test_shop_cache.py
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
        "JOB_BACKOFF_SECONDS": str(settings.job_backoff_seconds),
        "JOB_LEASE_SECONDS": str(settings.job_lease_seconds),
        "RATE_LIMIT_MAX": str(settings.rate_limit_max),
        "PYTHONUNBUFFERED": "1",
    }
    return values


@pytest.fixture
async def database(settings: Settings) -> AsyncIterator[Database]:
    """A connection to the test database, with every table emptied first."""
    db = create_database(settings.database_url, min_size=1, max_size=5)
    await db.connect()
    tables = await db.fetch_all("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    if tables:
        names = ", ".join(t._mapping["tablename"] for t in tables)
        await db.execute(f"TRUNCATE {names} RESTART IDENTITY CASCADE")
    yield db
    await db.disconnect()


async def shop_with_tokens(database: Database, domain: str) -> store.Shop | None:
    """The shop with its tokens as the worker sees them: read and decrypted."""
    shop = await store.get_shop(database, domain, tokens=True)
    if shop is None:
        return None
    cipher = TokenCipher(TEST_TOKEN_KEYS)
    return dataclasses.replace(
        shop,
        access_token=cipher.decrypt(shop.access_token),
        refresh_token=cipher.decrypt(shop.refresh_token),
    )


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


def wait_for_http(url: str, timeout: float = 20.0, status: int = 200) -> httpx.Response:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            response = httpx.get(url, timeout=1.0)
            if response.status_code == status:
                return response
            last = response.status_code
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.1)
    raise AssertionError(f"{url} did not answer {status} within {timeout}s (last: {last!r})")


class Process:
    """A project process (web or worker) run as a real subprocess, its output kept in a file."""

    def __init__(
        self, args: list[str], env: dict[str, str], log: Path, cwd: Path | None = None
    ) -> None:
        self.log_path = log
        self._log = open(log, "wb")
        self.popen = subprocess.Popen(
            args,
            env=env,
            cwd=cwd or ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, signum: int) -> None:
        self.popen.send_signal(signum)

    def wait(self, timeout: float) -> int:
        return self.popen.wait(timeout)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        self._log.close()


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[callable]:  # type: ignore[valid-type]
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


def worker_command() -> list[str]:
    return [sys.executable, "-m", "arq", "jobs.WorkerSettings"]


def web_command(port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "service.app:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A second, breakable Redis (see RedisServer); stopped after the test."""
    server = RedisServer(tmp_path / "own-redis")
    server.start()
    yield server
    server.stop()


# -- HTTP servers in threads (the app, the Shopify emulator, test doubles) ---------------------


class ServedApp:
    """An ASGI app served by uvicorn on a free port, in a thread with its own event loop."""

    def __init__(self, app: object, port: int | None = None) -> None:
        import threading

        import uvicorn

        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> ServedApp:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise AssertionError(f"server on :{self.port} did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)


@pytest.fixture
def serve() -> Iterator[callable]:  # type: ignore[valid-type]
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
def emulator(serve) -> callable:  # type: ignore[valid-type]
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


class HandlerContext:
    """A JobContext for calling a job handler directly (the worker builds the real one)."""

    def __init__(
        self,
        *,
        shop: str,
        job_type: str,
        job_id: str | None = None,
        admin: object = None,
        database: object = None,
        attempt: int = 1,
    ) -> None:
        import uuid

        self.job_id = job_id or str(uuid.uuid4())
        self.job_type = job_type
        self.shop = shop
        self.attempt = attempt
        self.admin = admin
        self.database = database
        self.progress: list[tuple[int, str | None]] = []

    async def report_progress(self, percent: int, message: str | None = None) -> None:
        self.progress.append((percent, message))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The fault suite's figures (tests/faults_helpers.py), when any of it ran."""
    helpers = sys.modules.get("tests.faults_helpers")
    if helpers is not None and helpers.FIGURES:
        for line in helpers.summary_lines():
            terminalreporter.write_line(line)
