"""`product_summary`: an example of a real job that reads Shopify. Copy it for your own.

Input: a product GID. The job reads the product and then all of its variants, one page of
Admin GraphQL at a time, reporting progress after each page, and returns a summary (variant
count, stock, price range) that the storefront reads from /proxy/status. What to notice:

- Admin API calls go through `ctx.admin`, which waits for the shop's cost bucket, retries
  throttling, 429s and 5xx itself, and turns auth failures into non-retryable errors;
- it passes each query's cost (`1 + 2 + page size` and so on), so even its first call
  waits for exactly as many points as it needs;
- a product that does not exist raises a NonRetryableError: retrying cannot create it.

Any storefront visitor can start it (`proxy=True`), and it reads with the merchant's token,
which sees everything and spends the shop's Admin API budget. So a storefront request is
bounded: its `page_size` is at most STOREFRONT_MAX_PAGE_SIZE (a first call costs at most 54
points, where 250 would cost 254), and a shop's storefront may start at most
STOREFRONT_JOBS_PER_MINUTE of them a minute (the app, the merchant and webhooks are not
bounded: they are trusted). And it answers only for products the storefront shows (ACTIVE
and published on the Online Store, i.e. with an `onlineStoreUrl`); a draft, archived or
unpublished product is "not found", exactly like a missing one. Stock counts are the
merchant's business: they are in the result only when the type is built with
`show_inventory=True` (`PRODUCT_SUMMARY_SHOW_INVENTORY`).

It also runs for the `products/update` webhook (see `jobs/registry.py`).
"""

from __future__ import annotations

import functools
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from jobs.types import BulkAction, JobContext, JobType, NonRetryableError

PRODUCT_GID = r"^gid://shopify/Product/[0-9]{1,20}$"

FIRST_PAGE = """
query ProductSummary($id: ID!, $first: Int!) {
  product(id: $id) {
    id title handle status onlineStoreUrl vendor totalInventory
    variantsCount { count }
    variants(first: $first) {
      nodes { id price inventoryQuantity }
      pageInfo { hasNextPage endCursor }
    }
  }
}
"""

NEXT_PAGE = """
query ProductSummaryVariants($id: ID!, $first: Int!, $after: String!) {
  product(id: $id) {
    variants(first: $first, after: $after) {
      nodes { id price inventoryQuantity }
      pageInfo { hasNextPage endCursor }
    }
  }
}
"""


class ProductNotFound(NonRetryableError):
    """The product does not exist (or the app may not see it)."""


class ProductSummaryInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    product_id: str = Field(pattern=PRODUCT_GID, description="gid://shopify/Product/...")
    page_size: int = Field(default=50, ge=1, le=250, description="variants per Admin API call")


# What one storefront request may cost (jobs/types.py, `proxy_input_model` and
# `proxy_limit_per_minute`); docs/app-proxy.md#what-a-storefront-request-may-cost.
STOREFRONT_MAX_PAGE_SIZE = 50
STOREFRONT_JOBS_PER_MINUTE = 30


class StorefrontProductSummaryInput(ProductSummaryInput):
    """A storefront request's input: the same fields, with a page small enough that an
    anonymous visitor cannot make one call reserve a quarter of the shop's bucket."""

    page_size: int = Field(
        default=50, ge=1, le=STOREFRONT_MAX_PAGE_SIZE, description="variants per Admin API call"
    )


def _cost(page_size: int, first: bool) -> int:
    """Shopify's requested cost: product 1 (+ variantsCount 1) + connection 2 + one per item."""
    return 1 + (1 if first else 0) + 2 + page_size


def _on_storefront(product: dict[str, Any]) -> bool:
    return product.get("status") == "ACTIVE" and bool(product.get("onlineStoreUrl"))


async def product_summary(
    ctx: JobContext, data: ProductSummaryInput, *, show_inventory: bool = False
) -> dict[str, Any]:
    variables: dict[str, Any] = {"id": data.product_id, "first": data.page_size}
    answer = await ctx.admin.graphql(FIRST_PAGE, variables, cost=_cost(data.page_size, True))
    product = answer.get("product")
    if product is None or not _on_storefront(product):
        raise ProductNotFound(f"Product not found: {data.product_id}")
    expected = max(1, int((product.get("variantsCount") or {}).get("count") or 1))
    variants: list[dict[str, Any]] = []
    pages = 0
    connection = product["variants"]
    while True:
        pages += 1
        variants += connection["nodes"]
        done = not connection["pageInfo"]["hasNextPage"]
        percent = 100 if done else min(99, len(variants) * 100 // expected)
        await ctx.report_progress(percent, f"{len(variants)} of {expected} variants read")
        if done:
            break
        variables["after"] = connection["pageInfo"]["endCursor"]
        page = await ctx.admin.graphql(NEXT_PAGE, variables, cost=_cost(data.page_size, False))
        if page.get("product") is None:
            raise ProductNotFound(f"Product disappeared while being read: {data.product_id}")
        connection = page["product"]["variants"]

    prices = [Decimal(v["price"]) for v in variants]
    summary: dict[str, Any] = {
        "productId": product["id"],
        "title": product["title"],
        "handle": product["handle"],
        "status": product["status"],
        "vendor": product["vendor"],
        "variantCount": len(variants),
        "minPrice": str(min(prices)) if prices else None,
        "maxPrice": str(max(prices)) if prices else None,
        "pagesRead": pages,
    }
    if show_inventory:
        stock = [v.get("inventoryQuantity") or 0 for v in variants]
        summary["totalInventory"] = sum(stock)
        summary["outOfStockVariants"] = sum(1 for quantity in stock if quantity <= 0)
    return summary


def input_from_webhook(payload: dict[str, Any]) -> dict[str, Any]:
    """products/update carries the product's GID as `admin_graphql_api_id`."""
    return {"product_id": payload.get("admin_graphql_api_id")}


def job_type(*, show_inventory: bool) -> JobType:
    """The type, with stock counts in its results or not (PRODUCT_SUMMARY_SHOW_INVENTORY)."""
    return JobType(
        name="product_summary",
        input_model=ProductSummaryInput,
        handler=functools.partial(product_summary, show_inventory=show_inventory),
        non_retryable=(ProductNotFound,),
        proxy=True,  # the theme's "job button" block starts it (extensions/shopjobs-theme)
        proxy_input_model=StorefrontProductSummaryInput,
        proxy_limit_per_minute=STOREFRONT_JOBS_PER_MINUTE,
        admin=True,
        # The admin's product list: "Summarize" the selected products, one child job each.
        bulk_action=BulkAction(field="product_id", resources=("product",)),
    )
