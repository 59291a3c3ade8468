"""Command-line tools: `python -m service shops add | db apply | sign`.

python -m service shops add DOMAIN --token TOKEN [--scopes read_products,...]
python -m service db apply
python -m service sign --shop DOMAIN [--customer ID] [--base URL] PATH[?QUERY]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time

from service import store
from service.core.db import DatabaseTlsError, apply_schema, create_database
from service.core.settings import DatabaseSettings, Settings, TokenSettings, load_settings
from service.shopify import shop_domain
from service.shopify.proxy_url import signed_proxy_url


async def _shops_add(domain: str, token: str, scopes: str) -> None:
    settings = load_settings(TokenSettings)
    database = create_database(settings.database_url, min_size=1, max_size=1)
    await database.connect()
    try:
        shop = await store.upsert_shop(
            database, domain, settings.token_cipher.encrypt(token), scopes
        )
    finally:
        await database.disconnect()
    print(f"shop {shop.domain} registered (id {shop.id})")


async def _db_apply() -> None:
    database = create_database(load_settings(DatabaseSettings).database_url, min_size=1, max_size=1)
    try:
        await database.connect()
    except DatabaseTlsError as exc:
        raise SystemExit(f"shopjobs: {exc}") from None
    try:
        await apply_schema(database)
        keys = load_settings(TokenSettings) if os.environ.get("TOKEN_ENCRYPTION_KEYS") else None
        encrypted = (
            0 if keys is None else await store.encrypt_stored_tokens(database, keys.token_cipher)
        )
    finally:
        await database.disconnect()
    print("schema applied" + (f"; {encrypted} shops' tokens encrypted" if encrypted else ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service")
    commands = parser.add_subparsers(dest="area", required=True)

    shops = commands.add_parser("shops", help="manage installed shops")
    shops_cmd = shops.add_subparsers(dest="command", required=True)
    add = shops_cmd.add_parser("add", help="register a shop with an offline Admin API token")
    add.add_argument("domain")
    add.add_argument("--token", required=True)
    add.add_argument("--scopes", default="")

    db = commands.add_parser("db", help="database schema")
    db_cmd = db.add_subparsers(dest="command", required=True)
    db_cmd.add_parser("apply", help="apply schema.sql (idempotent)")

    sign = commands.add_parser("sign", help="print a signed app-proxy URL, for curl")
    sign.add_argument("path", help="proxy path and query, e.g. /proxy/status?jobId=...")
    sign.add_argument("--shop", required=True)
    sign.add_argument("--customer", default="", help="logged_in_customer_id (blank: anonymous)")
    sign.add_argument("--base", default=None, help="app URL (default SHOPIFY_APP_URL)")
    sign.add_argument("--path-prefix", default="/apps/jobs")

    args = parser.parse_args(argv)
    if args.area == "shops":
        try:
            domain = shop_domain.normalize(args.domain)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        asyncio.run(_shops_add(domain, args.token, args.scopes))
    elif args.area == "db":
        asyncio.run(_db_apply())
    elif args.area == "sign":
        settings = load_settings(Settings)
        try:
            domain = shop_domain.normalize(args.shop)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(
            signed_proxy_url(
                args.base or settings.shopify_app_url,
                args.path,
                shop=domain,
                secret=settings.shopify_api_secret.get_secret_value(),
                customer_id=args.customer,
                path_prefix=args.path_prefix,
                timestamp=int(time.time()),
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
