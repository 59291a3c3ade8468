"""The production process model: `uvicorn service.app:app --workers N`, several web processes
on one host, and where the private servers listen (IPv6 and IPv4), all as real processes.

Before: every process of `--workers 4` bound WEB_METRICS_PORT, the second failed and uvicorn
stopped them all; the worker's health server listened on 0.0.0.0 only, so a scraper on the
Machine's private IPv6 address (Fly's) reached nothing.
"""

from __future__ import annotations

import asyncio
import os
import signal
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from service.web.metrics import LOCK_FILE
from tests.integration.test_metrics import sample
from tests.support.net import free_port, wait_for_http
from tests.support.processes import start_worker, web_command

REQUESTS = 200


def uvicorn_workers(port: int, workers: int) -> list[str]:
    return [*web_command(port), "--workers", str(workers)]


async def _hit(url: str, count: int) -> list[int]:
    """`count` GETs, each on a connection of its own, 20 at a time: the kernel hands new
    connections to whichever process accepts first, so every process gets some."""
    limits = httpx.Limits(max_keepalive_connections=0)
    gate = asyncio.Semaphore(20)
    async with httpx.AsyncClient(limits=limits, timeout=10) as client:

        async def one() -> int:
            async with gate:
                return (await client.get(url)).status_code

        return await asyncio.gather(*(one() for _ in range(count)))


def _pids_with_counters(directory: Path) -> set[str]:
    return {path.stem.split("_")[-1] for path in directory.glob("counter_*.db")}


async def _scrape(port: int, host: str = "127.0.0.1") -> str:
    async with httpx.AsyncClient(timeout=5) as client:
        response = await client.get(f"http://{host}:{port}/metrics")
        assert response.status_code == 200
        return response.text


async def _requests_counted(port: int, route: str) -> float:
    text = await _scrape(port)
    return sample(text, "shopjobs_http_requests_total", route=route, status="200")


async def test_uvicorn_workers_4_serves_and_counts_every_process(env, spawn) -> None:
    web_port, metrics_port = free_port(), free_port()
    proc = spawn(
        uvicorn_workers(web_port, 4), {**env, "WEB_METRICS_PORT": str(metrics_port)}, "web4"
    )
    wait_for_http(f"http://127.0.0.1:{web_port}/healthz", timeout=60)
    wait_for_http(f"http://127.0.0.1:{metrics_port}/metrics", timeout=30)
    baseline = await _requests_counted(metrics_port, "/healthz")  # the readiness polls

    statuses = await _hit(f"http://127.0.0.1:{web_port}/healthz", REQUESTS)
    assert statuses == [200] * REQUESTS

    # Every request counted once, whichever process answered it and whichever serves /metrics.
    assert await _requests_counted(metrics_port, "/healthz") == baseline + REQUESTS
    assert "cannot be used" not in proc.output  # no process refused to start
    shared = Path(tempfile.gettempdir()) / f"shopjobs-web-metrics-{proc.popen.pid}"
    assert (shared / LOCK_FILE).exists()
    answered_by = _pids_with_counters(shared)
    assert len(answered_by) >= 2, answered_by  # the count is a sum over processes, not one's

    # The process serving /metrics dies: the supervisor replaces it, another process takes the
    # port over, and the counts (kept in the shared files) are still all there.
    server = _metrics_server_pid(metrics_port)
    await asyncio.to_thread(_kill_and_wait, server)
    deadline = time.monotonic() + 20
    while True:
        try:
            counted = await _requests_counted(metrics_port, "/healthz")
            break
        except (httpx.HTTPError, AssertionError):
            assert time.monotonic() < deadline, proc.output
            await asyncio.sleep(0.5)
    assert counted >= baseline + REQUESTS
    assert proc.popen.poll() is None, proc.output


def _metrics_server_pid(port: int) -> int:
    """The pid of the process listening on `port` (from /proc/net: no ss or lsof needed)."""
    inodes = set()
    for table in ("/proc/net/tcp6", "/proc/net/tcp"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":  # LISTEN
                inodes.add(fields[9])
    assert inodes
    for fd in Path("/proc").glob("[0-9]*/fd/*"):
        try:
            target = fd.readlink()
        except OSError:
            continue
        if str(target).startswith("socket:[") and str(target)[8:-1] in inodes:
            return int(fd.parts[2])
    raise AssertionError(f"no process listens on {port}")


def _kill_and_wait(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and "zombie" not in _state(pid):
        assert time.monotonic() < deadline
        time.sleep(0.1)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().lower()
    except OSError:
        return "zombie"


async def test_two_uvicorns_sharing_a_directory_share_one_metrics_port(
    env, spawn, tmp_path: Path
) -> None:
    """Several web processes on one host (two uvicorns, say) given one PROMETHEUS_MULTIPROC_DIR
    and one WEB_METRICS_PORT: both start, one serves the sum."""
    metrics_port = free_port()
    shared = {
        **env,
        "WEB_METRICS_PORT": str(metrics_port),
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
    }
    ports = [free_port(), free_port()]
    for index, port in enumerate(ports):
        spawn(web_command(port), shared, f"web{index}")
        wait_for_http(f"http://127.0.0.1:{port}/healthz", timeout=30)
    baseline = await _requests_counted(metrics_port, "/healthz")
    for port in ports:
        assert await _hit(f"http://127.0.0.1:{port}/healthz", 30) == [200] * 30
    assert await _requests_counted(metrics_port, "/healthz") == baseline + 60
    assert len(_pids_with_counters(tmp_path / "metrics")) == 2


async def test_private_servers_listen_on_ipv6_and_ipv4(env, spawn) -> None:
    """Both on "::" by default: reached at ::1 and at 127.0.0.1 (Fly scrapes the private IPv6
    address); a host given (WEB_METRICS_HOST) is the only one listened on."""
    health = free_port()
    start_worker(spawn, {**env, "WORKER_HEALTH_PORT": str(health)})
    metrics_port = free_port()
    web_port = free_port()
    spawn(web_command(web_port), {**env, "WEB_METRICS_PORT": str(metrics_port)}, "web")
    wait_for_http(f"http://127.0.0.1:{web_port}/healthz", timeout=30)
    async with httpx.AsyncClient(timeout=5) as client:
        for host in ("[::1]", "127.0.0.1"):
            response = await client.get(f"http://{host}:{health}/healthz")
            assert (response.status_code, response.json()) == (200, {"status": "ok"}), host
            assert (
                "shopjobs_jobs_running"
                in (await client.get(f"http://{host}:{health}/metrics")).text
            )
            scraped = await client.get(f"http://{host}:{metrics_port}/metrics")
            assert "shopjobs_http_requests_total" in scraped.text, host

    only_v4 = free_port()
    web_port = free_port()
    spawn(
        web_command(web_port),
        {**env, "WEB_METRICS_PORT": str(only_v4), "WEB_METRICS_HOST": "127.0.0.1"},
        "web-v4",
    )
    wait_for_http(f"http://127.0.0.1:{web_port}/healthz", timeout=30)
    async with httpx.AsyncClient(timeout=5) as client:
        assert (await client.get(f"http://127.0.0.1:{only_v4}/metrics")).status_code == 200
        with pytest.raises(httpx.ConnectError):
            await client.get(f"http://[::1]:{only_v4}/metrics")
