"""The JSONL files of emulated bulk operations, as Shopify writes them.

A bulk query's result has one line per object: the objects of the query's top-level
connections, each followed by the objects of its nested connections on lines of their own,
linked to their parent by `__parentId`. The lines are generated lazily from the catalogue
(paging each connection through its own resolver), so a file is never held in memory. A bulk
mutation's result has one line per input line: `{"data": ..., "__lineNumber": n}` (and
`errors` when it had some). `bulk_query_problem` says why Shopify would refuse a query.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

from graphql import (
    FieldNode,
    GraphQLError,
    GraphQLNamedType,
    GraphQLObjectType,
    OperationDefinitionNode,
    OperationType,
    execute,
    get_named_type,
    get_operation_ast,
    is_leaf_type,
    parse,
    validate,
)

from shopify_emulator.admin_schema import MAX_PAGE_SIZE, SCHEMA

# Shopify: at most five connections in a bulk query, nested at most two levels deep.
MAX_CONNECTIONS = 5
MAX_NESTING = 2


def _selected(field: FieldNode) -> list[FieldNode]:
    if field.selection_set is None:
        return []
    return [s for s in field.selection_set.selections if isinstance(s, FieldNode)]


def _type_of(parent: GraphQLNamedType, field: FieldNode) -> GraphQLNamedType | None:
    if not isinstance(parent, GraphQLObjectType):
        return None
    definition = parent.fields.get(field.name.value)
    return None if definition is None else get_named_type(definition.type)


def _node_type(connection: GraphQLNamedType) -> GraphQLNamedType:
    assert isinstance(connection, GraphQLObjectType)
    return get_named_type(connection.fields["nodes"].type)


def _node_selection(field: FieldNode) -> list[FieldNode]:
    """What a connection selects on each item, through `nodes` or `edges { node }`."""
    chosen: list[FieldNode] = []
    for item in _selected(field):
        if item.name.value == "nodes":
            chosen += _selected(item)
        elif item.name.value == "edges":
            chosen += [f for e in _selected(item) if e.name.value == "node" for f in _selected(e)]
    return chosen


def _all_items(resolver: Callable[..., dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every item of a connection, page by page through its own resolver."""
    after: str | None = None
    while True:
        page = resolver(None, first=MAX_PAGE_SIZE, after=after)
        yield from page["nodes"]
        if not page["pageInfo"]["hasNextPage"]:
            return
        after = page["pageInfo"]["endCursor"]


def _value(value: Any, fields: list[FieldNode], named: GraphQLNamedType) -> Any:
    if callable(value):
        value = value(None)
    if value is None or is_leaf_type(named):
        return value
    return {
        (f.alias or f.name).value: _value(value.get(f.name.value), _selected(f), sub)
        for f in fields
        if (sub := _type_of(named, f)) is not None and not sub.name.endswith("Connection")
    }


def _object_lines(
    item: dict[str, Any],
    fields: list[FieldNode],
    named: GraphQLNamedType,
    parent: str | None,
    own: bool = True,
    children: bool = True,
) -> Iterator[dict[str, Any]]:
    """One object's line (`own`), then its nested connections' lines (`children`, each with
    `__parentId`)."""
    line: dict[str, Any] = {}
    nested: list[tuple[FieldNode, GraphQLNamedType]] = []
    for f in fields:
        if f.name.value == "__typename":
            line[(f.alias or f.name).value] = named.name
            continue
        sub = _type_of(named, f)
        if sub is None:
            continue
        if sub.name.endswith("Connection"):
            nested.append((f, sub))
        else:
            line[(f.alias or f.name).value] = _value(item.get(f.name.value), _selected(f), sub)
    if parent is not None:
        line["__parentId"] = parent
    if own:
        yield line
    if not children:
        return
    for f, connection in nested:
        for child in _all_items(item[f.name.value]):
            yield from _object_lines(
                child, _node_selection(f), _node_type(connection), item.get("id")
            )


def query_lines(query: str, root: dict[str, Any], grouped: bool = True) -> Iterator[dict[str, Any]]:
    """The JSONL lines of a bulk query, generated lazily from the catalogue.

    `grouped` (Shopify's `groupObjects`): each top-level object directly followed by its
    children; otherwise (the default from API 2026-01) every top-level object first, then
    the children, each after its parent but not next to it.
    """
    operation = get_operation_ast(parse(query))
    assert operation is not None and SCHEMA.query_type is not None
    for f in _selected_root(operation):
        named = _type_of(SCHEMA.query_type, f)
        if named is None or not named.name.endswith("Connection"):
            continue
        fields, node_type = _node_selection(f), _node_type(named)
        passes = [(True, True)] if grouped else [(True, False), (False, True)]
        for own, children in passes:
            for item in _all_items(root[f.name.value]):
                yield from _object_lines(item, fields, node_type, None, own, children)


def _selected_root(operation: OperationDefinitionNode) -> list[FieldNode]:
    return [s for s in operation.selection_set.selections if isinstance(s, FieldNode)]


def bulk_query_problem(query: str) -> str | None:
    """Why Shopify would refuse this bulk query, or None."""
    try:
        document = parse(query)
    except GraphQLError as exc:
        return f"Invalid bulk query: {exc.message}"
    problems = validate(SCHEMA, document)
    if problems:
        return f"Invalid bulk query: {problems[0].message}"
    operation = get_operation_ast(document)
    if operation is None or operation.operation is not OperationType.QUERY:
        return "Invalid bulk query: it must be a query"
    assert SCHEMA.query_type is not None
    roots = [
        f
        for f in _selected_root(operation)
        if (t := _type_of(SCHEMA.query_type, f)) is not None and t.name.endswith("Connection")
    ]
    if not roots:
        return "Bulk queries must contain at least one connection."
    found = [d for f in _selected_root(operation) for d in _connections(SCHEMA.query_type, f, 0)]
    if len(found) > MAX_CONNECTIONS:
        return f"Bulk queries cannot contain more than {MAX_CONNECTIONS} connections."
    if max(found) > MAX_NESTING:
        return (
            "Bulk queries cannot contain connections with a nesting depth greater than "
            f"{MAX_NESTING}."
        )
    return None


def _connections(parent: GraphQLNamedType, field: FieldNode, depth: int) -> Iterator[int]:
    """The nesting depth of every connection selected at or under `field` (1: top level)."""
    named = _type_of(parent, field)
    if named is None:
        return
    if named.name.endswith("Connection"):
        depth += 1
        yield depth
        named, below = _node_type(named), _node_selection(field)
    else:
        below = _selected(field)
    for sub in below:
        yield from _connections(named, sub, depth)


def count(query: str, root: dict[str, Any]) -> tuple[int, int]:
    total = roots = 0
    for line in query_lines(query, root):
        total += 1
        roots += "__parentId" not in line
    return total, roots


def mutation_line(mutation: str, variables: Any, number: int, root: dict[str, Any]) -> bytes:
    result = execute(
        SCHEMA,
        parse(mutation),
        root_value=root,
        variable_values=variables if isinstance(variables, dict) else {},
    )
    line: dict[str, Any] = {"data": result.data, "__lineNumber": number}  # type: ignore[union-attr]
    if result.errors:  # type: ignore[union-attr]
        line["errors"] = [e.formatted for e in result.errors]  # type: ignore[union-attr]
    return json.dumps(line, separators=(",", ":")).encode() + b"\n"
