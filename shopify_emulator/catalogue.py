"""The seeded product catalogue every emulated shop serves.

Deterministic: the same seed gives the same products, variants, prices and stock on every
run, so tests can assert exact summaries. The first product always has `max_variants`
variants, so paging is exercised whatever the seed. Every seventh product is a DRAFT and
every ninth is not published to the Online Store: neither is on the storefront, so the first
six of any catalogue are.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

PRODUCT_ID_BASE = 8_000_000_000
VARIANT_ID_BASE = 40_000_000_000
CREATED_FROM = datetime(2024, 1, 1, tzinfo=UTC)

ADJECTIVES = ("Classic", "Organic", "Vintage", "Everyday", "Limited", "Handmade", "Travel")
NOUNS = ("Hoodie", "Mug", "Backpack", "Candle", "Notebook", "Scarf", "Sneaker", "Tea")
VENDORS = ("Acme", "Northwind", "Blue Harbor", "Kestrel & Co")
SIZES = ("XS", "S", "M", "L", "XL", "XXL")
COLOURS = ("Black", "White", "Red", "Green", "Blue", "Sand", "Plum", "Teal", "Grey", "Gold")


@dataclass(frozen=True)
class Variant:
    id: int
    title: str
    sku: str
    price: Decimal
    inventory_quantity: int
    position: int

    @property
    def gid(self) -> str:
        return f"gid://shopify/ProductVariant/{self.id}"


@dataclass(frozen=True)
class Product:
    id: int
    title: str
    handle: str
    vendor: str
    product_type: str
    status: str
    published: bool  # on the Online Store sales channel
    created_at: datetime
    variants: tuple[Variant, ...]
    # Shopify keeps a product's tags unique (case-insensitively) and returns them sorted.
    tags: tuple[str, ...] = ()
    updated_at: datetime | None = None  # None: never changed since it was created

    @property
    def gid(self) -> str:
        return f"gid://shopify/Product/{self.id}"

    @property
    def on_storefront(self) -> bool:
        """What a storefront visitor can see: an ACTIVE product that is published."""
        return self.status == "ACTIVE" and self.published

    @property
    def total_inventory(self) -> int:
        return sum(v.inventory_quantity for v in self.variants)


def _variant_title(index: int) -> str:
    size = SIZES[index % len(SIZES)]
    colour = COLOURS[(index // len(SIZES)) % len(COLOURS)]
    batch = index // (len(SIZES) * len(COLOURS))
    return f"{size} / {colour}" + (f" / {batch + 1}" if batch else "")


def build(products: int, max_variants: int, seed: int) -> dict[int, Product]:
    rng = random.Random(seed)
    catalogue: dict[int, Product] = {}
    for number in range(1, products + 1):
        product_id = PRODUCT_ID_BASE + number
        title = f"{rng.choice(ADJECTIVES)} {rng.choice(NOUNS)} {number}"
        count = max_variants if number == 1 else rng.randint(1, max_variants)
        variants = tuple(
            Variant(
                id=VARIANT_ID_BASE + number * 1000 + position,
                title=_variant_title(position - 1),
                sku=f"SKU-{number:03d}-{position:03d}",
                price=Decimal(rng.randint(5, 199)) + Decimal("0.99"),
                inventory_quantity=rng.randint(0, 40) if rng.random() > 0.15 else 0,
                position=position,
            )
            for position in range(1, count + 1)
        )
        catalogue[product_id] = Product(
            id=product_id,
            title=title,
            handle=title.lower().replace(" ", "-"),
            vendor=rng.choice(VENDORS),
            product_type=title.split()[1],
            status="ACTIVE" if number % 7 else "DRAFT",
            published=bool(number % 9),
            created_at=CREATED_FROM + timedelta(days=number),
            variants=variants,
            tags=(title.split()[1].lower(),),  # its kind ("mug"): no draw, the seed unchanged
        )
    return catalogue
