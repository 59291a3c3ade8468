"""The local-servers script: start, idempotent second start, stop."""

import socket
import subprocess
import sys
from pathlib import Path

from tools import services


def _open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_start_is_idempotent_and_stop_stops(tmp_path: Path) -> None:
    first = services.start(tmp_path, fixed_ports=False, durable=False)
    try:
        assert _open(first.pg_port) and _open(first.redis_port)
        pg_pid = (Path(first.pg_data).resolve() / "postmaster.pid").read_text().split()[0]
        second = services.start(tmp_path, fixed_ports=False, durable=False)
        assert (second.pg_port, second.redis_port) == (first.pg_port, first.redis_port)
        assert (Path(first.pg_data).resolve() / "postmaster.pid").read_text().split()[0] == pg_pid
        result = subprocess.run(
            [sys.executable, "-m", "tools.services", "env", "--dir", str(tmp_path)],
            capture_output=True,
            text=True,
            check=True,
        )
        assert f"export DATABASE_URL={first.database_url}" in result.stdout
        assert f"export REDIS_URL={first.redis_url}" in result.stdout
        psql = subprocess.run(
            [str(Path(first.pg_bin) / "psql"), first.database_url, "-Atc", "select 41 + 1"],
            capture_output=True,
            text=True,
        )
        assert psql.stdout.strip() == "42"
    finally:
        assert services.stop(tmp_path)
    assert not _open(first.pg_port) and not _open(first.redis_port)
    again = services.start(tmp_path, fixed_ports=False, durable=False)
    try:
        assert _open(again.pg_port)
    finally:
        services.stop(tmp_path, remove_data=True)
    assert not Path(again.pg_data).exists() and not Path(again.pg_data).is_symlink()
