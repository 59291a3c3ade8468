"""The worker's health server (aiohttp) on WORKER_HEALTH_PORT.

GET /healthz answers 200 {"status": "ok"} when Postgres answers `SELECT 1` and Redis answers
PING, 503 {"status": "error", "message": ...} when either fails, and 503
{"status": "shutting_down"} once shutdown has begun, so a platform stops routing to, and
stops waiting on, a worker that is leaving. Any other path is 404.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

Check = Callable[[], Awaitable[None]]
CHECK_TIMEOUT_SECONDS = 2.0


@dataclass
class HealthState:
    checks: dict[str, Check]
    shutting_down: bool = False
    extra_routes: list[web.RouteDef] = field(default_factory=list)


async def _healthz(request: web.Request) -> web.Response:
    state: HealthState = request.app["state"]
    if state.shutting_down:
        return web.json_response({"status": "shutting_down"}, status=503)
    for name, check in state.checks.items():
        try:
            await asyncio.wait_for(check(), CHECK_TIMEOUT_SECONDS)
        except Exception as exc:  # any failure of a dependency is a 503, never a crash
            message = f"{name}: {exc.__class__.__name__}: {exc}".strip()
            return web.json_response({"status": "error", "message": message}, status=503)
    return web.json_response({"status": "ok"})


async def _not_found(request: web.Request) -> web.Response:
    return web.json_response({"status": "error", "message": "Not found"}, status=404)


def build_app(state: HealthState) -> web.Application:
    app = web.Application()
    app["state"] = state
    app.add_routes([web.get("/healthz", _healthz), *state.extra_routes])
    app.router.add_route("*", "/{tail:.*}", _not_found)
    return app


async def start(state: HealthState, port: int, host: str = "0.0.0.0") -> web.AppRunner:
    runner = web.AppRunner(build_app(state), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
