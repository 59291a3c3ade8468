"""Run a command and restart it when Python files change; exit when it exits on its own.

`watchfiles`' own runner keeps waiting for a change after its command dies, which would hide
a crashed worker from `make dev`. Here a command that exits by itself ends the reloader with
its exit code, so honcho stops the web too and `make dev` fails loudly.

    python -m tools.reload DIR [DIR ...] -- COMMAND ...
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading

from watchfiles import PythonFilter, watch

POLL_MS = 300


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main(argv: list[str]) -> int:
    if "--" not in argv:
        print("usage: python -m tools.reload DIR [DIR ...] -- COMMAND ...", file=sys.stderr)
        return 2
    split = argv.index("--")
    paths, command = argv[:split], argv[split + 1 :]
    stopping = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    proc = subprocess.Popen(command)
    for changes in watch(
        *paths,
        watch_filter=PythonFilter(),
        stop_event=stopping,
        yield_on_timeout=True,
        rust_timeout=POLL_MS,
        raise_interrupt=False,
    ):
        if proc.poll() is not None:
            return proc.returncode or 1
        if changes:
            print("reload: files changed, restarting", file=sys.stderr, flush=True)
            _stop(proc)
            proc = subprocess.Popen(command)
    _stop(proc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
