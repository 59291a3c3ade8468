import subprocess
import sys

from databases import Database

from service import store


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
