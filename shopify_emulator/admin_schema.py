"""The slice of Shopify's Admin GraphQL schema the emulator serves, and its resolvers.

Enough for the example jobs and for apps copying them: `shop`, `product(id:)` with paged
`variants` and `tags`, paged `products`, the `productUpdate`, `tagsAdd` and `tagsRemove`
mutations (a change is reported to `on_change`: the emulator then sends `products/update`
as Shopify does, shopify_emulator/admin_api.py), and the bulk operation fields
(resolved in shopify_emulator/bulk.py). Connections follow Shopify's rules: one of `first` or
`last` is required, at most 250 items a page, opaque cursors.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import zlib
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from graphql import GraphQLError, GraphQLSchema, build_schema

from shopify_emulator.catalogue import Product, Variant

MAX_PAGE_SIZE = 250

SDL = """
scalar Money
scalar DateTime
scalar JSON

type FlowTriggerReceivePayload { userErrors: [UserError!]! }

type Query {
  shop: Shop!
  product(id: ID!): Product
  products(
    first: Int, after: String, last: Int, before: String, query: String
  ): ProductConnection!
  node(id: ID!): Node
  currentBulkOperation(type: BulkOperationType = QUERY): BulkOperation
}

type Mutation {
  productUpdate(product: ProductUpdateInput!): ProductUpdatePayload
  flowTriggerReceive(handle: String, payload: JSON, body: String): FlowTriggerReceivePayload
  tagsAdd(id: ID!, tags: [String!]!): TagsAddPayload
  tagsRemove(id: ID!, tags: [String!]!): TagsRemovePayload
  bulkOperationRunQuery(query: String!, groupObjects: Boolean): BulkOperationRunQueryPayload
  bulkOperationRunMutation(
    mutation: String!, stagedUploadPath: String!, groupObjects: Boolean, clientIdentifier: String
  ): BulkOperationRunMutationPayload
  bulkOperationCancel(id: ID!): BulkOperationCancelPayload
  stagedUploadsCreate(input: [StagedUploadInput!]!): StagedUploadsCreatePayload
}

interface Node { id: ID! }

enum BulkOperationType { QUERY MUTATION }
enum BulkOperationStatus { CREATED RUNNING COMPLETED FAILED CANCELING CANCELED EXPIRED }
enum BulkOperationErrorCode { ACCESS_DENIED INTERNAL_SERVER_ERROR TIMEOUT }
enum BulkOperationUserErrorCode { INVALID LIMIT_REACHED OPERATION_IN_PROGRESS }
scalar UnsignedInt64
scalar URL

type BulkOperation implements Node {
  id: ID!
  type: BulkOperationType!
  status: BulkOperationStatus!
  errorCode: BulkOperationErrorCode
  createdAt: DateTime!
  completedAt: DateTime
  objectCount: UnsignedInt64!
  rootObjectCount: UnsignedInt64!
  fileSize: UnsignedInt64
  url: URL
  partialDataUrl: URL
  query: String!
}

type BulkOperationUserError {
  code: BulkOperationUserErrorCode
  field: [String!]
  message: String!
}

type UserError {
  field: [String!]
  message: String!
}

type BulkOperationRunQueryPayload {
  bulkOperation: BulkOperation
  userErrors: [BulkOperationUserError!]!
}
type BulkOperationRunMutationPayload {
  bulkOperation: BulkOperation
  userErrors: [BulkOperationUserError!]!
}
type BulkOperationCancelPayload {
  bulkOperation: BulkOperation
  userErrors: [UserError!]!
}

enum StagedUploadTargetGenerateUploadResource { BULK_MUTATION_VARIABLES }
enum StagedUploadHttpMethodType { POST PUT }
input StagedUploadInput {
  resource: StagedUploadTargetGenerateUploadResource!
  filename: String!
  mimeType: String!
  httpMethod: StagedUploadHttpMethodType
  fileSize: UnsignedInt64
}
type StagedUploadParameter { name: String! value: String! }
type StagedMediaUploadTarget {
  url: URL
  resourceUrl: URL
  parameters: [StagedUploadParameter!]!
}
type StagedUploadsCreatePayload {
  stagedTargets: [StagedMediaUploadTarget!]
  userErrors: [UserError!]!
}

input ProductUpdateInput {
  id: ID!
  title: String
  vendor: String
  tags: [String!]
}
type TagsAddPayload {
  node: Node
  userErrors: [UserError!]!
}
type TagsRemovePayload {
  node: Node
  userErrors: [UserError!]!
}
type ProductUpdatePayload {
  product: Product
  userErrors: [UserError!]!
}

type Shop {
  id: ID!
  name: String!
  myshopifyDomain: String!
  currencyCode: String!
}

enum ProductStatus { ACTIVE ARCHIVED DRAFT }
enum CountPrecision { EXACT AT_LEAST }

type Count {
  count: Int!
  precision: CountPrecision!
}

