"""`python -m bench.batches` (docs/performance.md, docs/starting-jobs.md) needs only
DATABASE_URL and REDIS_URL, as its docstring says: every other required setting is its own."""

from __future__ import annotations

from bench.batches import bench_settings


def test_settings_need_only_the_two_urls(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    for name in ("TOKEN_ENCRYPTION_KEYS", "SHOPIFY_API_KEY", "SHOPIFY_API_SECRET"):
        monkeypatch.delenv(name, raising=False)
    settings = bench_settings(
        {
            "DATABASE_URL": "postgresql://u@127.0.0.1:5432/db",
            "REDIS_URL": "redis://127.0.0.1:6379/0",
        }
    )
    assert settings.enable_diagnostic_jobs
    assert settings.token_cipher.decrypt(settings.token_cipher.encrypt("shpat_x")) == "shpat_x"
