"""DATABASE_URL's sslmode, honoured: against the project's own Postgres with TLS on and off.

`databases` passes only its own `ssl` option to asyncpg, so before service/core/db.py read
sslmode itself, `sslmode=require` connected in plaintext without a word.
"""

from __future__ import annotations

import asyncio
import pwd
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.core.db import DatabaseTlsError, create_database
from tests.support.net import free_port
from tests.support.processes import web_command, worker_command
from tests.support.tls_certs import ServerFiles, make_server_files
from tools import services as local_services

ROOT = Path(__file__).resolve().parents[2]


def with_query(url: str, query: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{query}"


class TlsPostgres:
    def __init__(self, svc: local_services.Services, trusted: ServerFiles, other: ServerFiles):
        self.svc = svc
        self.trusted = trusted  # the server's certificate names 127.0.0.1, signed by this CA
        self.other = other  # another CA, which never signed the server's certificate


@pytest.fixture(scope="module")
def tls_postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsPostgres]:
    """A Postgres of its own with ssl=on and a certificate for 127.0.0.1 from a test CA."""
    base = tmp_path_factory.mktemp("tls-postgres")
    svc = local_services.start(base, fixed_ports=False, durable=False)
    trusted = make_server_files(base / "certs", "127.0.0.1", "trusted")
    other = make_server_files(base / "certs", "127.0.0.1", "other")
    data = Path(svc.pg_data).resolve()
    for source, name in ((trusted.cert, "server.crt"), (trusted.key, "server.key")):
        target = data / name
        shutil.copyfile(source, target)
        target.chmod(0o600)
        if svc.pg_user:
            shutil.chown(target, svc.pg_user, pwd.getpwnam(svc.pg_user).pw_gid)

    async def turn_tls_on() -> None:
        database = create_database(with_query(svc.database_url, "sslmode=disable"))
        await database.connect()
        await database.execute("ALTER SYSTEM SET ssl = 'on'")
        await database.execute("SELECT pg_reload_conf()")
        await database.disconnect()

    asyncio.run(turn_tls_on())
    yield TlsPostgres(svc, trusted, other)
    local_services.stop(base, remove_data=True)


async def encrypted(url: str) -> bool:
    """Connect with `url` and ask Postgres whether this very connection uses TLS."""
    database = create_database(url, min_size=1, max_size=1)
    await database.connect()
    try:
        return bool(
            await database.fetch_val("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        )
    finally:
        await database.disconnect()


async def test_require_against_a_server_without_tls_makes_no_connection(servers) -> None:
    url = with_query(servers.database_url, "sslmode=require")
    with pytest.raises(DatabaseTlsError, match="does not offer TLS"):
        await encrypted(url)
    assert await encrypted(with_query(servers.database_url, "sslmode=prefer")) is False
    assert await encrypted(servers.database_url) is False  # no sslmode: asyncpg's prefer


async def test_modes_against_a_server_with_tls(tls_postgres: TlsPostgres) -> None:
    url = tls_postgres.svc.database_url
    assert await encrypted(with_query(url, "sslmode=require")) is True
    assert await encrypted(with_query(url, "sslmode=prefer")) is True
    assert await encrypted(with_query(url, "sslmode=disable")) is False
    trusted = f"sslrootcert={tls_postgres.trusted.ca}"
    assert await encrypted(with_query(url, f"sslmode=verify-full&{trusted}")) is True
    assert await encrypted(with_query(url, f"sslmode=verify-ca&{trusted}")) is True
    untrusted = f"sslrootcert={tls_postgres.other.ca}"
    for mode in ("verify-ca", "verify-full"):
        with pytest.raises(DatabaseTlsError, match="certificate"):
            await encrypted(with_query(url, f"sslmode={mode}&{untrusted}"))


async def test_verify_ca_does_not_check_the_host_name(tls_postgres: TlsPostgres) -> None:
    """The certificate names 127.0.0.1; reached as `localhost`, only verify-full objects."""
    url = tls_postgres.svc.database_url.replace("127.0.0.1", "localhost")
    trusted = f"sslrootcert={tls_postgres.trusted.ca}"
    assert await encrypted(with_query(url, f"sslmode=verify-ca&{trusted}")) is True
    with pytest.raises(DatabaseTlsError, match="mismatch"):
        await encrypted(with_query(url, f"sslmode=verify-full&{trusted}"))


def test_make_db_with_tls_applies_the_schema(tls_postgres: TlsPostgres, env) -> None:
    url = with_query(
        tls_postgres.svc.database_url, f"sslmode=verify-full&sslrootcert={tls_postgres.trusted.ca}"
    )
    result = subprocess.run(
        [sys.executable, "-m", "service", "db", "apply"],
        env={**env, "DATABASE_URL": url},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(("applied 0001_", "schema up to date at ")), result.stdout


def one_line_refusal(args: list[str], env: dict[str, str]) -> str:
    """Run a process that must refuse to start; return its output, checked to hold no traceback."""
    result = subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Traceback" not in output, output
    lines = [line for line in output.splitlines() if "does not offer TLS" in line]
    assert len(lines) == 1, output
    return output


@pytest.mark.parametrize("process", ["make db", "web", "worker"])
def test_require_without_tls_stops_each_process_in_one_line(servers, env, process) -> None:
    env = {**env, "DATABASE_URL": with_query(servers.database_url, "sslmode=require")}
    args = {
        "make db": [sys.executable, "-m", "service", "db", "apply"],
        "web": web_command(free_port()),
        "worker": worker_command(),
    }[process]
    one_line_refusal(args, env)


def test_a_bad_sslmode_is_a_setting_error(servers, env) -> None:
    env = {**env, "DATABASE_URL": with_query(servers.database_url, "sslmode=sometimes")}
    result = subprocess.run(
        [sys.executable, "-m", "service", "db", "apply"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().startswith("shopjobs: invalid setting: DATABASE_URL (")
    assert "sslmode must be one of" in result.stderr
