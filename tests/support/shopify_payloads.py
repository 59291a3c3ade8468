"""Webhook payloads as large as Shopify sends them, built field by field as it sends them.

`products/update` carries the whole product: every variant with its fields, the options with
all their values, and the variants' GIDs again in `variant_gids`. A product may have up to
2,048 variants (three options of up to 2,048 combinations), which makes the largest genuine
`products/update` a few MiB: the size WEBHOOK_MAX_BODY_BYTES must take with its default.
"""

from __future__ import annotations

from typing import Any

import orjson

MAX_VARIANTS = 2048
# 16 x 16 x 8 = 2,048 combinations of three options.
SIZES = [f"Size {n}" for n in range(16)]
COLOURS = [f"Colour {n}" for n in range(16)]
MATERIALS = [f"Material {n}" for n in range(8)]
PRODUCT_ID = 8_123_456_789_012
STAMP = "2025-06-02T10:21:33-04:00"


def _variant(product_id: int, index: int) -> dict[str, Any]:
    """One variant as the REST webhook payload lists it (its ~30 fields)."""
    variant_id = 45_000_000_000_000 + index
    size, colour, material = (
        SIZES[index // 128],
        COLOURS[index // 8 % 16],
        MATERIALS[index % 8],
    )
    return {
        "admin_graphql_api_id": f"gid://shopify/ProductVariant/{variant_id}",
        "barcode": f"{4_006_381_333_931 + index}",
        "compare_at_price": "49.00",
        "created_at": STAMP,
        "fulfillment_service": "manual",
        "grams": 450,
        "id": variant_id,
        "image_id": None,
        "inventory_item_id": 47_000_000_000_000 + index,
        "inventory_management": "shopify",
        "inventory_policy": "deny",
        "inventory_quantity": index % 37,
        "old_inventory_quantity": index % 37,
        "option1": size,
        "option2": colour,
        "option3": material,
        "position": index + 1,
        "price": f"{29 + index % 20}.00",
        "product_id": product_id,
        "requires_shipping": True,
        "sku": f"TEE-{index // 128:02d}-{index // 8 % 16:02d}-{index % 8:02d}",
        "taxable": True,
        "title": f"{size} / {colour} / {material}",
        "updated_at": STAMP,
        "weight": 0.45,
        "weight_unit": "kg",
        "tax_code": "",
        "presentment_prices": [
            {
                "price": {"amount": f"{29 + index % 20}.00", "currency_code": "USD"},
                "compare_at_price": {"amount": "49.00", "currency_code": "USD"},
            }
        ],
        "metafields": [],
        "requires_components": False,
    }


def product_update(shop: str, variants: int = MAX_VARIANTS) -> dict[str, Any]:
    """A `products/update` payload for a product with `variants` variants."""
    product_id = PRODUCT_ID
    options = [("Size", SIZES), ("Colour", COLOURS), ("Material", MATERIALS)]
    body = {
        "admin_graphql_api_id": f"gid://shopify/Product/{product_id}",
        "body_html": "<p>Organic cotton tee, cut and sewn to order.</p>" * 20,
        "created_at": STAMP,
        "handle": "the-everything-tee",
        "id": product_id,
        "product_type": "Shirts",
        "published_at": STAMP,
        "template_suffix": None,
        "title": "The everything tee",
        "updated_at": STAMP,
        "vendor": shop.removesuffix(".myshopify.com"),
        "status": "active",
        "published_scope": "global",
        "tags": "cotton, made-to-order, tee",
        "variants": [_variant(product_id, index) for index in range(variants)],
        "options": [
            {
                "name": name,
                "id": 10_900_000_000_000 + position,
                "product_id": product_id,
                "position": position,
                "values": values,
            }
            for position, (name, values) in enumerate(options, start=1)
        ],
        "images": [],
        "image": None,
        "media": [],
        "variant_gids": [
            {
                "admin_graphql_api_id": f"gid://shopify/ProductVariant/{45_000_000_000_000 + i}",
                "updated_at": "2025-06-02T14:21:33.000Z",
            }
            for i in range(variants)
        ],
        "has_variants_that_requires_components": False,
        "category": None,
    }
    return body


def product_update_body(shop: str, variants: int = MAX_VARIANTS) -> bytes:
    """The payload's bytes as Shopify sends them (compact JSON, UTF-8 as is)."""
    return orjson.dumps(product_update(shop, variants))
