"""The worker's health server (aiohttp) on WORKER_HEALTH_PORT.

GET /healthz answers 200 {"status": "ok"} when Postgres answers `SELECT 1` and Redis answers
PING, 503 {"status": "error", "failing": NAME, "message": FIXED TEXT} when a check fails, and
503 {"status": "shutting_down"} once shutdown has begun, so a platform stops routing to, and
stops waiting on, a worker that is leaving; every 503 carries Retry-After. Any other path is 404.
It listens on WORKER_HEALTH_HOST (every IPv6 and IPv4 address by default).

A failing check answers with its own fixed text ("postgres unreachable"), never the
exception's: a driver's error names hosts, ports and users, and whoever reaches this port
should learn which dependency failed, nothing more. The exception goes to the log.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import NamedTuple

from aiohttp import web

from service.core.listen import EVERY_ADDRESS, listening_socket

logger = logging.getLogger("shopjobs.worker.health")

CHECK_TIMEOUT_SECONDS = 2.0
# Every 503 says when to ask again.
RETRY_AFTER = {"Retry-After": "5"}


class Check(NamedTuple):
    """A probe that raises when its dependency fails, and what /healthz then says."""

    probe: Callable[[], Awaitable[None]]
    failure: str


@dataclass
class HealthState:
    checks: dict[str, Check]
    shutting_down: bool = False
    extra_routes: list[web.RouteDef] = field(default_factory=list)


async def _healthz(request: web.Request) -> web.Response:
    state: HealthState = request.app["state"]
    if state.shutting_down:
        return web.json_response({"status": "shutting_down"}, status=503, headers=RETRY_AFTER)
    for name, check in state.checks.items():
        try:
            await asyncio.wait_for(check.probe(), CHECK_TIMEOUT_SECONDS)
        except Exception as exc:  # any failure of a dependency is a 503, never a crash
            logger.warning("healthz: %s failing: %s: %s", name, exc.__class__.__name__, exc)
            body = {"status": "error", "failing": name, "message": check.failure}
            return web.json_response(body, status=503, headers=RETRY_AFTER)
    return web.json_response({"status": "ok"})


async def _not_found(request: web.Request) -> web.Response:
    return web.json_response({"status": "error", "message": "Not found"}, status=404)


def build_app(state: HealthState) -> web.Application:
    app = web.Application()
    app["state"] = state
    app.add_routes([web.get("/healthz", _healthz), *state.extra_routes])
    app.router.add_route("*", "/{tail:.*}", _not_found)
    return app


async def start(state: HealthState, port: int, host: str = EVERY_ADDRESS) -> web.AppRunner:
    """Serve on `host`:`port`; the default "::" is every IPv6 and IPv4 address
    (service/core/listen.py): Fly checks and scrapes the Machine's private IPv6 address."""
    runner = web.AppRunner(build_app(state), access_log=None)
    await runner.setup()
    try:
        await web.SockSite(runner, listening_socket(host, port)).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner
