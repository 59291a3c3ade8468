"""Steps, sleeps and events for handlers: `ctx.step`, `ctx.sleep`, `ctx.wait_for_event`.

What a handler decides once is recorded in Postgres (store.record_step, under the run's
lease) and read back by every later run of the same job: a step's result, a sleep's wake-up
time, an event wait's deadline and the event's payload. A later run (the job resumed after a
wait, retried after a failure, or re-run after a crash) passes what was recorded and goes on
from there: a handler written as steps resumes where it left off. A wait that is not over
raises `Suspend` (service/core/waits.py), which the runner turns into a suspended job.

Names are per job: `step:NAME`, `sleep:NAME`, `wait:NAME` (a wait's deadline) and
`event:NAME` (the payload received) are kept apart, so a step and a sleep may share a name.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import orjson
from databases import Database

from jobs.types import NonRetryableError
from jobs.worker.results import encode_result
from service import store
from service.core.waits import Suspend, WaitFor

MAX_NAME_LENGTH = 200


class LeaseLost(RuntimeError):
    """This run no longer holds its job (another worker took it over): nothing was recorded."""


def check_name(what: str, name: str) -> str:
    if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME_LENGTH or "\x00" in name:
        raise ValueError(f"{what} name must be a string of 1 to {MAX_NAME_LENGTH} characters")
    return name


def now() -> datetime:
    return datetime.now(UTC)


class Records:
    """One run's view of what its job recorded: read once, then kept up to date as it writes."""

    def __init__(self, database: Database, job_id: str, owner: str, result_max_bytes: int) -> None:
        self.database = database
        self.job_id = UUID(job_id)
        self.owner = owner
        self.result_max_bytes = result_max_bytes
        self._known: dict[str, Any] | None = None

    async def get(self, key: str) -> tuple[bool, Any]:
        if self._known is None:
            self._known = await store.steps_of(self.database, self.job_id)
        return (key in self._known, self._known.get(key))

    async def put(self, key: str, value: Any) -> Any:
        """Record `value` (as JSON); the value as a later run will read it."""
        encoded = encode_result(value, self.result_max_bytes).decode()
        if not await store.record_step(self.database, self.job_id, self.owner, key, encoded):
            raise LeaseLost(f"job {self.job_id} is no longer held by this run: {key} not recorded")
        if self._known is None:
            self._known = {}
        stored = orjson.loads(encoded)
        self._known.setdefault(key, stored)
        return self._known[key]


async def step(records: Records, name: str, fn: Callable[[], Any]) -> Any:
    """`fn()`'s JSON result, run once per job: a later run gets the recorded result."""
    key = "step:" + check_name("A step", name)
    found, value = await records.get(key)
    if found:
        return value
    result = fn()
    if inspect.isawaitable(result):
        result = await result
    return await records.put(key, result)


def seconds_of(value: float | timedelta) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


async def _decided_time(records: Records, key: str, decide: Callable[[], datetime]) -> datetime:
    found, value = await records.get(key)
    if found:
        return datetime.fromisoformat(str(value))
    return datetime.fromisoformat(str(await records.put(key, decide().isoformat())))


async def sleep(
    records: Records,
    name: str,
    seconds: float | timedelta | None,
    until: datetime | None,
    limit_seconds: float,
) -> None:
    """Return once the time decided by the first run has come; until then, suspend."""
    check_name("A sleep", name)
    if (seconds is None) == (until is None):
        raise ValueError("ctx.sleep takes seconds or until=, not both")
    if until is not None and until.tzinfo is None:
        raise ValueError("ctx.sleep(until=...) needs a timezone-aware datetime")

    def decide() -> datetime:
        wake = until if until is not None else now() + timedelta(seconds=seconds_of(seconds or 0))
        length = (wake - now()).total_seconds()
        if length > limit_seconds:
            raise NonRetryableError(
                f"Sleep {name!r} of {length:.0f}s is longer than the wait limit "
                f"({limit_seconds:g}s, JOB_WAIT_TIMEOUT_SECONDS or limit=)"
            )
        return wake

    wake = await _decided_time(records, "sleep:" + name, decide)
    if now() >= wake:
        return
    raise Suspend(WaitFor.SLEEP, name=name, until=wake, look_again=wake)


async def wait_for_event(records: Records, name: str, timeout_seconds: float) -> Any:
    """The payload of the first event `name` sent to the job's shop after the job was
    created; until one arrives, suspend; at the deadline, fail naming the event."""
    check_name("An event", name)
    found, payload = await records.get("event:" + name)
    if found:
        return payload
    deadline = await _decided_time(
        records, "wait:" + name, lambda: now() + timedelta(seconds=timeout_seconds)
    )
    arrived, payload = await store.event_for(records.database, records.job_id, name)
    if arrived:
        return await records.put("event:" + name, payload)
    if now() >= deadline:
        raise NonRetryableError(f"Timed out waiting for event {name!r} (deadline {deadline})")
    raise Suspend(WaitFor.EVENT, name=name, until=deadline, look_again=deadline)
