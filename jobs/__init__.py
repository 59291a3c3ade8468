"""The worker: `arq jobs.WorkerSettings`.

`WorkerSettings` is built on first access, from the environment, so importing `jobs` (the web
does, for the job types) never requires worker settings or starts anything.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "WorkerSettings":
        from jobs.worker import build_worker_settings, install
        from service.settings import load_settings

        settings = load_settings()
        install()
        return build_worker_settings(settings)
    raise AttributeError(f"module 'jobs' has no attribute {name!r}")
