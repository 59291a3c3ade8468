"""jobs/worker/mirror.py: outcome writes are retried only while Postgres is unavailable."""

from __future__ import annotations

import pytest

from jobs.worker import mirror


async def test_unavailable_is_retried_until_the_write_lands(monkeypatch) -> None:
    monkeypatch.setattr(mirror, "FIRST_DELAY_SECONDS", 0.001)
    attempts = 0

    async def write() -> str:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise ConnectionResetError("postgres restarting")
        return "written"

    assert await mirror.persist("test", write) == "written"
    assert attempts == 3


async def test_any_other_error_is_raised_at_once() -> None:
    attempts = 0

    async def write() -> None:
        nonlocal attempts
        attempts += 1
        raise ValueError("invalid byte sequence for encoding UTF8: 0x00")

    with pytest.raises(ValueError, match="0x00"):
        await mirror.persist("test", write)
    assert attempts == 1
