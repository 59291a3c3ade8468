"""`python -m shopify_emulator`: run the local Shopify on a port.

    python -m shopify_emulator --port 8081 --app-url http://127.0.0.1:8000 \\
        --api-key dev-api-key --api-secret dev-api-secret \\
        --shop demo-shop.myshopify.com=dev-admin-token [--bucket-size 1000 --restore-rate 50]
"""

from __future__ import annotations

import argparse
import logging

import uvicorn

from shopify_emulator.app import create_app
from shopify_emulator.config import (
    DEFAULT_BUCKET_SIZE,
    DEFAULT_RESTORE_RATE,
    SHOPIFY_WEBHOOK_RETRY_DELAYS,
    EmulatorConfig,
)


def _shop(value: str) -> tuple[str, str]:
    domain, sep, token = value.partition("=")
    if not sep or not domain or not token:
        raise argparse.ArgumentTypeError("expected DOMAIN=TOKEN")
    return domain, token


def _delays(value: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in value.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError("expected seconds separated by commas") from None


def parse_args(argv: list[str] | None = None) -> tuple[EmulatorConfig, str, int]:
    parser = argparse.ArgumentParser(prog="python -m shopify_emulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--app-url", required=True, help="the app's URL (its SHOPIFY_APP_URL)")
    parser.add_argument("--api-key", default="dev-api-key")
    parser.add_argument("--api-secret", default="dev-api-secret")
    parser.add_argument(
        "--shop", type=_shop, action="append", default=[], help="DOMAIN=TOKEN (repeatable)"
    )
    parser.add_argument("--bucket-size", type=float, default=DEFAULT_BUCKET_SIZE)
    parser.add_argument("--restore-rate", type=float, default=DEFAULT_RESTORE_RATE)
    parser.add_argument("--products", type=int, default=12)
    parser.add_argument("--max-variants", type=int, default=60)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--proxy-subpath", default="jobs")
    parser.add_argument("--proxy-url", default=None, help="default: {app-url}/proxy")
    parser.add_argument("--webhook-url", default=None, help="default: {app-url}/webhooks")
    parser.add_argument(
        "--webhook-retry-delays",
        type=_delays,
        default=SHOPIFY_WEBHOOK_RETRY_DELAYS,
        help="seconds between delivery attempts, e.g. 0.2,0.5",
    )
    parser.add_argument("--token-lifetime", type=float, default=3600.0)
    parser.add_argument(
        "--bulk-run-seconds", type=float, default=1.0, help="how long a bulk operation runs"
    )
    parser.add_argument(
        "--webhook-topic",
        action="append",
        default=[],
        help="a topic the app subscribed to, sent by the emulator itself "
        "(bulk_operations/finish; repeatable)",
    )
    args = parser.parse_args(argv)
    config = EmulatorConfig(
        app_url=args.app_url,
        api_key=args.api_key,
        api_secret=args.api_secret,
        shops=dict(args.shop),
        bucket_size=args.bucket_size,
        restore_rate=args.restore_rate,
        products=args.products,
        max_variants=args.max_variants,
        seed=args.seed,
        proxy_subpath=args.proxy_subpath,
        proxy_url=args.proxy_url,
        webhook_url=args.webhook_url,
        webhook_retry_delays=args.webhook_retry_delays,
        token_lifetime_seconds=args.token_lifetime,
        bulk_run_seconds=args.bulk_run_seconds,
        webhook_topics=frozenset(args.webhook_topic),
    )
    return config, args.host, args.port


def main(argv: list[str] | None = None) -> None:
    config, host, port = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # its request lines carry signatures
    shop = next(iter(config.shops), None)
    print(f"shopify emulator on http://{host}:{port}", flush=True)
    if shop:
        print(f"storefront of {shop}: http://{host}:{port}/", flush=True)
    uvicorn.run(create_app(config), host=host, port=port, log_level="warning")


if __name__ == "__main__":
    main()
