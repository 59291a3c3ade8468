"""`make dev` (tools.dev): both processes up, Ctrl-C leaves nothing behind, one dying stops all."""

import os
import signal
import sys
import uuid
from pathlib import Path

import pytest

from tests.support.net import free_port, wait_for_http


def _marked_pids(marker: str) -> list[int]:
    """Processes whose environment carries our marker (web, worker and their children)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker.encode() in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


@pytest.fixture
def dev(env: dict[str, str], spawn, database: object):
    marker = f"SHOPJOBS_DEV_TEST={uuid.uuid4()}"
    web_port, health_port, shopify_port = free_port(), free_port(), free_port()
    dev_env = {
        **env,
        "WEB_PORT": str(web_port),
        "WORKER_HEALTH_PORT": str(health_port),
        "SHOPIFY_EMULATOR_PORT": str(shopify_port),
        marker.split("=")[0]: marker.split("=")[1],
    }
    proc = spawn([sys.executable, "-m", "tools.dev"], dev_env, "dev")
    wait_for_http(f"http://127.0.0.1:{web_port}/healthz", timeout=60)
    wait_for_http(f"http://127.0.0.1:{health_port}/healthz", timeout=60)
    stats = wait_for_http(f"http://127.0.0.1:{shopify_port}/_emulator/stats", timeout=60).json()
    assert "demo-shop.myshopify.com" in stats["shops"]  # the demo shop, with its token
    storefront = f"http://127.0.0.1:{shopify_port}/"
    assert f"Job button block): {storefront}" in proc.output  # where the demo page is
    assert "dev: job starts are not rate limited (RATE_LIMIT_MAX=0" in proc.output  # the default
    assert "data-shopjobs-block" in wait_for_http(storefront).text
    return proc, marker


def test_ctrl_c_stops_everything(dev) -> None:
    proc, marker = dev
    assert len(_marked_pids(marker)) >= 4  # honcho, web, worker, shopify
    proc.signal(signal.SIGINT)
    assert proc.wait(20) == 0  # Ctrl-C is how `make dev` ends: not "make: *** Error 130"
    assert _marked_pids(marker) == []
    assert "web.1 stopped" in proc.output and "worker.1 stopped" in proc.output
    assert "shopify.1 stopped" in proc.output


def test_one_child_dying_stops_the_other_and_fails(dev) -> None:
    proc, marker = dev
    worker = [
        p
        for p in _marked_pids(marker)
        if "jobs.WorkerSettings" in _cmdline(p) and "tools.reload" not in _cmdline(p)
    ]
    assert worker, "worker process not found"
    os.kill(worker[0], signal.SIGKILL)
    assert proc.wait(20) != 0
    assert _marked_pids(marker) == []


def test_the_banner_says_the_rate_limit_caps_what_workers_add() -> None:
    """The global limiter is off by default; once set (the seed's example: 10 a minute, across
    all workers) it is the ceiling of a deployment, whatever `fly scale count worker=N` says:
    `make dev` says so at start."""
    from tools.dev import rate_limit_line

    assert rate_limit_line({}).startswith("job starts are not rate limited (RATE_LIMIT_MAX=0")
    assert rate_limit_line({"RATE_LIMIT_MAX": "10"}) == (
        "at most 10 job starts per 60 s across all workers (RATE_LIMIT_MAX, "
        "RATE_LIMIT_WINDOW_SECONDS): adding workers adds nothing past it; raise it, or set 0 "
        "for none, before scaling (docs/deploy.md#7-scale-the-workers)"
    )
    assert rate_limit_line({"RATE_LIMIT_MAX": "600", "RATE_LIMIT_WINDOW_SECONDS": "1"}).startswith(
        "at most 600 job starts per 1 s"
    )
