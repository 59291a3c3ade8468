import subprocess
import sys

import pytest
from pydantic import ValidationError

from service.core.settings import DatabaseSettings, Settings, describe_error, load_settings

REQUIRED = {
    "DATABASE_URL": "postgresql://u@127.0.0.1:5432/db",
    "REDIS_URL": "redis://127.0.0.1:6379/0",
    "SHOPIFY_API_KEY": "key",
    "SHOPIFY_API_SECRET": "secret",
    "TOKEN_ENCRYPTION_KEYS": "SbWnXPTgVyC2NRlqsFNcGhqXKYm9dNn4ZWsZ-E2OTKA=",
}


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in [*REQUIRED, "SHOPIFY_APP_URL", "APP_URL", "HOST", "SCOPES", "SHOPIFY_SCOPES"]:
        monkeypatch.delenv(name, raising=False)
    for name, value in REQUIRED.items():
        monkeypatch.setenv(name, value)
    return monkeypatch


def test_defaults_match_the_contract(clean_env: pytest.MonkeyPatch) -> None:
    s = Settings()
    assert (s.worker_health_port, s.worker_concurrency, s.job_max_attempts) == (3001, 2, 3)
    assert (s.job_backoff_seconds, s.rate_limit_max, s.rate_limit_window_seconds) == (5, 0, 60)
    assert s.worker_shutdown_grace_seconds == 25
    assert s.enable_diagnostic_jobs is False
    assert (s.completed_retention_seconds, s.completed_retention_count) == (86_400, 0)
    assert (s.failed_retention_seconds, s.failed_retention_count) == (604_800, 0)
    assert s.idempotency_window_seconds == 86_400


def test_retired_queue_fairness_still_accepts_fifo_and_nothing_else(
    clean_env: pytest.MonkeyPatch,
) -> None:
    clean_env.delenv("QUEUE_FAIRNESS", raising=False)
    assert Settings().queue_fairness == "shop"
    clean_env.setenv("QUEUE_FAIRNESS", "fifo")  # a deployment that set it still starts
    assert Settings().queue_fairness == "fifo"
    clean_env.setenv("QUEUE_FAIRNESS", "round-robin")
    with pytest.raises(ValidationError, match="queue_fairness"):
        Settings()


DASHBOARD_NAMES = ["DASHBOARD_USERNAME", "DASHBOARD_PASSWORD", "ADMIN_USERNAME", "ADMIN_PASSWORD"]


def test_dashboard_credentials_under_their_names_and_the_deprecated_ones(
    clean_env: pytest.MonkeyPatch,
) -> None:
    for name in DASHBOARD_NAMES:
        clean_env.delenv(name, raising=False)
    assert (Settings().dashboard_username, Settings().dashboard_password) == ("admin", None)
    clean_env.setenv("ADMIN_USERNAME", "old-name")
    clean_env.setenv("ADMIN_PASSWORD", "old-password-of-old")
    settings = Settings()
    assert settings.dashboard_username == "old-name"
    assert settings.dashboard_password is not None
    assert settings.dashboard_password.get_secret_value() == "old-password-of-old"
    clean_env.setenv("DASHBOARD_USERNAME", "new-name")  # the new names win over the old
    clean_env.setenv("DASHBOARD_PASSWORD", "new-password-of-new")
    settings = Settings()
    assert settings.dashboard_username == "new-name"
    assert settings.dashboard_password is not None
    assert settings.dashboard_password.get_secret_value() == "new-password-of-new"


def test_app_url_prefers_shopify_app_url(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("HOST", "https://host.example")
    clean_env.setenv("APP_URL", "https://app.example")
    clean_env.setenv("SHOPIFY_APP_URL", "https://shopify.example/")
    assert Settings().shopify_app_url == "https://shopify.example"


def test_app_url_falls_back_to_app_url_then_host(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("HOST", "https://host.example")
    clean_env.setenv("APP_URL", "https://app.example")
    assert Settings().shopify_app_url == "https://app.example"
    clean_env.delenv("APP_URL")
    assert Settings().shopify_app_url == "https://host.example"
    clean_env.setenv("HOST", "bare.trycloudflare.com")
    assert Settings().shopify_app_url == "https://bare.trycloudflare.com"


def test_scopes_fall_back_to_cli_scopes(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("SCOPES", "read_products,write_products")
    assert Settings().shopify_scopes == "read_products,write_products"


def test_missing_setting_is_named(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.delenv("SHOPIFY_API_SECRET")
    with pytest.raises(ValidationError) as info:
        Settings()
    assert describe_error(info.value) == "shopjobs: missing setting: SHOPIFY_API_SECRET"


def test_malformed_settings_are_named(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("REDIS_URL", "http://nope")
    clean_env.setenv("WORKER_CONCURRENCY", "many")
    with pytest.raises(ValidationError) as info:
        Settings()
    line = describe_error(info.value)
    assert "REDIS_URL" in line and "WORKER_CONCURRENCY" in line and "\n" not in line


def test_load_settings_exits_with_one_line(
    clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clean_env.delenv("DATABASE_URL")
    with pytest.raises(SystemExit) as info:
        load_settings()
    assert info.value.code == 2
    assert capsys.readouterr().err == "shopjobs: missing settings: DATABASE_URL\n".replace(
        "settings", "setting"
    )


def test_database_settings_need_only_the_database(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.delenv("SHOPIFY_API_SECRET")
    assert DatabaseSettings().database_url.startswith("postgresql://")


def _env_without_secret() -> dict[str, str]:
    env = {k: v for k, v in REQUIRED.items() if k != "SHOPIFY_API_SECRET"}
    return {**env, "PATH": "/usr/bin:/bin"}


@pytest.mark.parametrize(
    "command",
    [
        [sys.executable, "-m", "uvicorn", "service.app:app", "--port", "0"],
        [sys.executable, "-m", "arq", "jobs.WorkerSettings"],
    ],
    ids=["web", "worker"],
)
def test_process_without_secret_stops_with_one_line(command: list[str]) -> None:
    result = subprocess.run(
        command, env=_env_without_secret(), capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    lines = [line for line in (result.stderr + result.stdout).splitlines() if line.strip()]
    assert lines == ["shopjobs: missing setting: SHOPIFY_API_SECRET"]
