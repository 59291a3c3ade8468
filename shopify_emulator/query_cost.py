"""Admin GraphQL query cost, calculated the way Shopify documents it.

Scalars and enums cost 0, an object costs 1, a connection costs 2 plus, for each item it
may return (`first` or `last`), the cost of one item's selection; `pageInfo` is free. The
requested cost uses the page sizes asked for. The actual cost counts what was returned, all
the way down: a nested connection is charged for the items it returned under each parent,
not for its page size. A mutation costs 10 points per mutation field, whatever it selects.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLInterfaceType,
    GraphQLNamedType,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    get_named_type,
    is_leaf_type,
    value_from_ast_untyped,
)

CONNECTION_BASE_COST = 2
MUTATION_COST = 10
REQUESTED: Any = object()  # marks a requested-cost walk (no result data)


class _Walk:
    def __init__(
        self,
        schema: GraphQLSchema,
        fragments: Mapping[str, FragmentDefinitionNode],
        variables: Mapping[str, Any],
    ) -> None:
        self.schema = schema
        self.fragments = fragments
        self.variables = variables

    def fields(self, selection_set: SelectionSetNode | None) -> Iterator[FieldNode]:
        """The fields of a selection, with fragments flattened (the schema has no unions)."""
        if selection_set is None:
            return
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                yield selection
            elif isinstance(selection, InlineFragmentNode):
                yield from self.fields(selection.selection_set)
            elif isinstance(selection, FragmentSpreadNode):
                fragment = self.fragments.get(selection.name.value)
                if fragment is not None:
                    yield from self.fields(fragment.selection_set)

    def page_size(self, field: FieldNode) -> int:
        for argument in field.arguments:
            if argument.name.value in ("first", "last"):
                value = value_from_ast_untyped(argument.value, self.variables)
                if isinstance(value, int):
                    return max(0, value)
        return 0

    def field_type(self, parent: GraphQLNamedType, field: FieldNode) -> GraphQLNamedType | None:
        """The field's type on `parent`; on an interface (`node(id:)`), on whichever of its
        types has the field (fragments `... on BulkOperation` select beyond the interface)."""
        if not isinstance(parent, GraphQLObjectType | GraphQLInterfaceType):
            return None
        definition = parent.fields.get(field.name.value)
        if definition is None and isinstance(parent, GraphQLInterfaceType):
            for possible in self.schema.get_possible_types(parent):
                definition = possible.fields.get(field.name.value)
                if definition is not None:
                    break
        return None if definition is None else get_named_type(definition.type)

    def cost(
        self,
        selection_set: SelectionSetNode | None,
        parent: GraphQLNamedType,
        data: Any = REQUESTED,
    ) -> int:
        """Cost of a selection on `parent`: requested, or actual when given the result `data`."""
        total = 0
        for field in self.fields(selection_set):
            named = self.field_type(parent, field)
            if named is None or is_leaf_type(named):
                continue
            if data is REQUESTED:
                value: Any = REQUESTED
            else:
                value = data.get(_key(field)) if isinstance(data, dict) else None
            if named.name.endswith("Connection"):
                if value is REQUESTED:
                    size = self.page_size(field)
                    total += CONNECTION_BASE_COST + size * self.item_cost(
                        field.selection_set, named
                    )
                else:
                    total += CONNECTION_BASE_COST + self.returned_cost(field, named, value)
            elif value is None:
                total += 1  # a null object is still charged, its fields are not
            else:
                total += 1 + self.cost(field.selection_set, named, value)
        return total

    def returned_cost(self, field: FieldNode, connection: GraphQLNamedType, value: Any) -> int:
        """Actual cost of a connection's items: each returned node with what it returned.

        `nodes` and `edges { node }` select the same items; when both are asked for, each
        item is charged once per selection, as its requested cost counts it.
        """
        if not isinstance(value, dict):
            return 0
        total = 0
        for item_field in self.fields(field.selection_set):
            named = self.field_type(connection, item_field)
            items = value.get(_key(item_field))
            if named is None or not isinstance(items, list):
                continue
            if item_field.name.value == "nodes":
                for node in items:
                    total += 1 + self.cost(item_field.selection_set, named, node)
            elif item_field.name.value == "edges":
                for edge_field in self.fields(item_field.selection_set):
                    node_type = self.field_type(named, edge_field)
                    if edge_field.name.value != "node" or node_type is None:
                        continue
                    for edge in items:
                        node = edge.get(_key(edge_field)) if isinstance(edge, dict) else None
                        total += 1 + self.cost(edge_field.selection_set, node_type, node)
        return total

    def item_cost(
        self, selection_set: SelectionSetNode | None, connection: GraphQLNamedType
    ) -> int:
        """Cost of one item of a connection: its node (via `edges { node }` or `nodes`)."""
        total = 0
        for field in self.fields(selection_set):
            named = self.field_type(connection, field)
            if named is None:
                continue
            if field.name.value == "nodes":
                total += 1 + self.cost(field.selection_set, named)
            elif field.name.value == "edges":
                for edge_field in self.fields(field.selection_set):
                    node_type = self.field_type(named, edge_field)
                    if edge_field.name.value == "node" and node_type is not None:
                        total += 1 + self.cost(edge_field.selection_set, node_type)
        return total


def _key(field: FieldNode) -> str:
    return field.alias.value if field.alias else field.name.value


def _walk(
    schema: GraphQLSchema,
    fragments: Mapping[str, FragmentDefinitionNode],
    variables: Mapping[str, Any] | None,
) -> _Walk:
    return _Walk(schema, fragments, variables or {})


def requested_cost(
    schema: GraphQLSchema,
    operation: OperationDefinitionNode,
    fragments: Mapping[str, FragmentDefinitionNode],
    variables: Mapping[str, Any] | None,
) -> int:
    if operation.operation is OperationType.MUTATION:
        return mutation_cost(operation, fragments, variables, schema)
    root = schema.query_type
    assert root is not None
    return _walk(schema, fragments, variables).cost(operation.selection_set, root)


def actual_cost(
    schema: GraphQLSchema,
    operation: OperationDefinitionNode,
    fragments: Mapping[str, FragmentDefinitionNode],
    variables: Mapping[str, Any] | None,
    data: dict[str, Any] | None,
) -> int:
    if operation.operation is OperationType.MUTATION:
        return mutation_cost(operation, fragments, variables, schema)
    root = schema.query_type
    assert root is not None
    return _walk(schema, fragments, variables).cost(operation.selection_set, root, data or {})


def mutation_cost(
    operation: OperationDefinitionNode,
    fragments: Mapping[str, FragmentDefinitionNode],
    variables: Mapping[str, Any] | None,
    schema: GraphQLSchema,
) -> int:
    """Shopify charges a flat 10 points per mutation field, requested and actual alike."""
    fields = _walk(schema, fragments, variables).fields(operation.selection_set)
    return MUTATION_COST * sum(1 for _ in fields)
