"""`flow_trigger`: tells Shopify Flow that a job of a type with a `FlowTrigger` ended.

When such a job completes (or fails for good, with `on_failure`), a `flow_trigger` job is
created for its shop: in the transaction that completes the job (jobs/worker/flow.py), so a
completed job has its trigger job exactly once, whatever crashes. That job sends
`flowTriggerReceive(handle, payload)` through the shop's Admin API client (throttling, 429s
and 5xx retried there), is retried like any job, and records the call with `ctx.step`: a run
after the answer came back does not send it again. Shopify's mutation takes no idempotency
key, so one window stays: a worker killed after Shopify ran the call and before the step was
recorded sends it again (docs/shopify-flow.md#flow-triggers).
"""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from jobs.types import JobContext, JobType, NonRetryableError

TYPE_NAME = "flow_trigger"
IDEMPOTENCY_PREFIX = "flow-trigger:"
# The trigger job of a job has an id derived from the job's own: the completion's write and
# whoever queues it afterwards agree on it without reading it back.
_NAMESPACE = uuid.UUID("0f1d5a52-4c1e-4a0e-9a53-2b0c8f6f5b29")
# Shopify refuses a trigger payload over 50 KB.
MAX_PAYLOAD_BYTES = 50_000

MUTATION = """
mutation FlowTriggerReceive($handle: String, $payload: JSON) {
  flowTriggerReceive(handle: $handle, payload: $payload) {
    userErrors { field message }
  }
}
"""


class FlowTriggerInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    handle: str = Field(min_length=1, max_length=30)
    payload: dict[str, Any]
    job_id: str = Field(max_length=64, description="the job the trigger reports on")


class FlowTriggerRefused(NonRetryableError):
    """Flow answered userErrors (an unknown handle, a payload that does not fit the trigger)."""


async def send(ctx: JobContext, data: FlowTriggerInput) -> dict[str, Any]:
    async def call() -> dict[str, Any]:
        answer = await ctx.admin.graphql(
            MUTATION, {"handle": data.handle, "payload": data.payload}, cost=10
        )
        errors = (answer.get("flowTriggerReceive") or {}).get("userErrors") or []
        if errors:
            messages = "; ".join(str(e.get("message")) for e in errors)
            raise FlowTriggerRefused(f"Flow refused trigger {data.handle}: {messages}")
        return {"handle": data.handle, "sent": True}

    result: dict[str, Any] = await ctx.step("flowTriggerReceive", call)
    return {**result, "jobId": data.job_id}


JOB_TYPE = JobType(
    name=TYPE_NAME,
    input_model=FlowTriggerInput,
    handler=send,
    max_attempts=10,
    backoff_seconds=5.0,
    non_retryable=(FlowTriggerRefused,),
)


def trigger_job_id(job_id: uuid.UUID | str) -> uuid.UUID:
    return uuid.uuid5(_NAMESPACE, f"{IDEMPOTENCY_PREFIX}{job_id}")


def idempotency_key(job_id: uuid.UUID | str) -> str:
    return f"{IDEMPOTENCY_PREFIX}{job_id}"


def trigger_input(job_type: JobType, job_id: str, status: str, result: Any) -> dict[str, Any]:
    """The `flow_trigger` job's input for a job of `job_type` that ended with `status`."""
    trigger = job_type.flow_trigger
    assert trigger is not None
    payload: dict[str, Any] = {"Job ID": job_id, "Job type": job_type.name, "Status": status}
    if isinstance(result, dict):
        payload.update({key: result[key] for key in trigger.fields if key in result})
    return {"handle": trigger.handle, "payload": payload, "job_id": job_id}


def uses_triggers(types: list[JobType]) -> bool:
    return any(t.flow_trigger is not None for t in types)
