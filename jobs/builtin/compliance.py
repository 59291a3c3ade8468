"""Shopify's mandatory compliance webhooks, run as jobs acting on the app's own data.

Every public app must handle them; what they act on is what this app stores about a
customer or a shop, which is the jobs table (inputs, results, customer ids) and the shop's
tokens. The webhook endpoint records each one and queues a job (source 'webhook'); the job's
result is the record of what was done. None of these types can be started through the app
proxy (`proxy=False`). Their inputs keep ids only: no email or phone number is stored.

- customers/data_request: collect the customer's jobs; the result is the data to hand to the
  merchant (send it on from there).
- customers/redact: delete the customer's jobs.
- shop/redact (48 hours after uninstall): delete all of the shop's jobs and its tokens.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from jobs.types import JobContext, JobType, NonRetryableError
from service import store


class ShopGone(NonRetryableError):
    """The shop row no longer exists: there is nothing of it left to act on."""


class CustomerDataRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    customer_id: str = Field(min_length=1, max_length=64)
    data_request_id: str | None = Field(default=None, max_length=64)
    orders_requested: list[int] = Field(default_factory=list, max_length=10_000)


class CustomerRedact(BaseModel):
    model_config = ConfigDict(extra="forbid")

    customer_id: str = Field(min_length=1, max_length=64)
    orders_to_redact: list[int] = Field(default_factory=list, max_length=10_000)


class ShopRedact(BaseModel):
    model_config = ConfigDict(extra="forbid")

    shop_id: str | None = Field(default=None, max_length=64)


def _id(value: Any) -> str | None:
    return None if value is None else str(value)


def data_request_input(payload: dict[str, Any]) -> dict[str, Any]:
    return {
        "customer_id": _id((payload.get("customer") or {}).get("id")),
        "data_request_id": _id((payload.get("data_request") or {}).get("id")),
        "orders_requested": payload.get("orders_requested") or [],
    }


def customer_redact_input(payload: dict[str, Any]) -> dict[str, Any]:
    return {
        "customer_id": _id((payload.get("customer") or {}).get("id")),
        "orders_to_redact": payload.get("orders_to_redact") or [],
    }


def shop_redact_input(payload: dict[str, Any]) -> dict[str, Any]:
    return {"shop_id": _id(payload.get("shop_id"))}


async def _shop(ctx: JobContext) -> store.Shop:
    shop = await store.get_shop(ctx.database, ctx.shop)
    if shop is None:
        raise ShopGone(f"Shop no longer exists: {ctx.shop}")
    return shop


async def customers_data_request(ctx: JobContext, data: CustomerDataRequest) -> dict[str, Any]:
    shop = await _shop(ctx)
    jobs = await store.customer_jobs(ctx.database, shop.id, data.customer_id)
    return {
        "customerId": data.customer_id,
        "dataRequestId": data.data_request_id,
        "jobs": [
            {
                "id": str(job.id),
                "type": job.type,
                "status": job.status,
                "createdAt": job.created_at.isoformat(),
                "input": job.input,
                "result": job.result,
            }
            for job in jobs
        ],
    }


async def customers_redact(ctx: JobContext, data: CustomerRedact) -> dict[str, Any]:
    shop = await _shop(ctx)
    deleted = await store.delete_customer_jobs(
        ctx.database, shop.id, data.customer_id, data_request_type=CUSTOMERS_DATA_REQUEST.name
    )
    return {"customerId": data.customer_id, "deletedJobs": deleted}


async def shop_redact(ctx: JobContext, data: ShopRedact) -> dict[str, Any]:
    shop = await _shop(ctx)
    deleted = await store.redact_shop(ctx.database, shop.id, keep_job_id=UUID(ctx.job_id))
    return {"shop": shop.domain, "deletedJobs": deleted, "tokensDeleted": True}


CUSTOMERS_DATA_REQUEST = JobType(
    name="customers_data_request",
    input_model=CustomerDataRequest,
    handler=customers_data_request,
    proxy=False,
)
CUSTOMERS_REDACT = JobType(
    name="customers_redact", input_model=CustomerRedact, handler=customers_redact, proxy=False
)
SHOP_REDACT = JobType(name="shop_redact", input_model=ShopRedact, handler=shop_redact, proxy=False)
