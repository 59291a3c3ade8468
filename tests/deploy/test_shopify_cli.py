"""Shopify CLI's files: shopify.app.toml, and the two shopify.web.toml whose `dev` commands
`shopify app dev` runs, each from its own directory, with the environment the CLI injects."""

from __future__ import annotations

import shlex
import tomllib

from tests.support.config import ROOT, TEST_API_KEY, TEST_SECRET
from tests.support.net import free_port, wait_for_http


def _toml(path: str) -> dict:  # type: ignore[type-arg]
    return tomllib.loads((ROOT / path).read_text())


def test_the_app_is_embedded_and_installed_by_shopify() -> None:
    app = _toml("shopify.app.toml")
    assert app["embedded"] is True
    assert app["access_scopes"]["use_legacy_install_flow"] is False
    subscriptions = app["webhooks"]["subscriptions"]
    compliance = {t for s in subscriptions for t in s.get("compliance_topics", [])}
    assert compliance == {"customers/data_request", "customers/redact", "shop/redact"}
    assert "app/uninstalled" in {t for s in subscriptions for t in s.get("topics", [])}
    assert app["app_proxy"]["url"].endswith("/proxy") and app["application_url"].endswith("/app")


def test_the_web_tomls_start_the_web_and_the_worker_with_cli_environment(env, spawn) -> None:  # type: ignore[no-untyped-def]
    web, worker = _toml("shopify.web.toml"), _toml("jobs/shopify.web.toml")
    assert sorted(web["roles"]) == ["backend", "frontend"] and worker["roles"] == ["background"]
    port, health = free_port(), free_port()
    cli_env = {
        "PATH": env["PATH"],
        "HOME": env.get("HOME", "/tmp"),
        "DATABASE_URL": env["DATABASE_URL"],
        "REDIS_URL": env["REDIS_URL"],
        # What `shopify app dev` injects (HOST: the tunnel, a bare host name at times).
        "SHOPIFY_API_KEY": TEST_API_KEY,
        "SHOPIFY_API_SECRET": TEST_SECRET,
        "HOST": "example-tunnel.trycloudflare.com",
        "SCOPES": "read_products,write_products",
        "PORT": str(port),
        "WORKER_HEALTH_PORT": str(health),
        "PYTHONUNBUFFERED": "1",
    }
    started = spawn(shlex.split(web["commands"]["dev"]), cli_env, "cli-web", ROOT)
    spawn(shlex.split(worker["commands"]["dev"]), cli_env, "cli-worker", ROOT / "jobs")
    assert wait_for_http(f"http://127.0.0.1:{port}/healthz", timeout=60).json()["status"] == "ok"
    assert wait_for_http(f"http://127.0.0.1:{health}/healthz", timeout=60).status_code == 200
    page = wait_for_http(f"http://127.0.0.1:{port}/app?shop=a.myshopify.com")
    assert f'content="{TEST_API_KEY}"' in page.text  # the CLI's key, not make dev's
    assert "web" in started.output
