"""Run a command and restart it when Python files change; exit when it exits on its own.

`watchfiles`' own runner keeps waiting for a change after its command dies, which would hide
a crashed worker from `make dev`. Here a command that exits by itself ends the reloader with
its exit code, so honcho stops the web too and `make dev` fails loudly.

    python -m tools.reload [--app] DIR [DIR ...] -- COMMAND ...

`--app` also watches the packages of the app modules SHOPJOBS_APP names (docs/your-app.md),
wherever they are, so that `make dev` runs an edited app's new code.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

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


DEFAULT_APP = "jobs.builtin"


def app_dirs(setting: str | None) -> list[str]:
    """The directories of the app modules `setting` (SHOPJOBS_APP) names: a package's own
    folder, a module's file's folder."""
    found: list[str] = []
    for name in (setting or DEFAULT_APP).split(","):
        name = name.strip()
        if not name:
            continue
        try:
            spec = importlib.util.find_spec(name)
        except ImportError:
            spec = None
        if spec is None:
            print(f"reload: SHOPJOBS_APP module {name!r} not found", file=sys.stderr)
            continue
        if spec.submodule_search_locations:
            places = list(spec.submodule_search_locations)
        elif spec.origin:
            places = [str(Path(spec.origin).parent)]
        else:
            places = []
        found.extend(p for p in places if p not in found)
    return found


def main(argv: list[str]) -> int:
    if "--" not in argv:
        print("usage: python -m tools.reload [--app] DIR [DIR ...] -- COMMAND ...", file=sys.stderr)
        return 2
    split = argv.index("--")
    paths, command = argv[:split], argv[split + 1 :]
    if paths[:1] == ["--app"]:
        paths = paths[1:]
        watched = {str(Path(p).resolve()) for p in paths}
        for place in app_dirs(os.environ.get("SHOPJOBS_APP")):
            if not any(place == w or place.startswith(w + os.sep) for w in watched):
                paths.append(place)
                print(f"reload: also watching {place}", file=sys.stderr, flush=True)
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
