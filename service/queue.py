"""The queue client: Redis settings from REDIS_URL, the arq pool, and JSON on the wire.

Jobs travel as JSON, never pickle: arq's default serializer would let anyone who can write to
Redis run code in the worker. The job payload is only the job's id; its input lives in
Postgres, where the worker reads it when it claims the job.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from arq.connections import ArqRedis, RedisSettings

QUEUE_NAME = "arq:queue"


def serialize(obj: Any) -> bytes:
    # default=str turns whatever arq puts in a result (an exception, say) into text, not pickle.
    return orjson.dumps(obj, default=str)


def deserialize(data: bytes) -> Any:
    return orjson.loads(data)


def redis_settings(url: str, *, timeout: float = 2.0) -> RedisSettings:
    """RedisSettings for `redis://` or `rediss://` (TLS), with user, password and `/db`."""
    settings = RedisSettings.from_dsn(url)
    settings.conn_timeout = max(1, round(timeout))
    settings.conn_retries = 0
    return settings


def connect(url: str, *, timeout: float = 2.0) -> ArqRedis:
    """An arq pool that connects lazily, so a process can start while Redis is down."""
    settings = redis_settings(url, timeout=timeout)
    return ArqRedis(
        host=settings.host,
        port=settings.port,
        db=settings.database,
        username=settings.username,
        password=settings.password,
        ssl=settings.ssl,
        socket_connect_timeout=timeout,
        socket_timeout=timeout,
        job_serializer=serialize,
        job_deserializer=deserialize,
        default_queue_name=QUEUE_NAME,
    )


async def ping(pool: ArqRedis, timeout: float = 1.0) -> None:
    await asyncio.wait_for(pool.ping(), timeout)


async def enqueue(
    pool: ArqRedis, job_type: str, job_id: str, *, shop: str | None = None, defer_seconds: float = 0
) -> bool:
    """Queue a job for the worker: arq function = the job type; arguments = id and shop.

    The shop domain rides along only so a worker can tell, without asking Postgres, that the
    shop is already at its concurrency cap. `_job_id` is the job's id, so the same job is never
    queued twice while it waits or runs; arq then returns None, reported here as False.
    """
    args = (job_id,) if shop is None else (job_id, shop)
    job = await pool.enqueue_job(
        job_type, *args, _job_id=job_id, _defer_by=defer_seconds if defer_seconds > 0 else None
    )
    return job is not None
