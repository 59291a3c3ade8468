"""The queue client: Redis settings from REDIS_URL, the arq pool, and JSON on the wire.

Jobs travel as JSON, never pickle: arq's default serializer would let anyone who can write to
Redis run code in the worker. The job payload is only the job's id; its input lives in
Postgres, where the worker reads it when it claims the job.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson
from arq.connections import ArqRedis, RedisSettings
from arq.constants import job_key_prefix, result_key_prefix
from redis.asyncio import Redis

from service.core import fair
from service.core.fair import QueueFairness

QUEUE_NAME = "arq:queue"


def serialize(obj: Any) -> bytes:
    # default=str turns whatever arq puts in a result (an exception, say) into text, not pickle.
    return orjson.dumps(obj, default=str)


# What arq reads from a job without guarding its type: `t` (the try count) and `et` (the enqueue
# time, in ms) are used outside arq's error handling, so a wrong type there would raise out of
# the worker's poll loop and end the process (and every process that picks the entry up next).
_JOB_FIELDS: dict[str, tuple[type, ...]] = {
    "f": (str,),
    "a": (list,),
    "k": (dict,),
    "t": (int, type(None)),
    "et": (int, float),
}
LATEST_TIMESTAMP_MS = 253_402_300_799_000  # 9999-12-31: what datetime can represent


def deserialize(data: bytes) -> Any:
    """JSON, and a job only in the shape `serialize` writes; anything else raises, which arq
    turns into a failed entry (logged and removed) instead of a dead worker."""
    value = orjson.loads(data)
    if isinstance(value, dict):
        for key, types in _JOB_FIELDS.items():
            field = value.get(key)
            if key in value and (not isinstance(field, types) or isinstance(field, bool)):
                raise ValueError(f"malformed queue entry: field {key!r}")
        if "et" in value and not 0 <= value["et"] <= LATEST_TIMESTAMP_MS:
            raise ValueError("malformed queue entry: field 'et'")
    return value


CERT_REQS = ("none", "optional", "required")
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def tls_options(url: str) -> dict[str, Any]:
    """RedisSettings' TLS fields for `rediss://`: the certificate and the host name are checked.

    arq's `from_dsn` reads only the scheme, and redis-py on its own checks the certificate but
    not the name in it, so any certificate from a public CA would do. The URL may relax this
    explicitly: `ssl_cert_reqs=none` (no check at all: encryption only) or `optional`,
    `ssl_check_hostname=false`; `ssl_ca_certs=/path/ca.pem` trusts a private CA instead of
    the system's roots.
    """
    if not url.startswith("rediss://"):
        return {}
    query = dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))
    cert_reqs = query.get("ssl_cert_reqs", "required").lower()
    if cert_reqs not in CERT_REQS:
        raise ValueError(f"ssl_cert_reqs must be one of {', '.join(CERT_REQS)}")
    check_hostname = cert_reqs != "none"
    if "ssl_check_hostname" in query:
        flag = query["ssl_check_hostname"].lower()
        if flag not in _TRUE + _FALSE:
            raise ValueError("ssl_check_hostname must be true or false")
        check_hostname = flag in _TRUE
        if check_hostname and cert_reqs == "none":
            raise ValueError("ssl_check_hostname=true needs a certificate (ssl_cert_reqs)")
    return {
        "ssl_cert_reqs": cert_reqs,
        "ssl_ca_certs": query.get("ssl_ca_certs") or None,
        "ssl_check_hostname": check_hostname,
    }


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


WAKE_CHANNEL = "shopjobs:wake"

# arq's enqueue_job, in one round trip instead of four (WATCH, EXISTS, MULTI/PSETEX/ZADD),
# with the same keys and payload, plus a wake-up for idle workers. Returns 0 when a job with
# this id is already queued, running, or has a kept result (arq's `_job_id` dedup).
# KEYS: job key, result key, queue. ARGV: job id, payload, score, expiry in ms.
ENQUEUE_LUA = (
    """
