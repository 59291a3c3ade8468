"""The retry policy: whether a failed attempt is retried, and after how long.

Ordinary exceptions are retried with exponential backoff, `base * 2**(n-1)` after the n-th
failure, until `max_attempts` attempts have failed; a non-retryable error fails the job at once.
A timeout is an ordinary failure. Pure arithmetic: no I/O, unit-tested on its own.
"""

from __future__ import annotations

from dataclasses import dataclass

from jobs.types import NonRetryableError

MAX_BACKOFF_SECONDS = 3600.0


def backoff_seconds(base: float, failures: int) -> float:
    """Delay before the attempt that follows the `failures`-th failure (1-based)."""
    if failures < 1:
        return 0.0
    factor: int = 2 ** (failures - 1)  # failures >= 1: a whole power of two
    return min(base * factor, MAX_BACKOFF_SECONDS)


@dataclass(frozen=True)
class Decision:
    retry: bool
    delay: float = 0.0


def decide(
    error: BaseException,
    failures: int,
    max_attempts: int,
    base: float,
    non_retryable: tuple[type[BaseException], ...] = (),
) -> Decision:
    """What to do after the `failures`-th failed attempt raised `error`."""
    if isinstance(error, (NonRetryableError, *non_retryable)):
        return Decision(retry=False)
    if failures >= max_attempts:
        return Decision(retry=False)
    return Decision(retry=True, delay=backoff_seconds(base, failures))
