"""`make dev`'s reloader (tools/reload.py) restarts on edits to the app's own package too."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from tools.reload import app_dirs


def test_app_dirs_are_the_app_packages(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "myapp").mkdir()
    (tmp_path / "myapp" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert app_dirs("jobs.builtin, myapp") == [
        str(Path("jobs/builtin").resolve()),
        str(tmp_path / "myapp"),
    ]


def test_an_edit_to_the_app_package_restarts_the_command(tmp_path: Path, spawn) -> None:
    app = tmp_path / "reloadapp"
    app.mkdir()
    (app / "__init__.py").write_text("VALUE = 1\n")
    marks = tmp_path / "starts"
    command = [
        sys.executable,
        "-c",
        f"open({str(marks)!r}, 'a').write('x'); import time; time.sleep(60)",
    ]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), os.getcwd()]),
        "SHOPJOBS_APP": "jobs.builtin,reloadapp",
    }
    proc = spawn([sys.executable, "-m", "tools.reload", "--app", "service", "--", *command], env)

    def starts() -> int:
        return len(marks.read_text()) if marks.exists() else 0

    deadline = time.monotonic() + 15
    while starts() < 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert starts() == 1
    time.sleep(1.0)  # the watcher is up
    (app / "__init__.py").write_text("VALUE = 2\n")
    deadline = time.monotonic() + 15
    while starts() < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert starts() == 2, proc.output
    assert f"also watching {app}" in proc.output
