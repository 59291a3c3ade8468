"""The emulator prices Admin GraphQL as Shopify documents it (shopify.dev: API rate limits).

Requested cost, before running: scalars and enums 0, objects 1, a connection 2 plus its page
size (`first`/`last`) times the cost of one item. Actual cost, after running: the same rules
applied to what was returned, at every depth. Mutations: 10 points each mutation field.
"""

from __future__ import annotations

from typing import Any

from graphql import FragmentDefinitionNode, get_operation_ast, parse

from shopify_emulator.admin_schema import SCHEMA
from shopify_emulator.query_cost import actual_cost, requested_cost

NESTED = "{ products(first: 3) { nodes { variants(first: 100) { nodes { id } } } } }"
NESTED_EDGES = """
{ products(first: 3) { edges { node { id variants(first: 100) { edges { node { id } } } } } } }
"""


def costs(query: str, data: dict[str, Any] | None = None) -> tuple[int, int]:
    document = parse(query)
    operation = get_operation_ast(document)
    assert operation is not None
    fragments = {
        d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
    }
    return (
        requested_cost(SCHEMA, operation, fragments, {}),
        actual_cost(SCHEMA, operation, fragments, {}, data or {}),
    )


def products(*variant_counts: int) -> dict[str, Any]:
    return {
        "products": {
            "nodes": [{"variants": {"nodes": [{"id": "v"}] * count}} for count in variant_counts]
        }
    }


def test_scalars_are_free_and_objects_cost_one() -> None:
    assert costs("{ shop { id name currencyCode } }", {"shop": {}}) == (1, 1)


def test_a_connection_costs_two_plus_page_size_times_its_item() -> None:
    requested, _ = costs("{ products(first: 10) { nodes { id title } pageInfo { hasNextPage } } }")
    assert requested == 2 + 10 * 1


def test_nested_connections_are_requested_at_their_page_sizes() -> None:
    requested, _ = costs(NESTED)
    assert requested == 2 + 3 * (1 + 2 + 100 * 1) == 311


def test_actual_cost_counts_the_items_returned_at_every_depth() -> None:
    # 3 products with 2, 5 and 0 variants: 2 + each product (1 + its connection 2 + variants)
    _, actual = costs(NESTED, products(2, 5, 0))
    assert actual == 2 + (1 + 2 + 2) + (1 + 2 + 5) + (1 + 2 + 0) == 18
    # Fewer products returned than asked for: only those are charged.
    assert costs(NESTED, products(4))[1] == 2 + (1 + 2 + 4)


def test_edges_and_nodes_are_charged_alike() -> None:
    data = {
        "products": {
            "edges": [
                {"node": {"id": "p", "variants": {"edges": [{"node": {"id": "v"}}] * n}}}
                for n in (2, 5, 0)
            ]
        }
    }
    assert costs(NESTED_EDGES, data) == (311, 18)


def test_a_mutation_costs_ten_points_per_mutation_field() -> None:
    one = 'mutation { productUpdate(product: {id: "gid://shopify/Product/1"}) { userErrors { message } } }'
    assert costs(one, {"productUpdate": {"userErrors": []}}) == (10, 10)
    two = """mutation {
      a: bulkOperationCancel(id: "gid://shopify/BulkOperation/1") { userErrors { message } }
      b: bulkOperationRunQuery(query: "{ products { edges { node { id } } } }") {
        bulkOperation { id } userErrors { message }
      }
    }"""
    assert costs(two)[0] == 20


def test_an_interface_is_priced_on_the_fields_selected() -> None:
    query = (
        '{ node(id: "gid://shopify/BulkOperation/1") { id ... on BulkOperation { status url } } }'
    )
    assert costs(query, {"node": {"id": "x", "status": "RUNNING"}}) == (1, 1)
