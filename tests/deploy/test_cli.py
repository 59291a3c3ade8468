import subprocess
import sys
import uuid

import orjson
from arq.connections import ArqRedis
from databases import Database

from service import store
from tests.support.jobs import make_shop, wait_for_status
from tests.support.net import free_port
from tests.support.processes import Spawn, start_worker
from tests.support.queue_entries import queued_score


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_shops_add_registers_a_shop(env: dict[str, str], database: Database) -> None:
    result = _cli(
        env,
        "shops",
        "add",
        "Cool-Shop.myshopify.com",
        "--token",
        "shpat_x",
        "--scopes",
        "read_products",
    )
    assert result.returncode == 0, result.stderr
    shop = await store.get_shop(database, "cool-shop.myshopify.com")
    assert shop is not None and shop.scopes == "read_products" and shop.installed
    assert "shpat_x" not in result.stdout + result.stderr


async def test_shops_add_rejects_a_malformed_domain(
    env: dict[str, str], database: Database
) -> None:
    result = _cli(env, "shops", "add", "evil.example.com", "--token", "t")
    assert result.returncode == 2
    assert "not a shop domain" in result.stderr
    assert await database.fetch_val("SELECT count(*) FROM shops") == 0


async def test_db_apply_twice(env: dict[str, str], database: Database) -> None:
    for _ in range(2):
        result = _cli(env, "db", "apply")
        assert result.returncode == 0, result.stderr


def test_sign_prints_a_verifiable_url(env: dict[str, str]) -> None:
    from urllib.parse import parse_qsl, urlsplit

    from service.shopify.signatures import verify_app_proxy

    result = _cli(
        env, "sign", "--shop", "demo.myshopify.com", "--customer", "7", "/proxy/status?jobId=abc"
    )
    url = result.stdout.strip()
    assert url.startswith("http://testserver/proxy/status?jobId=abc&")
    pairs = parse_qsl(urlsplit(url).query, keep_blank_values=True)
    import time

    assert verify_app_proxy(pairs, env["SHOPIFY_API_SECRET"], time.time()) == "demo.myshopify.com"


async def test_jobs_enqueue_and_show(
    env: dict[str, str], database: Database, redis: ArqRedis, spawn: Spawn
) -> None:
    await make_shop(database)
    created = _cli(
        env, "jobs", "enqueue", "echo", "--shop", "Test-Shop.myshopify.com",
        "--input", '{"message": "from the cli"}', "--idempotency-key", "cli-1",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    answer = orjson.loads(created.stdout.strip().splitlines()[-1])
    assert answer["status"] == "pending" and set(answer) == {"jobId", "status"}
    again = _cli(
        env, "jobs", "enqueue", "echo", "--shop", "test-shop.myshopify.com",
        "--input", '{"message": "from the cli"}', "--idempotency-key", "cli-1",
    )  # fmt: skip
    assert orjson.loads(again.stdout.strip().splitlines()[-1])["jobId"] == answer["jobId"]
    delayed = _cli(
        env, "jobs", "enqueue", "echo", "--shop", "test-shop.myshopify.com",
        "--input", '{"message": "later"}', "--delay", "3600",
    )  # fmt: skip
    later = orjson.loads(delayed.stdout.strip().splitlines()[-1])
    assert later["status"] == "pending" and "runAt" in later
    assert await queued_score(redis, later["jobId"]) is not None

    start_worker(spawn, env)
    await wait_for_status(database, uuid.UUID(answer["jobId"]), {"completed"})
    shown = _cli(env, "jobs", "show", answer["jobId"])
    assert shown.returncode == 0, shown.stderr
    job = orjson.loads(shown.stdout)
    assert job["status"] == "completed" and job["result"] == {"message": "from the cli"}
    assert job["source"] == "cli" and job["idempotencyKey"] == "cli-1"
    waiting = orjson.loads(_cli(env, "jobs", "show", later["jobId"]).stdout)
    assert waiting["status"] == "pending" and waiting["runAt"] == later["runAt"]


async def test_jobs_cli_refusals_are_one_line_and_exit_2(
    env: dict[str, str], database: Database
) -> None:
    await make_shop(database)
    shop = ("--shop", "test-shop.myshopify.com")
    cases = {
        "Unknown job type": ("jobs", "enqueue", "nope", *shop),
        "Invalid input": ("jobs", "enqueue", "echo", *shop, "--input", '{"message": 1}'),
        "not JSON": ("jobs", "enqueue", "echo", *shop, "--input", "{"),
        "not installed": (
            "jobs",
            "enqueue",
            "echo",
            "--shop",
            "x.myshopify.com",
            "--input",
            '{"message": "m"}',
        ),
        "not a shop domain": ("jobs", "enqueue", "echo", "--shop", "evil.example.com"),
        "not found": ("jobs", "show", "00000000-0000-0000-0000-000000000000"),
        "malformed job id": ("jobs", "show", "abc"),
    }
    for expected, args in cases.items():
        result = _cli(env, *args)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0], (args, result.stderr)
    assert "input.message" in _cli(env, *cases["Invalid input"]).stderr
    queue_down = _cli(
        {**env, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"},
        *("jobs", "enqueue", "echo", *shop, "--input", '{"message": "m"}'),
    )
    assert queue_down.returncode == 2, queue_down.stderr
    assert len(queue_down.stderr.strip().splitlines()) == 1, queue_down.stderr
    assert await database.fetch_val("SELECT count(*) FROM jobs") == 0
