"""shopjobs for app authors: everything an app imports, from one place.

    from jobs import JobType, JobContext, NonRetryableError      # writing a job type
    from jobs import open_client, JobStatus                      # starting and reading jobs

Everything named in `__all__` is the app author's contract and stays stable across releases:
the job author's (jobs/types.py), and the client's (service/jobs_client.py, opened from
settings by jobs/client.py), with its exceptions.

The client's names are imported on first access, as is the worker's entry point,
`arq jobs.WorkerSettings` (built from the environment): importing `jobs` (the web does, for
the job types) never connects to anything, requires worker settings, or imports the worker.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from jobs.types import (
    AdminAPI,
    App,
    BulkAction,
    CompletionWrite,
    Debounce,
    EnqueuedJob,
    FlowAction,
    FlowTrigger,
    Handler,
    JobContext,
    JobStatus,
    JobType,
    JobView,
    NonRetryableError,
    RateLimit,
    Schedule,
    WebhookJob,
)

if TYPE_CHECKING:
    from jobs.client import open_client
    from service.jobs_client import (
        EnqueueError,
        InvalidInput,
        JobsClient,
        QueueUnavailable,
        ShopNotInstalled,
        UnknownJobType,
    )

__all__ = [
    "AdminAPI",
    "App",
    "BulkAction",
    "CompletionWrite",
    "Debounce",
    "EnqueueError",
    "EnqueuedJob",
    "FlowAction",
    "FlowTrigger",
    "Handler",
    "InvalidInput",
    "JobContext",
    "JobStatus",
    "JobType",
    "JobView",
    "JobsClient",
    "NonRetryableError",
    "QueueUnavailable",
    "RateLimit",
    "Schedule",
    "ShopNotInstalled",
    "UnknownJobType",
    "WebhookJob",
    "open_client",
]

_CLIENT_NAMES = {
    "EnqueueError",
    "InvalidInput",
    "JobsClient",
    "QueueUnavailable",
    "ShopNotInstalled",
    "UnknownJobType",
}


def __getattr__(name: str) -> Any:
    if name == "WorkerSettings":
        from jobs.worker.startup import worker_settings_from_environment

        return worker_settings_from_environment()
    if name == "open_client":
        from jobs.client import open_client

        return open_client
    if name in _CLIENT_NAMES:
        from service import jobs_client

        return getattr(jobs_client, name)
    raise AttributeError(f"module 'jobs' has no attribute {name!r}")