if redis.call('EXISTS', KEYS[1], KEYS[2]) > 0 then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[4])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
redis.call('PUBLISH', '"""
    + WAKE_CHANNEL
    + """', '1')
return 1
"""
)
# The same with QUEUE_FAIRNESS=shop: the entry goes on its shop's own set (service/core/fair.py),
# and the shop joins the rotation if it was not in it. KEYS: job key, result key, the shop's
# set. ARGV: job id, payload, score, expiry in ms, the shop (or fair.APP_BUCKET), now (ms).
FAIR_ENQUEUE_LUA = (
    fair.PRELUDE
    + """
if redis.call('EXISTS', KEYS[1], KEYS[2]) > 0 then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[4])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
joined(ARGV[5], tonumber(ARGV[3]), tonumber(ARGV[6]))
redis.call('PUBLISH', '"""
    + WAKE_CHANNEL
    + """', '1')
return 1
"""
)
EXPIRES_EXTRA_MS = 86_400_000  # arq's default: a queued job's key outlives its due time by a day


def _enqueue_call(
    job_type: str, job_id: str, shop: str | None, defer_seconds: float, fairness: QueueFairness
) -> tuple[str, list[str], list[Any]]:
    """The script, keys and arguments that queue one job."""
    now_ms = int(time.time() * 1000)
    defer_ms = int(defer_seconds * 1000) if defer_seconds > 0 else 0
    args = [job_id] if shop is None else [job_id, shop]
    payload = serialize({"t": None, "f": job_type, "a": args, "k": {}, "et": now_ms})
    argv = [job_id, payload, now_ms + defer_ms, defer_ms + EXPIRES_EXTRA_MS]
    keys = [job_key_prefix + job_id, result_key_prefix + job_id]
    if fairness == QueueFairness.FIFO:
        return ENQUEUE_LUA, [*keys, QUEUE_NAME], argv
    bucket = shop or fair.APP_BUCKET
    return FAIR_ENQUEUE_LUA, [*keys, fair.shop_queue(shop)], [*argv, bucket, now_ms]


async def enqueue_many(
    pool: Redis,
    jobs: list[tuple[str, str, str | None]],
    *,
    fairness: QueueFairness = QueueFairness.SHOP,
) -> list[bool]:
    """`enqueue` for many (job type, job id, shop) in one round trip (a pipeline)."""
    scripts: dict[str, Any] = {}
    async with pool.pipeline(transaction=False) as pipe:
        for job_type, job_id, shop in jobs:
            lua, keys, args = _enqueue_call(job_type, job_id, shop, 0, fairness)
            script = scripts.get(lua) or scripts.setdefault(lua, pool.register_script(lua))
            await script(keys=keys, args=args, client=pipe)
        answers = await pipe.execute()
    return [bool(answer) for answer in answers]


async def enqueue(
    pool: Redis,
    job_type: str,
    job_id: str,
    *,
    shop: str | None = None,
    defer_seconds: float = 0,
    fairness: QueueFairness = QueueFairness.SHOP,
) -> bool:
    """Queue a job for the worker: arq function = the job type; arguments = id and shop.

    The shop domain rides along so a worker knows the job's shop without asking Postgres.
    With QUEUE_FAIRNESS=shop (`fairness`) the entry goes on its shop's set, taken round-robin
    by shop (service/core/fair.py); with fifo, on arq's one queue. `_job_id` semantics are
    arq's either way: the same job is never queued twice while it waits or runs; that case
    returns False.
    """
    lua, keys, args = _enqueue_call(job_type, job_id, shop, defer_seconds, fairness)
    return bool(await pool.register_script(lua)(keys=keys, args=args))


async def depth(pool: Redis) -> tuple[int, int]:
    """(entries, due now) in the queue, whichever the fairness: waiting and running jobs."""
    return await fair.depth(pool, QUEUE_NAME, int(time.time() * 1000))
