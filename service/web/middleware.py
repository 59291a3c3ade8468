"""What every web request gets: a request id, one log line, and its metrics.

The id is the caller's `X-Request-ID` when it is a sane token (a proxy in front may set one),
else a new one; it is echoed in the response's `X-Request-ID` and bound to every log line the
request causes (service/core/logs.py). The log line and the metrics name the route template
(`/proxy/status`, `/admin/jobs/{job_id}`), and the log line the path without its query string:
queries carry Shopify's signatures and OAuth codes.
"""

from __future__ import annotations

import logging
import re
import secrets
import time

from starlette.datastructures import MutableHeaders
from starlette.routing import Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.core import logs
from service.web.metrics import WebMetrics

logger = logging.getLogger("shopjobs.web")

REQUEST_ID_HEADER = "X-Request-ID"
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"
# Probes come every few seconds; their successes are logged at DEBUG only.
QUIET_ROUTES = frozenset({"/healthz"})


def route_template(scope: Scope, app_root: str) -> str:
    """The template of the route that answered, with the paths of the mounts it sits in.

    Starlette's router leaves the innermost matching route in `scope["route"]`, and each
    mount adds the part of the path it matched to `root_path`.
    """
    route = scope.get("route")
    if route is None:
        return UNMATCHED
    root_path: str = scope.get("root_path", "")
    prefix = root_path[len(app_root) :]
    if isinstance(route, Mount):  # the mount matched, nothing inside it did
        return prefix + "/{path}"
    return prefix + str(getattr(route, "path", UNMATCHED))


def request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            offered: str = value.decode("latin-1")
            if _SANE_REQUEST_ID.fullmatch(offered):
                return offered
            break
    return secrets.token_hex(16)


class RequestTelemetry:
    def __init__(self, app: ASGIApp, metrics: WebMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id(scope)
        method = scope["method"] if scope["method"] in KNOWN_METHODS else "OTHER"
        app_root = scope.get("root_path", "")
        status = 500  # what the client gets if the app raises before answering

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message).append(REQUEST_ID_HEADER, rid)
            await send(message)

        started = time.perf_counter()
        with logs.bind(request_id=rid):
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                seconds = time.perf_counter() - started
                route = route_template(scope, app_root)
                self.metrics.observe_request(method, route, status, seconds)
                quiet = route in QUIET_ROUTES and status < 400
                logger.log(
                    logging.DEBUG if quiet else logging.INFO,
                    "%s %s %d %.1fms",
                    method,
                    scope.get("path", ""),
                    status,
                    seconds * 1000,
                    extra={
                        "method": method,
                        "route": route,
                        "path": scope.get("path", ""),
                        "status": status,
                        "duration_ms": round(seconds * 1000, 2),
                    },
                )
