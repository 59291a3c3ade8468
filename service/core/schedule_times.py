"""The arithmetic of job schedules: ticks of a cron expression, and where in the interval a
shop's run falls. Pure functions of the time they are given, so tests choose the time.

Expressions are parsed by cronsim (pyproject says why); times are UTC.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

from cronsim import CronSim, CronSimError

from jobs.types import Schedule

__all__ = ["CronSimError", "latest_tick", "next_tick", "spread_offset", "validate"]


def validate(schedule: Schedule) -> None:
    """Raise CronSimError for an expression cronsim cannot read."""
    CronSim(schedule.cron, datetime.now(UTC))


def latest_tick(schedule: Schedule, now: datetime) -> datetime:
    """The last tick at or before `now`."""
    return next(CronSim(schedule.cron, now + timedelta(microseconds=1), reverse=True))


def next_tick(schedule: Schedule, after: datetime) -> datetime:
    """The first tick strictly after `after`."""
    return next(CronSim(schedule.cron, after))


def spread_offset(job_type: str, shop: str, interval: timedelta) -> timedelta:
    """Where in `interval` a shop's run of a tick falls: the same place every tick, different
    for each shop (a hash), so runs spread evenly and a shop's runs stay an interval apart.
    service/store/schedules.py computes the same in SQL; a test compares them."""
    digest = hashlib.md5(f"{job_type}:{shop}".encode(), usedforsecurity=False).hexdigest()
    return interval * (int(digest[:8], 16) / 2**32)
