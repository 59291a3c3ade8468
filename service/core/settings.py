"""Configuration from environment variables (pydantic-settings), shared by web and worker.

Both processes call `load_settings()` at start; a missing or malformed required setting stops
the process with one line naming it, instead of a traceback that buries the cause.
"""

from __future__ import annotations

import ssl
import sys
from functools import cached_property
from typing import Annotated, Literal, TypeVar, overload

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.core.db import tls_argument
from service.core.redis_url import tls_options
from service.core.token_cipher import TokenCipher, parse_keys

PositiveFloat = Annotated[float, Field(gt=0)]
NonNegativeInt = Annotated[int, Field(ge=0)]
MIN_DASHBOARD_PASSWORD_LENGTH = 12


class DatabaseSettings(BaseSettings):
    """The one setting `db apply` needs (`shops add` adds TOKEN_ENCRYPTION_KEYS: TokenSettings)."""

    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False, populate_by_name=True)

    database_url: str

    @field_validator("database_url")
    @classmethod
    def _postgres_url(cls, value: str) -> str:
        if not value.startswith(("postgresql://", "postgres://")):
            raise ValueError("must start with postgresql://")
        try:
            tls_argument(value)  # a bad sslmode or an unreadable sslrootcert: say so now
        except ssl.SSLError as exc:
            raise ValueError(f"sslrootcert holds no usable certificate ({exc.reason})") from None
        except OSError as exc:
            raise ValueError(f"sslrootcert cannot be read ({exc.strerror or exc})") from None
        return value.replace("postgres://", "postgresql://", 1)


class TokenSettings(DatabaseSettings):
    """What writes or reads shops' tokens needs besides the database (`shops add`)."""

    # Comma-separated Fernet keys: the first encrypts, all decrypt (service/core/token_cipher.py).
    token_encryption_keys: SecretStr

    @field_validator("token_encryption_keys")
    @classmethod
    def _token_keys(cls, value: SecretStr) -> SecretStr:
        parse_keys(value.get_secret_value())
        return value

    @cached_property
    def token_cipher(self) -> TokenCipher:
        return TokenCipher(self.token_encryption_keys.get_secret_value())


