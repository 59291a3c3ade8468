"""The queue's Redis client: arq's pool over REDIS_URL, connecting lazily, JSON on the wire."""

from __future__ import annotations

import asyncio

from arq.connections import ArqRedis, RedisSettings

from service.core.redis_url import tls_options
from service.queue.keys import QUEUE_NAME
from service.queue.wire import deserialize, serialize


def redis_settings(url: str, *, timeout: float = 2.0) -> RedisSettings:
    """RedisSettings for `redis://` or `rediss://` (TLS, see `tls_options`), with user,
    password and `/db`."""
    settings = RedisSettings.from_dsn(url)
    for name, value in tls_options(url).items():
        setattr(settings, name, value)
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
        ssl_cert_reqs=settings.ssl_cert_reqs,
        ssl_ca_certs=settings.ssl_ca_certs,
        ssl_check_hostname=settings.ssl_check_hostname,
        socket_connect_timeout=timeout,
        socket_timeout=timeout,
        job_serializer=serialize,
        job_deserializer=deserialize,
        default_queue_name=QUEUE_NAME,
    )


async def ping(pool: ArqRedis, timeout: float = 1.0) -> None:
    await asyncio.wait_for(pool.ping(), timeout)
