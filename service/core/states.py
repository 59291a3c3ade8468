"""Every vocabulary of a job's life, named once: statuses, claim results, queue finishes, outcomes.

The schema's CHECK on `jobs.status` lists the same values as `JobStatus` (a test compares them).
`JobStatus` itself is defined in jobs/types.py, where app authors import it from (`from jobs
import JobStatus`), and re-exported here with the service's other vocabularies.
`StrEnum` members are `str`s, so they go into SQL parameters, JSON answers and metric labels as
they are.
"""

from __future__ import annotations

from enum import StrEnum

from jobs.types import JobStatus as JobStatus

# Completed and failed jobs never run again, never change status, and are what retention prunes.
FINAL_STATUSES: frozenset[JobStatus] = frozenset({JobStatus.COMPLETED, JobStatus.FAILED})
# A job in one of these may still run: the status endpoint keeps polling, the reconciler looks.
ACTIVE_STATUSES: frozenset[JobStatus] = frozenset(set(JobStatus) - FINAL_STATUSES)


class ClaimResult(StrEnum):
    """What the claim in Postgres decided for one taken queue entry."""

    CLAIMED = "claimed"  # this worker holds the lease: run it
    SKIP = "skip"  # final or gone: nothing to do
    HELD = "held"  # a live worker runs it: look again when that worker's lease would expire
    BUSY = "busy"  # runnable, but its row was locked by a writer (a wake committing): soon


class QueueFinish(StrEnum):
    """What happens to a job's Redis queue entry once a run (or a non-run) is over."""

    DONE = "done"  # finished for good: drop it from the queue
    LATER = "later"  # run it again at a given time (a retry, or a deferral)
    GIVE_BACK = "give_back"  # not finished (shutdown): due again now, for any worker


class RunOutcome(StrEnum):
    """How one run ended, as metrics and logs count it."""

    COMPLETED = "completed"
    FAILED = "failed"
    RETRIED = "retried"
    ABANDONED = "abandoned"  # failed at its claim without running: it kept killing its workers
    LEASE_LOST = "lease_lost"  # another worker took the job over; this run's result is dropped
    INTERRUPTED = "interrupted"  # shutdown cancelled it: given back to the queue, not counted
    WAITING = "waiting"  # a batch parent's handler returned: it ends when its children have
    SUSPENDED = "suspended"  # it waits (a sleep, a bulk operation, an event): it runs again


# The message a cancelled job ends failed with (dashboard, admin API).
CANCELLED_MESSAGE = "Cancelled"
# The message every unfinished job of a shop that uninstalled the app ends failed with.
UNINSTALLED_MESSAGE = "Shop uninstalled"
# The start of a job's progress_message while a type's or shop's rate limit holds it back
# (jobs/worker/runner.py writes it, the claim clears it): "Rate limited until <ISO time>".
RATE_LIMITED_PREFIX = "Rate limited until "
# What the storefront and the embedded app see of a failure whose message is not public
# (an unexpected exception: jobs.error_public is false); the dashboard shows the real text.
GENERIC_FAILURE_MESSAGE = "The job failed"
