"""The web app `make bench` serves: the real app, plus one bare route to compare against.

`uvicorn bench.web_app:app` is the product's web process (same factory, same settings, same
uvicorn) with `/bench/bare` added: a Starlette route that answers a small JSON body and does
nothing else, the ceiling any endpoint of this process can reach.
"""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from service.app import create_app
from service.core.settings import Settings, load_settings

BARE_PATH = "/bench/bare"


async def bare(request: Request) -> JSONResponse:
    return JSONResponse({"jobId": "00000000-0000-0000-0000-000000000000", "status": "pending"})


def create_bench_app(settings: Settings) -> Starlette:
    app = create_app(settings)
    app.router.routes.insert(0, Route(BARE_PATH, bare, methods=["GET", "POST"]))
    return app


def __getattr__(name: str) -> Any:
    if name == "app":
        return create_bench_app(load_settings())
    raise AttributeError(f"module 'bench.web_app' has no attribute {name!r}")
