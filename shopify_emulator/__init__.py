"""A local Shopify for development and tests: never deployed, never imported by the app.

It plays the parts of Shopify that shopjobs talks to, faithfully enough to test against:
the Admin GraphQL API (with query costs and a leaky bucket per shop), the OAuth install
endpoints, the storefront's app proxy (which signs requests as Shopify does), and the webhook
sender (which signs, delivers and retries). Tests steer it through `/_emulator/...` endpoints.

    python -m shopify_emulator --port 8081 --app-url http://127.0.0.1:8000 --api-secret S
"""

from shopify_emulator.app import create_app
from shopify_emulator.config import EmulatorConfig

__all__ = ["EmulatorConfig", "create_app"]
