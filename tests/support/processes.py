"""The project's processes as real subprocesses: the web (uvicorn) and the worker (arq).

Tests get a `spawn` (fixture in tests/conftest.py) that starts a `Process` and stops every one
still running after the test; `start_web` and `start_worker` also wait until it answers.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from tests.support.config import ROOT
from tests.support.net import free_port, wait_for_http


class Process:
    """A project process (web or worker) run as a real subprocess, its output kept in a file."""

    def __init__(
        self, args: list[str], env: dict[str, str], log: Path, cwd: Path | None = None
    ) -> None:
        self.log_path = log
        self._log = open(log, "wb")
        self.popen = subprocess.Popen(
            args,
            env=env,
            cwd=cwd or ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, signum: int) -> None:
        self.popen.send_signal(signum)

    def wait(self, timeout: float) -> int:
        return self.popen.wait(timeout)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        self._log.close()


class Spawn(Protocol):
    """What the `spawn` fixture gives a test."""

    def __call__(
        self, args: list[str], env: dict[str, str], name: str = "proc", cwd: Path | None = None
    ) -> Process: ...


# Turns a process's command into another (tests/support/effects.py runs it with a test-only job type).
Wrap = Callable[[list[str]], list[str]]


def _wrapped(command: list[str], wrap: Wrap | None) -> list[str]:
    return wrap(command) if wrap is not None else command


def worker_command() -> list[str]:
    return [sys.executable, "-m", "arq", "jobs.WorkerSettings"]


def web_command(port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "service.app:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]


def start_worker(
    spawn: Spawn, env: dict[str, str], *, wrap: Wrap | None = None, **overrides: object
) -> Process:
    """A worker with `env` plus settings overrides (`job_lease_seconds=2` sets
    JOB_LEASE_SECONDS), once its health endpoint answers."""
    values = {**env, **{k.upper(): str(v) for k, v in overrides.items()}}
    proc = spawn(_wrapped(worker_command(), wrap), values, "worker")
    wait_for_http(f"http://127.0.0.1:{values['WORKER_HEALTH_PORT']}/healthz", timeout=30)
    return proc


def start_web(
    spawn: Spawn, env: dict[str, str], name: str = "web", *, wrap: Wrap | None = None
) -> tuple[Process, str]:
    """The real web process (uvicorn, access log on, as deployed): (process, base URL)."""
    port = free_port()
    proc = spawn(_wrapped(web_command(port), wrap), env, name)
    base = f"http://127.0.0.1:{port}"
    wait_for_http(f"{base}/healthz", timeout=30)
    return proc, base
