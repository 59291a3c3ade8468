"""`bulk_action`: the merchant's selection in the admin's product or order list, as a batch.

The embedded page (service/web/bulk_actions.py) creates one `bulk_action` job with the type
the merchant chose and the selected ids; its handler fans out one child of that type per id,
whose input is `{field: id}` (the type's `BulkAction`), and the job ends when they all have:
completed with {"completed": n, "failed": m, "result": ...}.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from jobs.types import JobContext, JobType

TYPE_NAME = "bulk_action"
MAX_SELECTED = 250  # as many as the admin's list selects on one page
GID_PATTERN = r"^gid://shopify/(Product|Order)/[0-9]{1,20}$"


class BulkActionInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    job_type: str = Field(min_length=1, max_length=200)
    field: str = Field(min_length=1, max_length=200)
    ids: list[str] = Field(min_length=1, max_length=MAX_SELECTED)

    def children(self) -> list[dict[str, Any]]:
        return [{self.field: gid} for gid in self.ids]


async def run(ctx: JobContext, data: BulkActionInput) -> dict[str, Any]:
    await ctx.enqueue_batch(data.job_type, data.children())
    return {"jobType": data.job_type, "selected": len(data.ids)}


JOB_TYPE = JobType(name=TYPE_NAME, input_model=BulkActionInput, handler=run, priority=5)
