"""POST /admin/api/{version}/graphql.json: Admin GraphQL with costs, throttling and faults.

Queries and mutations (productUpdate and the bulk operations of shopify_emulator/bulk.py).
Order of events, as on Shopify: authenticate the token (401), apply an injected fault, parse
and validate (errors answer 200), price the query, refuse it with THROTTLED (200) when the
shop's bucket lacks the requested cost or MAX_COST_EXCEEDED when it could never fit, run it,
then give back the difference between requested and actual cost.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from graphql import (
    FragmentDefinitionNode,
    GraphQLError,
    OperationDefinitionNode,
    OperationType,
    execute,
    get_operation_ast,
    parse,
    validate,
)
from starlette.requests import Request
from starlette.responses import JSONResponse

from shopify_emulator import bulk, flow, query_cost, webhooks
from shopify_emulator.admin_schema import SCHEMA, root_value
from shopify_emulator.catalogue import Product
from shopify_emulator.state import EmulatorState, ShopState

logger = logging.getLogger("shopify_emulator")

INVALID_TOKEN = "[API] Invalid API key or access token (unrecognized login or wrong password)"
RATE_LIMITED = "Exceeded 2 calls per second for api client. Reduce request rates to resume."
# Shopify refuses a query whose requested cost is over this before running it, on every plan.
SINGLE_QUERY_MAX_COST = 1000


def _errors(*messages: str, code: str | None = None) -> list[dict[str, Any]]:
    extensions = {"code": code} if code else {}
    return [{"message": m, **({"extensions": extensions} if extensions else {})} for m in messages]


def _cost(requested: int, actual: int | None, shop: ShopState, now: float) -> dict[str, Any]:
    return {
        "cost": {
            "requestedQueryCost": requested,
            "actualQueryCost": actual,
            "throttleStatus": shop.bucket.status(now),
        }
    }


async def graphql(request: Request) -> JSONResponse:
    state: EmulatorState = request.app.state.emulator
    token = request.headers.get("x-shopify-access-token", "")
    domain = state.token_shop(token, time.time()) if token else None
    if domain is None:
        return JSONResponse({"errors": INVALID_TOKEN}, status_code=401)
    shop = state.shops[domain]
    shop.counters["requests"] += 1

    fault = state.take_fault(domain)
    if fault is not None:
        shop.counters["faults"] += 1
        if fault.kind == "slow":
            await request.body()  # read (and kept) first: is_disconnected() would drop it
            await asyncio.sleep(fault.delay)
            if await request.is_disconnected():  # the caller gave up (or died) meanwhile
                return JSONResponse({"errors": "Client closed the request"}, status_code=499)
        else:
            headers = {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after else {}
            status = int(fault.kind)
            body = RATE_LIMITED if status == 429 else "Service Unavailable"
            return JSONResponse({"errors": body}, status_code=status, headers=headers)

    try:
        payload = await request.json()
        source = payload["query"]
        variables = payload.get("variables") or {}
        if not isinstance(source, str) or not isinstance(variables, dict):
            raise TypeError
    except (ValueError, KeyError, TypeError, AttributeError):
        return JSONResponse(
            {"errors": {"query": "Required parameter missing or invalid"}}, status_code=400
        )
    operation_name = payload.get("operationName")

    try:
        document = parse(source)
    except GraphQLError as exc:
        return JSONResponse({"errors": [exc.formatted]})
    problems = validate(SCHEMA, document)
    if problems:
        return JSONResponse({"errors": [p.formatted for p in problems]})
    operation = get_operation_ast(document, operation_name)
    if operation is None:
        return JSONResponse({"errors": _errors("No operation named in the query")})
    if operation.operation is OperationType.SUBSCRIPTION:
        return JSONResponse({"errors": _errors("Subscriptions are not supported")})
    fragments = {
        d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
    }
    extra = bulk.resolvers(
        state, domain, request.path_params["version"], str(request.base_url).rstrip("/")
    ) | flow.resolvers(state, domain)
    changed: list[Product] = []
    answer = _run(
        state, shop, document, operation, fragments, variables, operation_name, extra,
        changed.append,
    )  # fmt: skip
    _send_product_updates(request, state, domain, changed)
    return answer


PRODUCTS_UPDATE = "products/update"


def _send_product_updates(
    request: Request, state: EmulatorState, domain: str, changed: list[Product]
) -> None:
    """What Shopify does after a mutation changed a product: `products/update`, to an app
    subscribed to it (`--webhook-topic products/update`), the app's own changes included:
    the webhook loop an app must avoid (docs/your-app.md). One per product and request."""
    if PRODUCTS_UPDATE not in state.config.webhook_topics:
        return
    latest = {product.id: product for product in changed}
    tasks: set[asyncio.Task[None]] = request.app.state.tasks
    for product in latest.values():
        payload = webhooks.product_payload(product)
        delivery = webhooks.new_delivery(state.config, PRODUCTS_UPDATE, domain, payload)
        state.deliveries.append(delivery)
        task = asyncio.create_task(webhooks.deliver(request.app.state.http, state.config, delivery))
        tasks.add(task)
        task.add_done_callback(tasks.discard)


def _run(
    state: EmulatorState,
    shop: ShopState,
    document: Any,
    operation: OperationDefinitionNode,
    fragments: dict[str, FragmentDefinitionNode],
    variables: dict[str, Any],
    operation_name: str | None,
    extra: dict[str, Any],
    on_change: Callable[[Product], None] | None = None,
) -> JSONResponse:
    now = state.clock()
    requested = query_cost.requested_cost(SCHEMA, operation, fragments, variables)
    # Shopify: "A single query cannot exceed a cost of 1000", whatever the plan's bucket; a
    # smaller bucket (the tests') refuses what could never fit in it the same way.
    single_max = min(SINGLE_QUERY_MAX_COST, shop.bucket.maximum)
    if requested > single_max:
        message = (
            f"Query cost is {requested}, which exceeds the single query max cost limit "
            f"({single_max:g})."
        )
        return JSONResponse(
            {
                "errors": _errors(message, code="MAX_COST_EXCEEDED"),
                "extensions": _cost(requested, None, shop, now),
            }
        )
    if not shop.bucket.take(requested, now):
        shop.counters["throttled"] += 1
        logger.info(
            "throttled %s: requested %d, available %.2f",
            shop.domain,
            requested,
            shop.bucket.level(now),
        )
        return JSONResponse(
            {
                "errors": _errors("Throttled", code="THROTTLED"),
                "extensions": _cost(requested, None, shop, now),
            }
        )
    result = execute(
        SCHEMA,
        document,
        root_value={**root_value(shop.domain, state.catalogue, on_change), **extra},
        variable_values=variables,
        operation_name=operation_name,
    )
    assert not hasattr(result, "__await__")  # every resolver is synchronous
    data = result.data  # type: ignore[union-attr]
    actual = query_cost.actual_cost(SCHEMA, operation, fragments, variables, data)
    now = state.clock()
    shop.counters["points"] += actual
    shop.bucket.give_back(requested - actual, now)
    body: dict[str, Any] = {"data": data}
    if result.errors:  # type: ignore[union-attr]
        body["errors"] = [e.formatted for e in result.errors]  # type: ignore[union-attr]
    body["extensions"] = _cost(requested, actual, shop, now)
    return JSONResponse(body)
