"""The job types this deployment runs: the one list both the web and the worker read."""

from __future__ import annotations

from jobs import echo
from jobs.types import JobType
from service.settings import Settings


def job_types(settings: Settings) -> dict[str, JobType]:
    """Enabled job types by name. Add your own types to `types` below."""
    types: list[JobType] = []
    if settings.enable_diagnostic_jobs:
        types.append(echo.JOB_TYPE)
    return {t.name: t for t in types}
