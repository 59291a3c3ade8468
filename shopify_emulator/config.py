"""The emulator's configuration: the app it serves, its shops, its catalogue, its limits."""

from __future__ import annotations

from dataclasses import dataclass, field

# Shopify's standard plan: a 1000-point bucket refilled at 50 points per second.
DEFAULT_BUCKET_SIZE = 1000.0
DEFAULT_RESTORE_RATE = 50.0
# Shopify retries a failed webhook delivery 8 times over about 4 hours.
SHOPIFY_WEBHOOK_RETRY_DELAYS = (60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 3840.0, 7680.0)


@dataclass
class EmulatorConfig:
    app_url: str  # the app's public URL (what SHOPIFY_APP_URL is for the app)
    api_key: str = "dev-api-key"
    api_secret: str = "dev-api-secret"
    # Shops that exist from the start, each with a non-expiring offline token.
    shops: dict[str, str] = field(default_factory=dict)
    bucket_size: float = DEFAULT_BUCKET_SIZE
    restore_rate: float = DEFAULT_RESTORE_RATE
    # The seeded catalogue: every shop has the same products, derived from `seed`.
    products: int = 12
    max_variants: int = 60
    seed: int = 1
    # App proxy: storefront /apps/{proxy_subpath}/... -> {proxy_url}/...
    proxy_subpath: str = "jobs"
    proxy_url: str | None = None  # default: {app_url}/proxy
    proxy_timeout_seconds: float = 10.0
    # Webhooks: delivered to {webhook_url}, retried after each of these delays.
    webhook_url: str | None = None  # default: {app_url}/webhooks
    webhook_retry_delays: tuple[float, ...] = SHOPIFY_WEBHOOK_RETRY_DELAYS
    webhook_timeout_seconds: float = 5.0
    # OAuth: how long expiring offline tokens and their refresh tokens live.
    token_lifetime_seconds: float = 3600.0
    refresh_token_lifetime_seconds: float = 90 * 86_400.0
    api_version: str = "2025-10"
    # What a Shopify-managed install grants (shopify.app.toml's [access_scopes]).
    scopes: str = "read_products"
    # The theme app extension the storefront renders (default: extensions/shopjobs-theme).
    theme_extension_dir: str | None = None

    def __post_init__(self) -> None:
        self.app_url = self.app_url.rstrip("/")

    @property
    def app_proxy_url(self) -> str:
        return (self.proxy_url or f"{self.app_url}/proxy").rstrip("/")

    @property
    def webhook_target(self) -> str:
        return self.webhook_url or f"{self.app_url}/webhooks"
