"""Structured logs in-process: JSON lines with bound job and request fields, and text lines.

The real processes' lines: tests/integration/test_logs_processes.py."""

from __future__ import annotations

import asyncio
import io
import logging
import time

import orjson

from service.core import logs


def capture(log_format: str) -> tuple[logging.Logger, io.StringIO]:
    """A private logger writing through the project's formatter and filter."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        logs.JsonFormatter() if log_format == "json" else logging.Formatter(logs.TEXT_FORMAT)
    )
    handler.addFilter(logs.BoundFields())
    logger = logging.getLogger(f"test.logs.{log_format}.{time.monotonic_ns()}")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    return logger, stream


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_carry_bound_and_extra_fields() -> None:
    logger, stream = capture("json")
    logger.info("plain %s", "line")
    with logs.bind(job_id="j1", type="echo", shop="a.myshopify.com"):
        logger.warning("inside", extra={"attempt": 2})
        with logs.bind(shop="b.myshopify.com"):
            logger.info("nested")
        logger.info("explicit", extra={"type": "override"})
    logger.info("after")
    try:
        raise ValueError("bad")
    except ValueError:
        logger.exception("failed")

    first, inside, nested, explicit, after, failed = lines(stream)
    assert first["message"] == "plain line" and first["level"] == "INFO"
    assert first["logger"].startswith("test.logs.json")
    assert str(first["timestamp"]).endswith("+00:00") and "T" in str(first["timestamp"])
    assert set(first) == {"timestamp", "level", "logger", "message"}
    assert inside == {
        **{k: inside[k] for k in ("timestamp", "logger")},
        "level": "WARNING",
        "message": "inside",
        "job_id": "j1",
        "type": "echo",
        "shop": "a.myshopify.com",
        "attempt": 2,
    }
    assert nested["shop"] == "b.myshopify.com" and nested["job_id"] == "j1"
    assert explicit["type"] == "override"
    assert "job_id" not in after
    assert "ValueError: bad" in str(failed["exception"]) and failed["level"] == "ERROR"


async def test_bindings_stay_with_their_task() -> None:
    logger, stream = capture("json")

    async def job(job_id: str, delay: float) -> None:
        with logs.bind(job_id=job_id):
            await asyncio.sleep(delay)
            logger.info("done %s", job_id)

    await asyncio.gather(job("first", 0.05), job("second", 0.0))
    assert {(line["message"], line["job_id"]) for line in lines(stream)} == {
        ("done first", "first"),
        ("done second", "second"),
    }


def test_text_lines_stay_readable() -> None:
    logger, stream = capture("text")
    with logs.bind(job_id="j1"):
        logger.info("job j1 type=echo started")
    assert stream.getvalue().rstrip().endswith("INFO " + logger.name + ": job j1 type=echo started")
