"""`catalogue_audit`: an example of splitting a shop-wide task into a batch. Copy it for yours.

The parent walks the shop's products one Admin API page at a time, asking only for each
page's cursor (cheap), and hands every page to a child job (`catalogue_audit_page`) as one
batch: the children run in parallel on every worker, each retried on its own, and the parent
becomes final when the last of them is, with {"completed": pages, "failed": pages, "result":
{"pages": n}}; one status read of it shows how many pages are done. Each child reads its page
in full and returns what it found (products by status, those without a vendor or out of
stock).

What to notice:
- the parent only splits: it creates children a page at a time (`ctx.enqueue_batch` may be
  called again and again; every call adds to the same batch), and it can be re-run safely:
  the n-th child has the same idempotency key on every run of its parent;
- a child's input is the page's `after` cursor, so a child re-reads exactly its page;
- `on_complete` could name a job type to run once when every page is done (a report, say).

App-internal (`proxy=False`): the app starts it, `await jobs.enqueue("catalogue_audit",
shop=..., input={})` or `python -m service jobs enqueue catalogue_audit --shop DOMAIN`.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from jobs.types import JobContext, JobType

CURSORS = """
query CatalogueAuditPages($first: Int!, $after: String) {
  products(first: $first, after: $after) { pageInfo { hasNextPage endCursor } }
}
"""
PAGE = """
query CatalogueAuditPage($first: Int!, $after: String) {
  products(first: $first, after: $after) {
    nodes { id status vendor totalInventory }
  }
}
"""


class AuditInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    page_size: int = Field(default=100, ge=1, le=250)


class AuditPageInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    after: str | None = Field(default=None, max_length=1_000)
    first: int = Field(ge=1, le=250)


async def audit(ctx: JobContext, data: AuditInput) -> dict[str, int]:
    after: str | None = None
    pages = 0
    while True:
        answer = await ctx.admin.graphql(CURSORS, {"first": data.page_size, "after": after}, cost=2)
        page_info = answer["products"]["pageInfo"]
        # The page that starts after `after`: its child reads it (and only it) again in full.
        await ctx.enqueue_batch("catalogue_audit_page", [{"after": after, "first": data.page_size}])
        pages += 1
        await ctx.report_progress(0, f"{pages} page(s) handed out")
        if not page_info["hasNextPage"]:
            return {"pages": pages}
        after = page_info["endCursor"]


async def audit_page(ctx: JobContext, data: AuditPageInput) -> dict[str, Any]:
    answer = await ctx.admin.graphql(
        PAGE, {"first": data.first, "after": data.after}, cost=2 + data.first
    )
    products = answer["products"]["nodes"]
    return {
        "products": len(products),
        "byStatus": dict(Counter(p["status"] for p in products)),
        "withoutVendor": [p["id"] for p in products if not p["vendor"]],
        "outOfStock": [p["id"] for p in products if (p["totalInventory"] or 0) <= 0],
    }


JOB_TYPE = JobType(name="catalogue_audit", input_model=AuditInput, handler=audit, proxy=False)
PAGE_JOB_TYPE = JobType(
    name="catalogue_audit_page", input_model=AuditPageInput, handler=audit_page, proxy=False
)
