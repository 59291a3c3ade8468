"""`create_app(config)`: the emulator's Starlette app (Shopify's routes plus /_emulator)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from starlette.applications import Starlette
from starlette.routing import Route

from shopify_emulator import (
    admin_api,
    bulk_routes,
    control,
    embedded,
    flow,
    oauth,
    storefront,
    theme,
)
from shopify_emulator.config import EmulatorConfig
from shopify_emulator.state import EmulatorState

ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def create_app(config: EmulatorConfig) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.http = httpx.AsyncClient(follow_redirects=False)
        app.state.tasks = set()
        app.state.emulator.http = app.state.http
        try:
            yield
        finally:
            for task in [*app.state.tasks, *app.state.emulator.bulk.tasks]:
                task.cancel()
            await asyncio.gather(
                *app.state.tasks, *app.state.emulator.bulk.tasks, return_exceptions=True
            )
            await app.state.http.aclose()

    routes = [
        Route("/admin/api/{version}/graphql.json", admin_api.graphql, methods=["POST"]),
        Route("/admin/oauth/authorize", oauth.authorize, methods=["GET"]),
        Route("/admin/oauth/access_token", oauth.access_token, methods=["POST"]),
        Route("/admin/apps/{api_key}", embedded.admin_page, methods=["GET"]),
        Route("/cdn/shopifycloud/app-bridge.js", embedded.app_bridge, methods=["GET"]),
        Route("/_emulator/id-token", embedded.id_token, methods=["POST"]),
        Route("/apps/{subpath}", storefront.app_proxy, methods=ALL_METHODS),
        Route("/apps/{subpath}/{rest:path}", storefront.app_proxy, methods=ALL_METHODS),
        Route("/", theme.storefront_page, methods=["GET"]),
        Route("/cdn/extensions/{extension}/assets/{name}", theme.asset, methods=["GET"]),
        Route("/bulk-results/{name}", bulk_routes.result, methods=["GET"]),
        Route("/staged-uploads", bulk_routes.upload, methods=["POST"]),
        Route("/_emulator/bulk", bulk_routes.control_list, methods=["GET"]),
        Route("/_emulator/bulk/faults", bulk_routes.control_fault, methods=["POST"]),
        Route("/_emulator/bulk/{id:int}/expire", bulk_routes.control_expire, methods=["POST"]),
        Route("/_emulator/login", storefront.login, methods=["GET"]),
        Route("/_emulator/stats", control.stats, methods=["GET"]),
        Route("/_emulator/reset", control.reset, methods=["POST"]),
        Route("/_emulator/faults", control.add_fault, methods=["POST"]),
        Route("/_emulator/products", control.products, methods=["GET"]),
        Route("/_emulator/shops", control.add_shop, methods=["POST"]),
        Route("/_emulator/shops/{domain}/uninstall", control.uninstall, methods=["POST"]),
        Route("/_emulator/webhooks/send", control.send_webhook, methods=["POST"]),
        Route("/_emulator/webhooks", control.deliveries, methods=["GET"]),
        Route("/_emulator/flow/actions", flow.send_action, methods=["POST"]),
        Route("/_emulator/flow", flow.recorded, methods=["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.emulator = EmulatorState(config)
    return app
