"""`inventory_report`: every product and variant of a shop through one Shopify bulk query.

Input: `{}`. Started by the app, the merchant in the embedded app, or a shell (never by the
storefront: `proxy=False`), it
reads the whole catalogue with `ctx.admin.bulk_query`, which costs about ten points where
paging 90,000 variants would cost some 100,000, and streams the result: memory stays flat
whatever the catalogue's size, since one product and its variants are held at a time.
The result (see docs/bulk-operations.md) says what a merchant looks for: how many products,
variants and units, which variants are out of stock, and the same per vendor.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from jobs.types import JobContext, JobType

QUERY = """
{
  products {
    edges {
      node {
        id
        title
        vendor
        status
        variants {
          edges { node { id sku title inventoryQuantity } }
        }
      }
    }
  }
}
"""
OUT_OF_STOCK_LISTED = 20  # the first few out-of-stock variants, named in the result


class InventoryReportInput(BaseModel):
    model_config = ConfigDict(extra="forbid")


async def inventory_report(ctx: JobContext, data: InventoryReportInput) -> dict[str, Any]:
    rows = await ctx.admin.bulk_query(QUERY)
    products = variants = total = out_count = 0
    out_of_stock: list[dict[str, Any]] = []
    vendors: dict[str, dict[str, int]] = {}
    async for product, children in rows.grouped():
        products += 1
        vendor = vendors.setdefault(
            product.get("vendor") or "(none)",
            {"products": 0, "variants": 0, "totalInventory": 0, "outOfStock": 0},
        )
        vendor["products"] += 1
        for variant in children:
            quantity = variant.get("inventoryQuantity") or 0
            variants += 1
            total += quantity
            vendor["variants"] += 1
            vendor["totalInventory"] += quantity
            if quantity <= 0:
                out_count += 1
                vendor["outOfStock"] += 1
                if len(out_of_stock) < OUT_OF_STOCK_LISTED:
                    out_of_stock.append(
                        {
                            "variantId": variant["id"],
                            "sku": variant.get("sku"),
                            "product": product.get("title"),
                            "variant": variant.get("title"),
                        }
                    )
    await ctx.report_progress(100, f"{products} products, {variants} variants")
    return {
        "products": products,
        "variants": variants,
        "totalInventory": total,
        "outOfStock": {"count": out_count, "first": out_of_stock},
        "byVendor": dict(sorted(vendors.items())),
        "bulkOperationId": rows.operation_id,
    }


JOB_TYPE = JobType(
    name="inventory_report",
    input_model=InventoryReportInput,
    handler=inventory_report,
    # Shopify may take many minutes over a large catalogue; the lease is renewed meanwhile.
    timeout_seconds=3600,
    proxy=False,
    admin=True,  # the merchant starts it from the embedded app's page, and watches it there
)
