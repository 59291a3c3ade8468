"""Shops' tokens are encrypted at rest with TOKEN_ENCRYPTION_KEYS (service/core/token_cipher.py).

Before, `shops.access_token` and `refresh_token` held the Admin API tokens in clear: a database
dump handed out every shop's store. The upgrade encrypts what the previous version stored.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
from cryptography.fernet import Fernet

from service import store
from service.core.settings import Settings
from service.migrations import MIGRATIONS
from service.shopify import tokens
from tests.support.net import free_port
from tests.support.processes import web_command, worker_command

ROOT = Path(__file__).resolve().parents[2]
SHOP = "vault.myshopify.com"
TOKEN = "shpat_secret_offline_token"
REFRESH = "shprt_secret_refresh_token"


async def stored_columns(database, domain: str = SHOP) -> tuple[str | None, str | None]:
    row = await database.fetch_one(
        "SELECT access_token, refresh_token FROM shops WHERE domain = :d", {"d": domain}
    )
    return row._mapping["access_token"], row._mapping["refresh_token"]


async def worker_token(database, redis, settings: Settings, domain: str = SHOP) -> str | None:
    async with httpx.AsyncClient() as http:
        shop = await tokens.offline_token(database, redis, http, settings, domain)
    return shop.access_token


def with_keys(settings: Settings, keys: str) -> Settings:
    return Settings(**{**settings.model_dump(), "token_encryption_keys": keys})


def cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_tokens_are_stored_encrypted_and_keys_rotate(database, redis, settings, env) -> None:
    result = cli(["shops", "add", SHOP, "--token", TOKEN], env)
    assert result.returncode == 0, result.stderr
    access, _ = await stored_columns(database)
    assert access is not None and access.startswith("fernet:") and TOKEN not in access
    assert await worker_token(database, redis, settings) == TOKEN
    # The web's reads never carry a token.
    assert (await store.get_shop(database, SHOP)).access_token is None

    old = settings.token_encryption_keys.get_secret_value()
    new = Fernet.generate_key().decode()
    both = with_keys(settings, f"{new},{old}")
    assert await worker_token(database, redis, both) == TOKEN  # the old key still decrypts
    assert await store.encrypt_stored_tokens(database, both.token_cipher) == 1
    assert await store.encrypt_stored_tokens(database, both.token_cipher) == 0  # all current
    only_new = with_keys(settings, new)
    assert await worker_token(database, redis, only_new) == TOKEN
    assert (await stored_columns(database))[0] != access


async def test_the_upgrade_encrypts_tokens_stored_in_clear(database, redis, settings, env) -> None:
    """A database as the previous version left it: tokens in clear. `make db` (with the key
    set) encrypts them; a worker reads them either way."""
    await database.execute(
        "INSERT INTO shops (domain, access_token, refresh_token, scopes) "
        "VALUES (:d, :t, :r, ''), ('other.myshopify.com', 'shpat_other', NULL, '')",
        {"d": SHOP, "t": TOKEN, "r": REFRESH},
    )
    assert await worker_token(database, redis, settings) == TOKEN  # legacy rows stay usable
    result = cli(["db", "apply"], env)
    assert result.returncode == 0, result.stderr
    assert "2 shops' tokens encrypted" in result.stdout
    access, refresh = await stored_columns(database)
    assert access.startswith("fernet:") and refresh.startswith("fernet:")
    assert TOKEN not in access and REFRESH not in refresh
    assert (await stored_columns(database, "other.myshopify.com"))[0].startswith("fernet:")
    assert await worker_token(database, redis, settings) == TOKEN
    again = cli(["db", "apply"], env)
    assert again.returncode == 0
    assert again.stdout.strip() == f"schema up to date at {MIGRATIONS[-1].label}"


def test_web_and_worker_refuse_to_start_without_a_usable_key(env) -> None:
    for value, expected in (
        (None, "shopjobs: missing setting: TOKEN_ENCRYPTION_KEYS"),
        ("not-a-key", "shopjobs: invalid setting: TOKEN_ENCRYPTION_KEYS (Value error, key 1 is"),
    ):
        changed = {k: v for k, v in env.items() if k != "TOKEN_ENCRYPTION_KEYS"}
        if value is not None:
            changed["TOKEN_ENCRYPTION_KEYS"] = value
        for args in (web_command(free_port()), worker_command()):
            result = subprocess.run(
                args, env=changed, cwd=ROOT, capture_output=True, text=True, timeout=60
            )
            output = result.stdout + result.stderr
            assert result.returncode != 0, output
            assert "Traceback" not in output, output
            assert [line for line in output.splitlines() if "TOKEN_ENCRYPTION_KEYS" in line] == [
                line for line in output.splitlines() if line.startswith(expected)
            ], output
            assert expected in output
