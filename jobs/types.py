"""What a job type is: a name, a pydantic input model, an async handler, and its own limits.

A type is declared once and used by both processes: the web validates input against
`input_model` before a row is written; the worker runs `handler` with the validated input.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import BaseModel


class NonRetryableError(Exception):
    """Raise from a handler to fail the job at once: retrying cannot help (bad input, gone)."""


class JobContext(Protocol):
    """What a handler gets besides its input."""

    job_id: str
    job_type: str
    shop: str
    attempt: int

    async def report_progress(self, percent: int, message: str | None = None) -> None: ...


Handler = Callable[[JobContext, Any], Awaitable[Any]]


@dataclass(frozen=True)
class JobType:
    name: str
    input_model: type[BaseModel]
    handler: Handler
    timeout_seconds: float | None = None  # None: JOB_TIMEOUT_SECONDS
    max_attempts: int | None = None  # None: JOB_MAX_ATTEMPTS
    backoff_seconds: float | None = None  # None: JOB_BACKOFF_SECONDS
    non_retryable: tuple[type[BaseException], ...] = field(default=())
