"""Which job types the storefront reaches, and what a storefront request may cost (pure)."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from jobs.builtin import product_summary
from jobs.registry import job_types
from jobs.types import JobType
from service.core.settings import Settings


class Anything(BaseModel):
    page_size: int = 10


class Narrower(Anything):
    page_size: int = 5


class Unrelated(BaseModel):
    page_size: int = 5


async def _handler(ctx: object, data: Anything) -> None:
    return None


def test_a_type_is_closed_to_the_storefront_unless_it_opts_in() -> None:
    plain = JobType(name="plain", input_model=Anything, handler=_handler)
    assert plain.proxy is False and plain.proxy_input_model is None
    assert plain.proxy_limit_per_minute is None


def test_the_shipped_storefront_types() -> None:
    # Only the two fields job_types() reads: no environment, no server.
    settings = Settings.model_construct(
        enable_diagnostic_jobs=True, product_summary_show_inventory=False
    )
    types = job_types(settings)
    assert {name for name, t in types.items() if t.proxy} == {"echo", "product_summary"}
    summary = types["product_summary"]
    assert summary.proxy_input_model is product_summary.StorefrontProductSummaryInput
    assert summary.proxy_limit_per_minute == product_summary.STOREFRONT_JOBS_PER_MINUTE == 30


def test_a_storefront_product_summary_requests_at_most_54_points_a_call() -> None:
    model = product_summary.StorefrontProductSummaryInput
    gid = "gid://shopify/Product/1"
    largest = model(product_id=gid, page_size=product_summary.STOREFRONT_MAX_PAGE_SIZE)
    assert product_summary._cost(largest.page_size, first=True) == 54
    with pytest.raises(ValidationError):
        model(product_id=gid, page_size=51)
    # What the storefront stores, the worker's model reads back unchanged.
    stored = largest.model_dump(mode="json")
    assert product_summary.ProductSummaryInput.model_validate(stored).model_dump() == stored
    # The merchant and webhooks keep the full range.
    assert product_summary.ProductSummaryInput(product_id=gid, page_size=250).page_size == 250


def test_storefront_bounds_that_bound_nothing_are_refused_at_import() -> None:
    with pytest.raises(ValueError, match="proxy_limit_per_minute"):
        JobType(name="t", input_model=Anything, handler=_handler, proxy_limit_per_minute=0)
    with pytest.raises(ValueError, match="subclass"):
        JobType(name="t", input_model=Anything, handler=_handler, proxy_input_model=Unrelated)
    JobType(name="t", input_model=Anything, handler=_handler, proxy_input_model=Narrower)