type Product implements Node {
  id: ID!
  title: String!
  handle: String!
  vendor: String!
  productType: String!
  status: ProductStatus!
  publishedAt: DateTime
  onlineStoreUrl: String
  publishedOnCurrentPublication: Boolean!
  totalInventory: Int!
  createdAt: DateTime!
  updatedAt: DateTime!
  tags: [String!]!
  variantsCount: Count
  variants(first: Int, after: String, last: Int, before: String): ProductVariantConnection!
}

type ProductVariant implements Node {
  id: ID!
  title: String!
  sku: String
  price: Money!
  inventoryQuantity: Int
  availableForSale: Boolean!
  position: Int!
  product: Product!
}

type PageInfo {
  hasNextPage: Boolean!
  hasPreviousPage: Boolean!
  startCursor: String
  endCursor: String
}

type ProductEdge { cursor: String! node: Product! }
type ProductConnection { edges: [ProductEdge!]! nodes: [Product!]! pageInfo: PageInfo! }
type ProductVariantEdge { cursor: String! node: ProductVariant! }
type ProductVariantConnection {
  edges: [ProductVariantEdge!]!
  nodes: [ProductVariant!]!
  pageInfo: PageInfo!
}
"""

SCHEMA: GraphQLSchema = build_schema(SDL)


def _cursor(item_id: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"last_id": item_id}).encode()).decode()


def _cursor_id(cursor: str) -> int:
    try:
        return int(json.loads(base64.urlsafe_b64decode(cursor.encode()))["last_id"])
    except (ValueError, KeyError, TypeError):
        raise GraphQLError(f"Invalid cursor for current pagination sort: {cursor!r}") from None


def parse_gid(gid: str, kind: str) -> int:
    prefix = f"gid://shopify/{kind}/"
    tail = gid.removeprefix(prefix)
    if not gid.startswith(prefix) or not tail.isdigit():
        raise GraphQLError(
            f"Invalid global id '{gid}'", extensions={"code": "argumentLiteralsIncompatible"}
        )
    return int(tail)


def connection(
    items: Sequence[Any],
    ids: Callable[[Any], int],
    render: Callable[[Any], dict[str, Any]],
    *,
    field: str,
    first: int | None,
    after: str | None,
    last: int | None,
    before: str | None,
) -> dict[str, Any]:
    if (first is None) == (last is None):
        raise GraphQLError("you must provide one of first or last")
    size = first if first is not None else last
    assert size is not None
    if size < 0 or size > MAX_PAGE_SIZE:
        raise GraphQLError(f"The {field} field's page size must be between 0 and {MAX_PAGE_SIZE}")
    positions = {ids(item): index for index, item in enumerate(items)}
    start, stop = 0, len(items)
    if after is not None:
        start = positions.get(_cursor_id(after), -1) + 1
    if before is not None:
        stop = positions.get(_cursor_id(before), len(items))
    window = list(items[start:stop])
    page = window[:size] if first is not None else window[max(0, len(window) - size) :]
    begin = start + (0 if first is not None else len(window) - len(page))
    nodes = [render(item) for item in page]
    return {
        "edges": [
            {"cursor": _cursor(ids(item)), "node": node}
            for item, node in zip(page, nodes, strict=True)
        ],
        "nodes": nodes,
        "pageInfo": {
            "hasNextPage": begin + len(page) < len(items),
            "hasPreviousPage": begin > 0,
            "startCursor": _cursor(ids(page[0])) if page else None,
            "endCursor": _cursor(ids(page[-1])) if page else None,
        },
    }


def _variant(variant: Variant, product: Product, shop: str) -> dict[str, Any]:
    return {
        "__typename": "ProductVariant",
        "id": variant.gid,
        "title": variant.title,
        "sku": variant.sku,
        "price": str(variant.price),
        "inventoryQuantity": variant.inventory_quantity,
        "availableForSale": variant.inventory_quantity > 0,
        "position": variant.position,
        "product": lambda info: _product(product, shop),
    }


def _datetime(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _product(product: Product, shop: str) -> dict[str, Any]:
    """A product as the Admin API shows it; publication as Shopify reports it: a product
    is on the storefront when it is ACTIVE and published (`onlineStoreUrl` is then set)."""

    def variants(
        info: Any,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
    ) -> dict[str, Any]:
        return connection(
            product.variants,
            lambda v: v.id,
            lambda v: _variant(v, product, shop),
            field="variants",
            first=first,
            after=after,
            last=last,
            before=before,
        )

    return {
        "__typename": "Product",
        "id": product.gid,
        "title": product.title,
        "handle": product.handle,
        "vendor": product.vendor,
        "productType": product.product_type,
        "status": product.status,
        "publishedAt": _datetime(product.created_at) if product.published else None,
        "onlineStoreUrl": (
            f"https://{shop}/products/{product.handle}" if product.on_storefront else None
        ),
        "publishedOnCurrentPublication": product.on_storefront,
        "totalInventory": product.total_inventory,
        "createdAt": _datetime(product.created_at),
        "updatedAt": _datetime(product.updated_at or product.created_at),
        "tags": list(product.tags),
        "variantsCount": {"count": len(product.variants), "precision": "EXACT"},
        "variants": variants,
    }


def _error(field: list[str], message: str) -> dict[str, Any]:
    return {"field": field, "message": message}


MAX_TAGS = 250
MAX_TAG_LENGTH = 255


def split_tags(given: Sequence[str]) -> list[str]:
    """Tags as Shopify reads them: each string may hold several, comma-separated; trimmed,
    blanks dropped."""
    return [t.strip() for item in given for t in item.split(",") if t.strip()]


def merge_tags(current: Sequence[str], added: Sequence[str]) -> tuple[str, ...]:
    """`current` plus `added`, unique case-insensitively (the first spelling kept), sorted."""
    kept: dict[str, str] = {}
    for tag in (*current, *added):
        kept.setdefault(tag.lower(), tag)
    return tuple(sorted(kept.values(), key=str.lower))


def tags_error(tags: Sequence[str]) -> dict[str, Any] | None:
    if len(tags) > MAX_TAGS:
        return _error(["tags"], f"Tags cannot be more than {MAX_TAGS}")
    if any(len(t) > MAX_TAG_LENGTH for t in tags):
        return _error(["tags"], f"Tags is too long (maximum is {MAX_TAG_LENGTH} characters)")
    return None


def root_value(
    shop: str,
    catalogue: dict[int, Product],
    on_change: Callable[[Product], None] | None = None,
) -> dict[str, Any]:
    """The query root for one shop: plain data and resolver callables, no global state.
    `on_change` hears of every product a mutation changed (what Shopify sends
    `products/update` for); a mutation that changes nothing is not a change."""
    ordered = [catalogue[key] for key in sorted(catalogue)]

    def save(found: Product, **changes: Any) -> Product:
        updated = dataclasses.replace(found, **changes)
        if updated == found:
            return found
        updated = dataclasses.replace(updated, updated_at=datetime.now(UTC))
        catalogue[found.id] = updated
        if on_change is not None:
            on_change(updated)
        return updated

    def product(info: Any, id: str) -> dict[str, Any] | None:
        found = catalogue.get(parse_gid(id, "Product"))
        return None if found is None else _product(found, shop)

    def products(
        info: Any,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
        query: str | None = None,
    ) -> dict[str, Any]:
        return connection(
            ordered,
            lambda p: p.id,
            lambda p: _product(p, shop),
            field="products",
            first=first,
            after=after,
            last=last,
            before=before,
        )

    def product_update(info: Any, product: dict[str, Any]) -> dict[str, Any]:
        """Shopify's userErrors for a missing product or a blank title; else the change."""
        found = catalogue.get(parse_gid(product["id"], "Product"))
        if found is None:
            return {"product": None, "userErrors": [_error(["id"], "Product does not exist")]}
        if product.get("title") is not None and not product["title"].strip():
            return {"product": None, "userErrors": [_error(["title"], "Title can't be blank")]}
        changes: dict[str, Any] = {
            k: product[k] for k in ("title", "vendor") if product.get(k) is not None
        }
        if product.get("tags") is not None:  # replaces the product's tags
            tags = split_tags(product["tags"])
            error = tags_error(tags)
            if error is not None:
                return {"product": None, "userErrors": [error]}
            changes["tags"] = merge_tags((), tags)
        updated = save(found, **changes)
        return {"product": _product(updated, shop), "userErrors": []}

    def tags_change(id: str, tags: list[str], *, add: bool) -> dict[str, Any]:
        """tagsAdd / tagsRemove on a product (the one taggable resource here)."""
        try:
            found = catalogue.get(parse_gid(id, "Product"))
        except GraphQLError:
            found = None
        if found is None:
            return {"node": None, "userErrors": [_error(["id"], "Product does not exist")]}
        given = split_tags(tags)
        error = tags_error(given)
        if error is not None:
            return {"node": None, "userErrors": [error]}
        if add:
            merged = merge_tags(found.tags, given)
        else:
            gone = {t.lower() for t in given}
            merged = tuple(t for t in found.tags if t.lower() not in gone)
        if len(merged) > MAX_TAGS:
            return {"node": None, "userErrors": [tags_error(merged)]}
        updated = save(found, tags=merged)
        return {"node": _product(updated, shop), "userErrors": []}

    return {
        "productUpdate": product_update,
        "tagsAdd": lambda info, id, tags: tags_change(id, tags, add=True),
        "tagsRemove": lambda info, id, tags: tags_change(id, tags, add=False),
        "shop": {
            "id": f"gid://shopify/Shop/{zlib.crc32(shop.encode())}",
            "name": shop.split(".")[0].replace("-", " ").title(),
            "myshopifyDomain": shop,
            "currencyCode": "USD",
        },
        "product": product,
        "products": products,
    }
