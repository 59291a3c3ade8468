"""The dashboard's charts: throughput, failures and queue wait over the last hour or day.

Each chart is one aggregate over a time range that an existing index bounds, so its cost
grows with the jobs in the window, never with the table:

- finished jobs (throughput and failures) per bucket of `finished_at`, found through
  `jobs_status_updated_idx (status, updated_at)`: a final row's `updated_at` is at or after its
  `finished_at`, so `updated_at >= start` keeps every row the window needs;
- queue wait (first start minus creation: `started_at` is set by the first claim only) per
  bucket of `created_at`, found through `jobs_created_idx` (or `jobs_shop_created_idx`).

A very busy day is still many rows, so both run under a statement timeout
(CHART_TIMEOUT_MS): a chart that cannot be drawn in time is reported as such rather than
holding a connection the dashboard's other pages need.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

import asyncpg
from databases import Database

from service.store.listing import JobFilter, _job_filter
from service.store.sql import connection

# Longest a chart's two queries may take together before the page says "not drawn".
CHART_TIMEOUT_MS = 3000


class Window(StrEnum):
    """The spans the charts offer, each with a fixed number of buckets (so a bounded answer)."""

    HOUR = "hour"
    DAY = "day"

    @property
    def span(self) -> timedelta:
        return timedelta(hours=1) if self is Window.HOUR else timedelta(days=1)

    @property
    def bucket(self) -> timedelta:
        """5-minute buckets for the hour (12), hourly ones for the day (24)."""
        return timedelta(minutes=5) if self is Window.HOUR else timedelta(hours=1)


@dataclass(frozen=True)
class Bucket:
    """One bucket of one window: jobs that finished in it, and waits of jobs created in it."""

    start: datetime
    completed: int = 0
    failed: int = 0
    started: int = 0  # jobs created in the bucket that have started since
    wait_p50: float | None = None  # seconds from created_at to (first) started_at
    wait_p95: float | None = None


@dataclass(frozen=True)
class Series:
    """A window's buckets, oldest first, every bucket present (empty ones are zero)."""

    window: Window
    buckets: list[Bucket]
    timed_out: bool = False


def _origin(now: datetime, window: Window) -> datetime:
    """The first bucket's start: the window's span back from the end of the current bucket,
    on bucket boundaries (whole 5 minutes, whole hours), so buckets do not shift each reload."""
    step = window.bucket.total_seconds()
    end = datetime.fromtimestamp((now.timestamp() // step + 1) * step, tz=now.tzinfo)
    return end - window.span


async def job_chart(
    database: Database, filters: JobFilter, window: Window, now: datetime
) -> Series:
    """The chart data of `window` ending with the bucket that holds `now`, for the filter's
    shop and type (its status is ignored: the charts split by outcome themselves)."""
    origin = _origin(now, window)
    where, values = _job_filter(filters, with_status=False)
    n = len(values)
    bucket_arg, origin_arg = f"${n + 1}", f"${n + 2}"
    finished_sql = f"""
        SELECT date_bin({bucket_arg}::interval, j.finished_at, {origin_arg}) AS bucket,
               count(*) FILTER (WHERE j.status = 'completed') AS completed,
               count(*) FILTER (WHERE j.status = 'failed') AS failed
          FROM jobs AS j JOIN shops AS s ON s.id = j.shop_id
         WHERE j.status IN ('completed', 'failed') AND j.updated_at >= {origin_arg}
           AND j.finished_at >= {origin_arg} AND {where}
         GROUP BY 1"""
    waits_sql = f"""
        SELECT date_bin({bucket_arg}::interval, j.created_at, {origin_arg}) AS bucket,
               count(j.started_at) AS started,
               percentile_cont(0.5) WITHIN GROUP (
                   ORDER BY extract(epoch FROM j.started_at - j.created_at)) AS p50,
               percentile_cont(0.95) WITHIN GROUP (
                   ORDER BY extract(epoch FROM j.started_at - j.created_at)) AS p95
          FROM jobs AS j JOIN shops AS s ON s.id = j.shop_id
         WHERE j.created_at >= {origin_arg} AND {where}
         GROUP BY 1"""
    arguments = [*values, window.bucket, origin]
    try:
        async with connection(database) as raw, raw.transaction(readonly=True):
            await raw.execute(f"SET LOCAL statement_timeout = {CHART_TIMEOUT_MS}")
            finished = await raw.fetch(finished_sql, *arguments)
            waits = await raw.fetch(waits_sql, *arguments)
    except asyncpg.QueryCanceledError:
        return Series(window, _empty(origin, window), timed_out=True)
    done = {row["bucket"]: row for row in finished}
    waited = {row["bucket"]: row for row in waits}
    buckets = []
    for empty in _empty(origin, window):
        f, w = done.get(empty.start), waited.get(empty.start)
        buckets.append(
            Bucket(
                empty.start,
                completed=f["completed"] if f else 0,
                failed=f["failed"] if f else 0,
                started=w["started"] if w else 0,
                wait_p50=w["p50"] if w else None,
                wait_p95=w["p95"] if w else None,
            )
        )
    return Series(window, buckets)


def _empty(origin: datetime, window: Window) -> list[Bucket]:
    count = int(window.span / window.bucket)
    return [Bucket(origin + window.bucket * i) for i in range(count)]
