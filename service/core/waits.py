"""Waiting without a slot: what a suspended run waits for, and how a run says it must wait.

A run that has to wait for something outside itself (a time, a Shopify bulk operation, one of
the shop's bulk slots, an event sent to the shop) does not hold its worker slot, its shop's
running count or its lease while it waits. It raises `Suspend`; the runner (jobs/worker/
runner.py) records the wait on the job's row, which stays `processing` with no lease, and
puts the job's queue entry back for when a worker should look again. When what it waits for
happens (or that time comes), the job runs again from the start of its handler, as after a
crash; steps it recorded (`ctx.step`) are not run again.

`Suspend` is a BaseException, like asyncio's CancelledError, so that a handler's own
`except Exception:` does not swallow a wait.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum


class WaitFor(StrEnum):
    """What a suspended job waits for (the schema's CHECK on jobs.wait_for lists the same)."""

    SLEEP = "sleep"  # ctx.sleep: a time
    BULK_OPERATION = "bulk_operation"  # a Shopify bulk operation to finish
    BULK_SLOT = "bulk_slot"  # one of the shop's bulk operation slots to free
    EVENT = "event"  # ctx.wait_for_event: JobsClient.send_event(shop, name, payload)


class Suspend(BaseException):
    """Raised inside a run to end it without an outcome: the job waits, then runs again.

    `name`: the event's name, the bulk operation's id, the slot's kind, the sleep's name.
    `until`: when the wait ends at the latest, as readers are told (None: until it happens).
    `look_again`: when a worker should run the job again if nothing wakes it before.
    """

    def __init__(
        self, wait_for: WaitFor, *, name: str, until: datetime | None, look_again: datetime
    ) -> None:
        super().__init__(f"waiting for {wait_for.value} {name!r}")
        self.wait_for = wait_for
        self.name = name
        self.until = until
        self.look_again = look_again
