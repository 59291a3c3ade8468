"""Batches: a parent job's children, written in bulk, and the parent's end counted from them.

A parent whose handler started a batch does not complete when its handler returns: it stays
`processing` with no lease (no worker holds it, no claim or reconciler takes it: sql.CLAIMABLE
needs an expired lease, NULL is none) and its `batch` column set, until every child is final.
Then one statement makes it final, counting its children by status (never increments: a
count read from the rows cannot be off by a crash, a retry or a second look), and, in the same
transaction, writes its follow-up job under the idempotency key `batch:{parent}`. Whoever looks
first (the worker that finished the last child, or the reconciler's tick) does it; the
status guard makes every other look a no-op.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID, uuid4

from databases import Database

from jobs.types import CompletionWrite
from service.core.states import JobStatus
from service.store.sql import HELD_BY_OWNER, connection, from_json, to_json

# A child's idempotency key: a parent's handler that runs again (a crash, a retry) and asks for
# the same children again gets the ones it already has, not twice as many.
CHILD_KEY = "batch:{parent}:{index}"
FOLLOW_UP_KEY = "batch:{parent}"


async def start_batch(
    database: Database, parent_id: UUID, owner: str, spec: dict[str, Any]
) -> bool:
    """Mark a running job as a batch parent (`spec`: its follow-up type and failure rule);
    False if this worker no longer holds it. Written before any child, so a parent with
    children always knows it is one."""
    async with connection(database) as raw:
        done = await raw.fetchval(
            f"UPDATE jobs SET batch = $3::jsonb, updated_at = now() WHERE {HELD_BY_OWNER} "
            "RETURNING true",
            parent_id,
            owner,
            to_json(spec),
        )
    return bool(done)


async def insert_children(
    database: Database,
    parent_id: UUID,
    shop_id: int,
    job_type: str,
    inputs: list[str],
    first_index: int,
) -> tuple[list[UUID], list[UUID]] | None:
    """Write children (inputs as JSON text) in one statement: (the ids of those inserted, the
    ids of those an earlier run of the parent wrote already and are still `pending`), or None
    if the parent is no longer `processing` (cancelled: its children must not outlive the
    cancel, which cancelled those it found). A child that exists already is not written again;
    it is returned if still pending because that run may have died between writing it and
    queuing it (queuing it twice is harmless: arq's `_job_id`, then the claim, dedup it). The
    parent's row is locked FOR SHARE, so a cancel (FOR UPDATE, control.cancel_job) comes
    wholly before these children or after them."""
    ids = [uuid4() for _ in inputs]
    keys = [CHILD_KEY.format(parent=parent_id, index=first_index + i) for i in range(len(inputs))]
    async with connection(database) as raw:
        row = await raw.fetchrow(
            """
            WITH parent AS (
                SELECT id FROM jobs WHERE id = $3 AND status = 'processing' FOR SHARE
            ), inserted AS (
                INSERT INTO jobs (id, shop_id, type, input, status, idempotency_key, source,
                                  parent_id)
                SELECT v.id, $1, $2, v.input::jsonb, 'pending', v.key, 'job', $3
                  FROM unnest($4::uuid[], $5::text[], $6::text[]) AS v(id, input, key)
                 WHERE EXISTS (SELECT 1 FROM parent)
                ON CONFLICT ON CONSTRAINT jobs_idempotency DO NOTHING
                RETURNING id
            ), earlier AS (  -- the statement's snapshot: rows from before it, not `inserted`
                SELECT id FROM jobs
                 WHERE shop_id = $1 AND idempotency_key = ANY($6::text[])
                   AND parent_id = $3 AND status = 'pending' AND EXISTS (SELECT 1 FROM parent)
                   -- only when a key was taken already: a first run pays no lookup
                   AND (SELECT count(*) FROM inserted) < cardinality($6::text[])
            )
            SELECT EXISTS (SELECT 1 FROM parent) AS running,
                   ARRAY(SELECT id FROM inserted) AS ids,
                   ARRAY(SELECT id FROM earlier) AS pending
            """,
            shop_id,
            job_type,
            parent_id,
            ids,
            inputs,
            keys,
        )
    assert row is not None  # a SELECT without FROM answers one row
    return (list(row["ids"]), list(row["pending"])) if row["running"] else None


_AWAIT = f"""
    UPDATE jobs SET result = $3::jsonb, lease_owner = NULL, lease_expires_at = NULL,
           progress_message = 'waiting for its batch', updated_at = now()
     WHERE {HELD_BY_OWNER} RETURNING true
"""


async def await_children(
    database: Database,
    parent_id: UUID,
    owner: str,
    result_json: str,
    also: Sequence[CompletionWrite] = (),
) -> bool:
    """The parent's handler returned: keep its result, give up its lease, wait for children.
    False if this worker no longer holds it (cancelled, or taken over). `also` (its
    on_completion writes) commits with this: the handler's part of the job is done."""
    async with connection(database) as raw, raw.transaction():
        done = await raw.fetchval(_AWAIT, parent_id, owner, result_json)
        if done:
            for write in also:
                await write(raw)
    return bool(done)


@dataclass(frozen=True)
class FollowUp:
    """A follow-up job written when its batch ended, to be queued (job id, type, shop)."""

    id: UUID
    type: str
    shop: str


# Parents waiting with no unfinished child: made final from their children's counts, their
# follow-ups written (once: the parent's status guard and the follow-up's idempotency key).
_FINISH = """
WITH ready AS (
    SELECT p.id FROM jobs AS p
     WHERE p.batch IS NOT NULL AND p.status = 'processing' AND p.lease_owner IS NULL
       AND ($1::uuid[] IS NULL OR p.id = ANY($1::uuid[]))
       AND NOT EXISTS (SELECT 1 FROM jobs AS c
                        WHERE c.parent_id = p.id
                          AND c.status IN ('pending', 'retrying', 'processing'))
     LIMIT 500
     FOR UPDATE OF p SKIP LOCKED
), counts AS (
    SELECT r.id,
           count(c.id) FILTER (WHERE c.status = 'completed') AS completed,
           count(c.id) FILTER (WHERE c.status = 'failed') AS failed
      FROM ready AS r LEFT JOIN jobs AS c ON c.parent_id = r.id
     GROUP BY r.id
), finished AS (
    UPDATE jobs AS p
       SET status = CASE WHEN (p.batch ->> 'fail_on_child_failure')::boolean AND counts.failed > 0
                         THEN 'failed' ELSE 'completed' END,
           error_message = CASE WHEN (p.batch ->> 'fail_on_child_failure')::boolean
                                     AND counts.failed > 0
                                THEN counts.failed || ' of ' || (counts.completed + counts.failed)
                                     || ' children failed' END,
           error_public = (p.batch ->> 'fail_on_child_failure')::boolean AND counts.failed > 0,
           result = jsonb_build_object('completed', counts.completed, 'failed', counts.failed,
                                       'result', p.result),
           progress = 100, progress_message = NULL, finished_at = now(), updated_at = now()
      FROM counts
     WHERE p.id = counts.id
    RETURNING p.id, p.shop_id, p.batch ->> 'on_complete' AS on_complete,
              counts.completed, counts.failed
), follow_ups AS (
    INSERT INTO jobs (id, shop_id, type, input, status, idempotency_key, source)
    SELECT gen_random_uuid(), f.shop_id, f.on_complete,
           jsonb_build_object('parent_id', f.id, 'completed', f.completed, 'failed', f.failed),
           'pending', 'batch:' || f.id, 'job'
      FROM finished AS f WHERE f.on_complete IS NOT NULL
    ON CONFLICT ON CONSTRAINT jobs_idempotency DO NOTHING
    RETURNING id, type, shop_id
)
SELECT (SELECT count(*) FROM finished) AS finished,
       (SELECT coalesce(jsonb_agg(jsonb_build_object('id', u.id, 'type', u.type,
                                                     'shop', s.domain)), '[]'::jsonb)
          FROM follow_ups AS u JOIN shops AS s ON s.id = u.shop_id) AS follow_ups
"""


async def finish_batches(
    database: Database, parent_ids: list[UUID] | None = None
) -> tuple[int, list[FollowUp]]:
    """Make final every waiting parent (of `parent_ids`, or any) whose children are all final:
    (how many, the follow-up jobs written for them, to queue)."""
    async with connection(database) as raw:
        row = await raw.fetchrow(_FINISH, parent_ids)
    assert row is not None  # its last SELECT aggregates: one row, always
    follow_ups = [
        FollowUp(UUID(item["id"]), item["type"], item["shop"])
        for item in from_json(row["follow_ups"])
    ]
    return row["finished"], follow_ups


async def batch_counts_many(
    database: Database, parent_ids: list[UUID]
) -> dict[UUID, dict[str, int]]:
    """`batch_counts` of several parents, in one query (the lists' batch parents)."""
    if not parent_ids:
        return {}
    async with connection(database) as raw:
        rows = await raw.fetch(
            """SELECT parent_id, status, count(*) AS n FROM jobs
                WHERE parent_id = ANY($1::uuid[]) GROUP BY parent_id, status""",
            parent_ids,
        )
    counts = {parent: {status.value: 0 for status in JobStatus} for parent in parent_ids}
    for row in rows:
        counts[row["parent_id"]][row["status"]] = row["n"]
    for parent in parent_ids:
        counts[parent]["total"] = sum(n for status, n in counts[parent].items())
    return counts


async def batch_counts(database: Database, parent_id: UUID) -> dict[str, int]:
    """A parent's children by status (every status present, zeros included) and `total`:
    one index scan (jobs_parent_status_idx)."""
    async with connection(database) as raw:
        rows = await raw.fetch(
            "SELECT status, count(*) AS n FROM jobs WHERE parent_id = $1 GROUP BY status",
            parent_id,
        )
    counts = {status.value: 0 for status in JobStatus}
    counts.update({row["status"]: row["n"] for row in rows})
    counts["total"] = sum(row["n"] for row in rows)
    return counts
