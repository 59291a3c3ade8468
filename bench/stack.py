"""The system under test: its own Postgres and Redis, one shop, and the processes to start.

The servers come from tools/services.py in a temporary directory on free ports, with
`durable=False` (fsync, synchronous_commit and Redis' append-only file off), as in the tests:
the benchmark measures the job system, not the disk.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
from redis.asyncio import Redis

from bench.cpu import CpuMeter, children, pid_from_file
from service import store
from service.core.db import create_database
from service.migrations import apply_migrations
from tools import services

ROOT = Path(__file__).resolve().parent.parent
SHOP = "bench-shop.myshopify.com"
API_KEY = "bench-api-key"
API_SECRET = "bench-api-secret"
# A throwaway key for TOKEN_ENCRYPTION_KEYS: benchmarks store no real token.
TOKEN_KEYS = "ZmVYpGQqgm3pY9xW0qG8YvQ0cH2vV6H4y7k2n8N5mGE="


@dataclass
class Stack:
    """Where the servers listen, the bench shop, and the clients the harness measures with."""

    database_url: str
    redis_url: str
    workdir: Path
    redis_pid_file: Path | None = None
    pg_pid_file: Path | None = None
    shop_id: int = 0
    redis: Redis | None = None
    pg: asyncpg.Connection | None = None
    processes: list[Proc] = field(default_factory=list)

    def env(self, **overrides: object) -> dict[str, str]:
        """The environment of a web or worker process: the product's settings for a benchmark.

        The rate limiter is off and completed jobs are kept (retention would delete rows the
        harness still counts); the storefront quotas are counted but set out of reach, so
        their cost is measured; everything else is the product's default.
        """
        values = {
            **os.environ,
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis_url,
            "SHOPIFY_API_KEY": API_KEY,
            "SHOPIFY_API_SECRET": API_SECRET,
            "TOKEN_ENCRYPTION_KEYS": TOKEN_KEYS,
            "SHOPIFY_APP_URL": "http://127.0.0.1:8000",
            "ENABLE_DIAGNOSTIC_JOBS": "true",
            "RATE_LIMIT_MAX": "0",
            "PROXY_LIMIT_SHOP_PER_MINUTE": "1000000000",
            "PROXY_LIMIT_CUSTOMER_PER_MINUTE": "1000000000",
            "COMPLETED_RETENTION_COUNT": "100000000",
            "WEB_METRICS_PORT": "0",  # the bench scrapes nothing; its webs need no second port
            "PYTHONUNBUFFERED": "1",
        }
        values.update({k.upper(): str(v) for k, v in overrides.items()})
        return values

    async def reset(self) -> None:
        """Empty the queue and the jobs table between runs (the shops stay). job_steps
        references jobs, and job_events is the jobs' too (docs/waits.md)."""
        assert self.redis is not None and self.pg is not None
        await self.redis.flushdb()
        await self.pg.execute("TRUNCATE jobs, job_steps, job_events, webhook_events CASCADE")

    def cpu_meter(self, **groups: list[Proc]) -> CpuMeter:
        """A CpuMeter over the given processes and, when the harness started them, the servers."""
        listed: dict[str, Callable[[], list[int]]] = {
            name: (lambda procs=procs: [p.pid for p in procs]) for name, procs in groups.items()
        }
        redis_pid = pid_from_file(self.redis_pid_file)
        if redis_pid is not None:
            listed["redis"] = lambda: [redis_pid]
        postmaster = pid_from_file(self.pg_pid_file)
        if postmaster is not None:
            listed["postgres"] = lambda: [postmaster, *children(postmaster)]
        return CpuMeter(listed)

    def spawn(self, args: list[str], env: dict[str, str], name: str, cwd: Path = ROOT) -> Proc:
        proc = Proc(args, env, self.workdir / f"{name}-{len(self.processes)}.log", cwd)
        self.processes.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.processes:
            proc.stop()
        self.processes.clear()


class Proc:
    """A process the harness started (its own session), its output kept in a log file."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path, cwd: Path) -> None:
        self.log_path = log
        self._log = open(log, "wb")  # closed in stop()
        self.popen = subprocess.Popen(
            args, env=env, cwd=cwd, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def check_alive(self, what: str) -> None:
        if self.popen.poll() is not None:
            tail = self.output()[-3000:]
            raise RuntimeError(f"{what} exited with {self.popen.returncode}:\n{tail}")

    def stop(self, timeout: float = 20.0) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        self._log.close()


def worker_command() -> list[str]:
    return [sys.executable, "-m", "arq", "jobs.WorkerSettings"]


def web_command(port: int) -> list[str]:
    """The product's web command (the Dockerfile's), serving the bench app (bench/web_app.py)."""
    return [
        sys.executable, "-m", "uvicorn", "bench.web_app:app",
        "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip


async def wait_for_http(url: str, proc: Proc, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=1.0) as client:
        while time.monotonic() < deadline:
            proc.check_alive(what)
            try:
                if (await client.get(url)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.05)
    raise RuntimeError(f"{what} did not answer on {url} within {timeout:g}s")


@contextmanager
def servers() -> Iterator[Stack]:
    """Start Postgres and Redis of the benchmark's own in a temp dir; stop them afterwards.

    Always its own: the harness empties the jobs table and flushes Redis between runs.
    """
    with tempfile.TemporaryDirectory(prefix="shopjobs-bench-") as tmp:
        base = Path(tmp) / "servers"
        started = services.start(base, fixed_ports=False, durable=False)
        stack = Stack(
            database_url=started.database_url,
            redis_url=started.redis_url,
            workdir=Path(tmp),
            redis_pid_file=Path(started.redis_pidfile),
            pg_pid_file=Path(started.pg_data).resolve() / "postmaster.pid",
        )
        try:
            yield stack
        finally:
            stack.stop_all()
            # remove_data: as root, Postgres' data may live outside the temp dir.
            services.stop(base, remove_data=True)
            if keep := os.environ.get("BENCH_KEEP_LOGS"):  # the processes' logs, to read after
                Path(keep).mkdir(parents=True, exist_ok=True)
                for log in Path(tmp).glob("*.log"):
                    shutil.copy(log, Path(keep) / log.name)


async def connect(stack: Stack) -> None:
    """Apply the schema, register the bench shop, open the harness's own clients."""
    database = create_database(stack.database_url, min_size=1, max_size=1)
    await database.connect()
    try:
        await apply_migrations(database)
        shop = await store.upsert_shop(database, SHOP, "shpat_bench", "read_products")
    finally:
        await database.disconnect()
    stack.shop_id = shop.id
    stack.pg = await asyncpg.connect(stack.database_url)
    stack.redis = Redis.from_url(stack.redis_url)


async def disconnect(stack: Stack) -> None:
    if stack.redis is not None:
        await stack.redis.aclose()
    if stack.pg is not None:
        await stack.pg.close()
