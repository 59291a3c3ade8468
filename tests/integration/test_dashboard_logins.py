"""Failed dashboard logins are limited per client, across web processes. Against two real
`uvicorn service.app:app` sharing one Redis: a guesser is answered 429 with Retry-After,
whichever process it reaches, while another client logs in."""

from __future__ import annotations

import base64

import httpx
from arq.connections import ArqRedis

from tests.support.net import free_port, wait_for_http
from tests.support.processes import web_command

USER, PASSWORD = "ops", "correct horse battery"
LIMIT = 3


def basic(password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{USER}:{password}".encode()).decode()}


def start_web(spawn, env: dict[str, str], name: str) -> str:  # type: ignore[no-untyped-def]
    port = free_port()
    settings = {
        **env,
        "DASHBOARD_USERNAME": USER,
        "DASHBOARD_PASSWORD": PASSWORD,
        "DASHBOARD_LOGIN_MAX_FAILURES": str(LIMIT),
        "DASHBOARD_LOGIN_WINDOW_SECONDS": "600",
    }
    spawn(web_command(port), settings, name)
    base = f"http://127.0.0.1:{port}"
    wait_for_http(f"{base}/healthz")
    return base


async def test_failed_logins_are_limited_per_client_across_processes(
    env: dict[str, str], spawn, redis: ArqRedis
) -> None:
    first, second = start_web(spawn, env, "web-1"), start_web(spawn, env, "web-2")
    # uvicorn takes the client from X-Forwarded-For sent by a trusted proxy (loopback here,
    # Fly's proxy in production: FORWARDED_ALLOW_IPS).
    guesser = {"X-Forwarded-For": "203.0.113.7"}
    operator = {"X-Forwarded-For": "198.51.100.20"}
    async with httpx.AsyncClient(timeout=10) as client:
        # A request without credentials draws the prompt and is not a failure.
        for _ in range(LIMIT + 2):
            prompt = await client.get(f"{first}/admin/", headers=guesser)
            assert prompt.status_code == 401 and "WWW-Authenticate" in prompt.headers
        for attempt in range(LIMIT):
            base = (first, second)[attempt % 2]
            wrong = await client.get(
                f"{base}/admin/", headers={**guesser, **basic(f"guess-{attempt}")}
            )
            assert wrong.status_code == 401
        for base in (first, second):
            refused = await client.get(f"{base}/admin/", headers={**guesser, **basic("guess-x")})
            assert refused.status_code == 429
            assert refused.json() == {"error": "Too many failed logins: try again later"}
            assert 1 <= int(refused.headers["Retry-After"]) <= 600
            # The right password too: otherwise the answer would tell a guesser it was right.
            right = await client.get(f"{base}/admin/", headers={**guesser, **basic(PASSWORD)})
            assert right.status_code == 429
        # Another client is not affected.
        other = await client.get(f"{second}/admin/", headers={**operator, **basic(PASSWORD)})
        assert other.status_code == 200
        # The window over (its key expired), the client may try again.
        keys = await redis.keys("shopjobs:dashboard-login-failures:*")
        assert [k.decode() for k in keys] == ["shopjobs:dashboard-login-failures:203.0.113.7"]
        await redis.delete(*keys)
        again = await client.get(f"{first}/admin/", headers={**guesser, **basic(PASSWORD)})
        assert again.status_code == 200
