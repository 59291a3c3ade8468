"""shopjobs for app authors: `from jobs import JobType, JobContext, NonRetryableError`.

This is the one place an app's own job types import from; everything named in `__all__` is
the job author's contract (jobs/types.py) and stays stable across releases.

It is also the worker's entry point, `arq jobs.WorkerSettings`: that name is built on first
access, from the environment, so importing `jobs` (the web does, for the job types) never
requires worker settings, imports the worker, or starts anything.
"""

from __future__ import annotations

from typing import Any

from jobs.types import (
    AdminAPI,
    CompletionWrite,
    EnqueuedJob,
    Handler,
    JobContext,
    JobType,
    NonRetryableError,
    Schedule,
    WebhookJob,
)

__all__ = [
    "AdminAPI",
    "CompletionWrite",
    "EnqueuedJob",
    "Handler",
    "JobContext",
    "JobType",
    "NonRetryableError",
    "Schedule",
    "WebhookJob",
]


def __getattr__(name: str) -> Any:
    if name == "WorkerSettings":
        from jobs.worker.startup import worker_settings_from_environment

        return worker_settings_from_environment()
    raise AttributeError(f"module 'jobs' has no attribute {name!r}")