class Settings(TokenSettings):
    redis_url: str
    shopify_api_key: str
    shopify_api_secret: SecretStr
    # Shopify CLI injects HOST / APP_URL rather than SHOPIFY_APP_URL; accept all three.
    shopify_app_url: str = Field(
        default="http://localhost:8000",
        validation_alias=AliasChoices("SHOPIFY_APP_URL", "APP_URL", "HOST"),
    )
    shopify_api_version: str = "2025-10"
    shopify_admin_url: str | None = None
    # Ask for expiring offline tokens (1 hour, with a refresh token) when a shop installs:
    # required of public apps by Shopify; custom-app tokens (`shops add`) never expire.
    shopify_expiring_offline_tokens: bool = True
    shopify_admin_timeout_seconds: PositiveFloat = 30
    shopify_admin_max_retries: NonNegativeInt = 5
    shopify_scopes: str = Field(
        default="read_products", validation_alias=AliasChoices("SHOPIFY_SCOPES", "SCOPES")
    )

    worker_health_port: Annotated[int, Field(ge=0, le=65535)] = 3001
    # Where the worker's health server and the web's metrics listen (service/core/listen.py):
    # "::" is every IPv6 and IPv4 address (one dual-stack socket).
    worker_health_host: str = "::"
    web_metrics_host: str = "::"
    # The web's Prometheus metrics are served on this port of their own, never on the public
    # one (service/web/metrics.py); 0 turns them off.
    web_metrics_port: Annotated[int, Field(ge=0, le=65535)] = 9091
    worker_concurrency: Annotated[int, Field(ge=1)] = 2
    worker_shutdown_grace_seconds: Annotated[float, Field(ge=0)] = 25
    job_max_attempts: Annotated[int, Field(ge=1)] = 3
    job_backoff_seconds: Annotated[float, Field(ge=0)] = 5
    job_timeout_seconds: PositiveFloat = 300
    # A wait (a sleep, a bulk operation or slot, an event) longer than this fails its job, naming
    # the wait; ctx.sleep / ctx.wait_for_event may set their own. A job older than
    # JOB_MAX_AGE_SECONDS (from its creation, waits and retries included) fails at its next run.
    job_wait_timeout_seconds: PositiveFloat = 86_400
    job_max_age_seconds: PositiveFloat = 604_800
    # A run that does not stop within this long of being cancelled (at its timeout) is abandoned.
    job_abandon_grace_seconds: Annotated[float, Field(ge=0)] = 5
    # Abandoned runs still going in one process beyond this end it (it stops, exit code 3).
    worker_max_abandoned_runs: NonNegativeInt = 3
    job_result_max_bytes: Annotated[int, Field(ge=2)] = 1_048_576
    job_lease_seconds: PositiveFloat = 10
    # The global start rate across all workers: off by default (0). The seed's example limiter
    # was 10 per 60 s (docs/configuration.md); per type or per shop limits are flow control's.
    rate_limit_max: NonNegativeInt = 0
    rate_limit_window_seconds: PositiveFloat = 60
    # Retired: workers always take round-robin by shop (service/queue/). `fifo` is still
    # accepted, so a deployment that set it starts, and the worker logs that it is ignored.
    queue_fairness: Literal["shop", "fifo"] = "shop"
    # The cap counts one shop's running jobs across all worker processes, held at the take.
    shop_concurrency_limit: NonNegativeInt = 0
    reconcile_after_seconds: PositiveFloat = 30
    shop_cache_seconds: Annotated[float, Field(ge=0)] = 2.0
    reconcile_interval_seconds: Annotated[int, Field(ge=1, le=60)] = 10

    # Retention is by age; the counts (0: none) are per shop, never across shops. A job with
    # an idempotency key is kept IDEMPOTENCY_WINDOW_SECONDS from its creation whatever these say.
    completed_retention_seconds: PositiveFloat = 86_400
    completed_retention_count: NonNegativeInt = 0
    failed_retention_seconds: PositiveFloat = 604_800
    failed_retention_count: NonNegativeInt = 0
    idempotency_window_seconds: PositiveFloat = 86_400

    # POST /webhooks reads bodies from anyone before the HMAC check: bounded in size, in time
    # (first bytes, a floor rate, a total) and in bytes actually received and held, across the
    # process and per client address (service/web/webhook_body.py).
    webhook_max_body_bytes: Annotated[int, Field(ge=1024)] = 16 * 1024 * 1024
    webhook_first_bytes_seconds: PositiveFloat = 2
    webhook_min_bytes_per_second: PositiveFloat = 16 * 1024
    webhook_read_timeout_seconds: PositiveFloat = 10
    webhook_body_budget_bytes: Annotated[int, Field(ge=1024)] = 64 * 1024 * 1024
    webhook_client_budget_bytes: Annotated[int, Field(ge=1024)] = 32 * 1024 * 1024

    @model_validator(mode="after")
    def _webhook_bodies_fit(self) -> Settings:
        """A budget smaller than one body would refuse every body of that size, forever: say so
        at start-up rather than answer Shopify 503 until it gives up."""
        if not (
            self.webhook_max_body_bytes
            <= self.webhook_client_budget_bytes
            <= self.webhook_body_budget_bytes
        ):
            raise ValueError(
                "need WEBHOOK_MAX_BODY_BYTES <= WEBHOOK_CLIENT_BUDGET_BYTES"
                " <= WEBHOOK_BODY_BUDGET_BYTES"
            )
        return self

    # POST /proxy/process per shop and per logged-in customer, counted in Redis across all
    # web processes (service/web/proxy_quota.py); 0 turns a limit off.
    proxy_limit_shop_per_minute: NonNegativeInt = 120
    proxy_limit_customer_per_minute: NonNegativeInt = 20

    # product_summary answers storefront visitors: stock counts only when the merchant says so.
    product_summary_show_inventory: bool = False

    enable_diagnostic_jobs: bool = False

    # The app's own modules (docs/your-app.md), comma-separated: each defines `shopjobs_app`,
    # its job types, webhook topics, routes and schedules. `jobs.builtin` is the shipped
    # examples; `SHOPJOBS_APP=jobs.builtin,myapp` keeps them beside yours.
    shopjobs_app: str = "jobs.builtin"

    @property
    def app_modules(self) -> list[str]:
        return [name.strip() for name in self.shopjobs_app.split(",") if name.strip()]

    # Where the embedded page (/app) loads App Bridge from: Shopify's CDN, which Shopify
    # requires; `make dev` and the tests point it at the emulator's stand-in.
    app_bridge_url: str = "https://cdn.shopify.com/shopifycloud/app-bridge.js"

    # The job dashboard at /admin (HTTP basic auth): served only when DASHBOARD_PASSWORD is set.
    # ADMIN_USERNAME / ADMIN_PASSWORD, their names before "admin" came to mean only Shopify's
    # Admin API, are still read (deprecated; docs/configuration.md).
    dashboard_username: str = Field(
        default="admin",
        min_length=1,
        max_length=100,
        validation_alias=AliasChoices("DASHBOARD_USERNAME", "ADMIN_USERNAME"),
    )
    dashboard_password: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("DASHBOARD_PASSWORD", "ADMIN_PASSWORD")
    )
    # Failed dashboard logins per client (IPv4 address, IPv6 /64) within a window, counted in
    # Redis, before the client gets 429 (service/web/login_attempts.py); 0 turns it off.
    dashboard_login_max_failures: NonNegativeInt = 10
    dashboard_login_window_seconds: Annotated[int, Field(ge=1)] = 900

    # json: one JSON object per line (production); text: readable lines (`make dev`).
    log_format: Literal["json", "text"] = "json"

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://")):
            raise ValueError("must start with redis:// or rediss://")
        tls_options(value)  # a bad TLS parameter: say so now
        return value

    @field_validator("dashboard_username")
    @classmethod
    def _dashboard_username(cls, value: str) -> str:
        if ":" in value:  # basic auth splits user and password at the first colon
            raise ValueError("must not contain ':'")
        return value

    @field_validator("dashboard_password")
    @classmethod
    def _dashboard_password(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None  # unset or empty: the dashboard is off
        if len(value.get_secret_value()) < MIN_DASHBOARD_PASSWORD_LENGTH:
            # The dashboard faces the internet and can retry or cancel any job.
            raise ValueError(f"must be at least {MIN_DASHBOARD_PASSWORD_LENGTH} characters")
        return value

    @field_validator("shopify_admin_url")
    @classmethod
    def _admin_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("shopify_app_url")
    @classmethod
    def _app_url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if value and "://" not in value:
            value = "https://" + value  # Shopify CLI's HOST is sometimes a bare host name
        return value


AnySettings = TypeVar("AnySettings", bound=DatabaseSettings)


def describe_error(error: ValidationError) -> str:
    """One line naming every bad setting, e.g. `missing setting: SHOPIFY_API_SECRET`."""
    missing, invalid = [], []
    for item in error.errors():
        name = str(item["loc"][0]).upper() if item["loc"] else "?"
        if item["type"] == "missing":
            missing.append(name)
        else:
            invalid.append(f"{name} ({item['msg']})")
    parts = []
    if missing:
        parts.append(
            "missing setting" + ("s" if len(missing) > 1 else "") + ": " + ", ".join(missing)
        )
    if invalid:
        parts.append(
            "invalid setting" + ("s" if len(invalid) > 1 else "") + ": " + "; ".join(invalid)
        )
    return "shopjobs: " + "; ".join(parts)


@overload
def load_settings() -> Settings: ...
@overload
def load_settings(cls: type[AnySettings]) -> AnySettings: ...
def load_settings(cls: type[DatabaseSettings] = Settings) -> DatabaseSettings:
    """Settings from the environment, or exit(2) with one line naming what is wrong."""
    try:
        return cls()
    except ValidationError as error:
        print(describe_error(error), file=sys.stderr)
        raise SystemExit(2) from None
