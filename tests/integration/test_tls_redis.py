"""`rediss://` checks the server's certificate and host name, against a TLS redis-server.

arq's `RedisSettings.from_dsn` keeps only the scheme of a `rediss://` URL, and redis-py on its
own does not check the host name: before service/core/redis_url.py's `tls_options`, a certificate
for another host was accepted.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator

import pytest
from arq.connections import create_pool
from redis.exceptions import ConnectionError as RedisConnectionError

from jobs.worker.startup import worker_redis_settings
from service import queue
from service.core.redis_url import tls_options
from tests.support.tls_certs import ServerFiles, make_server_files
from tools import services as local_services


class TlsRedis:
    def __init__(self, port: int, trusted: ServerFiles, other: ServerFiles) -> None:
        self.port = port
        self.trusted = trusted  # signed the server's certificate, for 127.0.0.1
        self.other = other  # a CA that signed nothing the server shows

    def url(self, host: str = "127.0.0.1", query: str = "") -> str:
        return f"rediss://{host}:{self.port}/0" + (f"?{query}" if query else "")


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsRedis]:
    base = tmp_path_factory.mktemp("tls-redis")
    trusted = make_server_files(base, "127.0.0.1", "trusted")
    other = make_server_files(base, "127.0.0.1", "other")
    port = local_services.free_port()
    server = subprocess.Popen(
        [
            local_services.find_redis_server(),
            "--port",
            "0",
            "--tls-port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--tls-cert-file",
            str(trusted.cert),
            "--tls-key-file",
            str(trusted.key),
            "--tls-ca-cert-file",
            str(trusted.ca),
            "--tls-auth-clients",
            "no",
            "--save",
            "",
            "--dir",
            str(base),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while not local_services.port_in_use(port):
        assert server.poll() is None, "redis-server refused --tls-port (built without TLS?)"
        assert time.monotonic() < deadline, "TLS redis-server did not start"
        time.sleep(0.05)
    yield TlsRedis(port, trusted, other)
    server.terminate()
    server.wait(10)


async def ping(url: str) -> None:
    pool = queue.connect(url)
    try:
        await queue.ping(pool, 5)
    finally:
        await pool.aclose()


async def test_a_certificate_from_the_trusted_ca_for_this_host_connects(tls_redis) -> None:
    await ping(tls_redis.url(query=f"ssl_ca_certs={tls_redis.trusted.ca}"))


async def test_an_untrusted_certificate_is_refused(tls_redis) -> None:
    with pytest.raises(RedisConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
        await ping(tls_redis.url(query=f"ssl_ca_certs={tls_redis.other.ca}"))
    with pytest.raises(RedisConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
        await ping(tls_redis.url())  # the system's roots never signed the test CA


async def test_a_certificate_for_another_host_is_refused(tls_redis) -> None:
    """The certificate names 127.0.0.1; reached as `localhost`, it is someone else's."""
    url = tls_redis.url("localhost", f"ssl_ca_certs={tls_redis.trusted.ca}")
    with pytest.raises(RedisConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
        await ping(url)
    settings = worker_redis_settings(url)  # the worker's arq pool checks the same way
    settings.conn_retries = 0
    settings.retry, settings.retry_on_error = None, []  # the worker's own retry forever
    with pytest.raises(RedisConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
        await create_pool(settings)


async def test_explicit_parameters_relax_the_checks(tls_redis) -> None:
    await ping(tls_redis.url("localhost", "ssl_cert_reqs=none"))
    await ping(tls_redis.url(query=f"ssl_cert_reqs=none&ssl_ca_certs={tls_redis.other.ca}"))
    name_only = f"ssl_ca_certs={tls_redis.trusted.ca}&ssl_check_hostname=false"
    await ping(tls_redis.url("localhost", name_only))


def test_bad_tls_parameters_are_setting_errors() -> None:
    for query in ("ssl_cert_reqs=maybe", "ssl_check_hostname=perhaps"):
        with pytest.raises(ValueError):
            tls_options(f"rediss://127.0.0.1:1/0?{query}")
    assert tls_options("redis://127.0.0.1:1/0?ssl_cert_reqs=none") == {}
