"""Servers a test may break: a Redis of its own, the session's Postgres stopped and started, and
a TCP relay in front of Postgres that can be cut.

Shared by the resilience tests, the proxy tests and the fault suite (tests/faults/).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path

from tools import services as local_services


class RedisServer:
    """A Redis of a test's own, on a free port, that the test may stop, kill, pause or resume.

    The session's Redis is shared by every test; this one exists to be broken. With
    `appendonly`, what it holds survives a stop and start (every write is logged to its
    append-only file, flushed on a clean shutdown); without, a restart empties it.
    """

    def __init__(self, directory: Path, appendonly: bool = False) -> None:
        self.directory = directory
        self.appendonly = appendonly
        self.port = local_services.free_port()
        self.popen: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.popen = subprocess.Popen(
            [
                local_services.find_redis_server(),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.directory),
                "--save",
                "",
                "--appendonly",
                "yes" if self.appendonly else "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 10
        while not local_services._redis_ping(self.port):
            if self.popen.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"test Redis did not start on port {self.port}")
            time.sleep(0.05)

    def pause(self) -> None:
        """Freeze the process: connections stay open but nothing answers (a hung Redis)."""
        assert self.popen is not None
        self.popen.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.popen is not None
        self.popen.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        """A clean shutdown (SIGTERM): with `appendonly`, everything written so far is kept."""
        if self.popen is None or self.popen.poll() is not None:
            return
        self.resume()
        self.popen.terminate()
        try:
            self.popen.wait(10)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(5)


class PostgresControl:
    """Stop and start the session's Postgres (the `servers` fixture) in place.

    Same port, same data directory: what was committed before the stop is there after it.
    """

    def __init__(self, servers: local_services.Services) -> None:
        self.servers = servers
        self.data = Path(servers.pg_data).resolve()
        self.pg_ctl = [os.path.join(servers.pg_bin, "pg_ctl"), "-D", str(self.data)]

    def stop(self) -> None:
        local_services._run_as(
            self.servers.pg_user,
            [*self.pg_ctl, "stop", "-m", "fast", "-w"],
            check=True,
            capture_output=True,
        )

    def running(self) -> bool:
        status = local_services._run_as(
            self.servers.pg_user, [*self.pg_ctl, "status"], capture_output=True
        )
        return status.returncode == 0

    def start(self) -> None:
        local_services._run_as(
            self.servers.pg_user,
            [
                *self.pg_ctl,
                "start",
                "-w",
                "-l",
                str(self.data / "server.log"),
                "-o",
                f"-p {self.servers.pg_port} -c listen_addresses=127.0.0.1 -k {self.data} "
                "-c fsync=off -c max_connections=200",
            ],
            check=True,
            capture_output=True,
        )


class Relay:
    """A TCP relay in front of the test Postgres that can be cut and restored: a real outage.

    Cutting closes the listening socket and every relayed connection, so the app sees exactly
    what a Postgres that went away looks like (closed connections, then refused ones).
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = local_services.free_port()
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(
            self._relay, "127.0.0.1", self.port, reuse_address=True
        )

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def cut(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.close()
        self.writers.clear()
        await self.server.wait_closed()
