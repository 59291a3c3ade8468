"""OpenTelemetry traces (service/core/tracing.py), read back from the SDK's in-memory exporter.

The web runs in-process (create_app, as `app_client` does) and the worker's runs through
jobs/worker/runner.py, as tests/integration/test_runner.py runs them: one trace must go from
the HTTP request (continuing the caller's traceparent) through `enqueue`, the queue wait and
every run, including a retry after a failure and a run resumed after a wait, to the Admin API
calls the run makes. The context travels in the job row only, as it does between processes.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from arq.connections import ArqRedis
from databases import Database
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from pydantic import BaseModel

from jobs.types import JobContext, JobType
from jobs.worker.runtime import Runtime
from service import store
from service.app import create_app
from service.core import tracing
from service.core.settings import Settings
from service.intake import Intake
from service.jobs_client import JobsClient
from tests.integration.test_proxy import SHOP, signed
from tests.integration.test_runner import run_due, runtime  # noqa: F401
from tests.support.jobs import make_shop
from tests.support.wait_jobs import NapInput, napper

CALLER_TRACE = 0x0AF7651916CD43DD8448EB211C80319C
CALLER_SPAN = 0xB7AD6B7169203331
TRACEPARENT = f"00-{CALLER_TRACE:032x}-{CALLER_SPAN:016x}-01"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use(provider)
    yield exporter
    tracing.use(None)


def named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


def one(exporter: InMemorySpanExporter, name: str) -> ReadableSpan:
    found = named(exporter, name)
    assert len(found) == 1, [s.name for s in exporter.get_finished_spans()]
    return found[0]


def parent_of(span: ReadableSpan) -> int | None:
    return None if span.parent is None else span.parent.span_id


class FlakyInput(BaseModel):
    failures: int


async def flaky(ctx: JobContext, data: FlakyInput) -> dict[str, Any]:
    if ctx.attempt <= data.failures:
        raise RuntimeError(f"attempt {ctx.attempt} fails")
    return {"attempt": ctx.attempt}


FLAKY = JobType(name="flaky", handler=flaky, input_model=FlakyInput, max_attempts=3)


def test_off_unless_the_otel_variables_ask() -> None:
    assert not tracing.wanted({})
    assert not tracing.wanted({"OTEL_SERVICE_NAME": "x"})
    assert tracing.wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    assert tracing.wanted({"OTEL_TRACES_EXPORTER": "console"})
    assert not tracing.wanted({"OTEL_TRACES_EXPORTER": "none"})
    assert not tracing.wanted(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_SDK_DISABLED": "true"}
    )
    assert not tracing.enabled()
    assert tracing.carrier() is None
    with tracing.span("anything") as nothing:
        assert nothing is None


async def test_off_by_default_writes_no_trace_context(
    app_client: httpx.AsyncClient,
    database: Database,
    runtime: Runtime,  # noqa: F811
) -> None:
    await make_shop(database, SHOP)
    response = await app_client.post(
        signed("/proxy/process"), json={"type": "echo", "input": {"message": "hi"}}
    )
    assert response.status_code == 200
    assert (
        await database.fetch_val("SELECT count(*) FROM jobs WHERE trace_context IS NOT NULL") == 0
    )
    assert await run_due(runtime) == [response.json()["jobId"]]


async def test_one_trace_from_the_storefront_request_to_the_run(
    spans: InMemorySpanExporter,
    settings: Settings,
    database: Database,
    redis: ArqRedis,
    runtime: Runtime,  # noqa: F811
) -> None:
    await make_shop(database, SHOP)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as web:
            response = await web.post(
                signed("/proxy/process"),
                json={"type": "echo", "input": {"message": "hi"}},
                headers={"traceparent": TRACEPARENT},
            )
    assert response.status_code == 200, response.text
    job_id = response.json()["jobId"]
    stored = await database.fetch_val(
        "SELECT trace_context FROM jobs WHERE id = :id", {"id": job_id}
    )
    assert f"{CALLER_TRACE:032x}" in stored

    assert await run_due(runtime) == [job_id]

    request = one(spans, "POST")
    enqueue = one(spans, "enqueue echo")
    wait = one(spans, "queue wait echo")
    run = one(spans, "run echo")
    for span in (request, enqueue, wait, run):
        assert span.context.trace_id == CALLER_TRACE, span.name
    assert parent_of(request) == CALLER_SPAN and request.kind is SpanKind.SERVER
    assert request.attributes["http.response.status_code"] == 200
    assert parent_of(enqueue) == request.context.span_id
    assert enqueue.attributes["shopjobs.source"] == "proxy"
    assert enqueue.attributes["shopjobs.job.id"] == job_id
    # The run and its wait are children of the enqueue span, found through the row alone.
    assert parent_of(wait) == enqueue.context.span_id
    assert parent_of(run) == enqueue.context.span_id
    assert wait.start_time <= wait.end_time <= run.start_time
    assert run.kind is SpanKind.CONSUMER
    assert run.attributes["shopjobs.outcome"] == "completed"
    assert run.attributes["shopjobs.attempt"] == 1
    assert run.attributes["shopjobs.job.type"] == "echo"


async def _client(worker: Runtime, database: Database, redis: ArqRedis) -> JobsClient:
    intake = Intake(database, redis, lambda *_: None)
    return JobsClient(database, redis, dict(worker.types), intake=intake)


async def test_a_retry_joins_the_trace_of_the_jobs_creation(
    spans: InMemorySpanExporter,
    database: Database,
    redis: ArqRedis,
    runtime: Runtime,  # noqa: F811
) -> None:
    """The app's own JobsClient.enqueue under its span; the first attempt fails, the retry
    (after its backoff, from the queue, with nothing in memory) completes in the same trace."""
    runtime = dataclasses.replace(runtime, types={FLAKY.name: FLAKY})
    shop = await make_shop(database, SHOP)
    jobs = await _client(runtime, database, redis)
    with tracing.span("app route") as route:
        assert route is not None
        enqueued = await jobs.enqueue("flaky", shop=shop.domain, input={"failures": 1})
    trace_id = route.get_span_context().trace_id

    assert await run_due(runtime, FLAKY) == [str(enqueued.id)]
    assert await run_due(runtime, FLAKY, ahead=120) == [str(enqueued.id)]

    enqueue = one(spans, "enqueue flaky")
    runs = sorted(named(spans, "run flaky"), key=lambda s: s.start_time or 0)
    assert [r.attributes["shopjobs.outcome"] for r in runs] == ["retried", "completed"]
    assert [r.attributes["shopjobs.attempt"] for r in runs] == [1, 2]
    assert {r.context.trace_id for r in runs} == {trace_id}
    assert {parent_of(r) for r in runs} == {enqueue.context.span_id}
    assert enqueue.attributes["shopjobs.source"] == "app"
    assert len(named(spans, "queue wait flaky")) == 1  # created -> first start, once


async def test_a_waiting_run_is_suspended_and_its_resumption_joins_the_trace(
    spans: InMemorySpanExporter,
    database: Database,
    redis: ArqRedis,
    runtime: Runtime,  # noqa: F811
) -> None:
    nap = JobType(name="napper", handler=napper, input_model=NapInput)
    runtime = dataclasses.replace(runtime, types={nap.name: nap})
    shop = await make_shop(database, SHOP)
    jobs = await _client(runtime, database, redis)
    with tracing.span("app route") as route:
        assert route is not None
        enqueued = await jobs.enqueue("napper", shop=shop.domain, input={"seconds": 0.3})

    assert await run_due(runtime, nap) == [str(enqueued.id)]
    await asyncio.sleep(0.4)  # the sleep is timed by the clock, not by the queue's score
    assert await run_due(runtime, nap, ahead=1) == [str(enqueued.id)]

    runs = sorted(named(spans, "run napper"), key=lambda s: s.start_time or 0)
    assert [r.attributes["shopjobs.outcome"] for r in runs] == ["suspended", "completed"]
    assert runs[1].attributes["shopjobs.resumed"] != ""
    assert {r.context.trace_id for r in runs} == {route.get_span_context().trace_id}
    assert all(r.status.status_code is not StatusCode.ERROR for r in runs)


@pytest.fixture
def shopify(emulator):  # type: ignore[no-untyped-def]
    return emulator(shops={SHOP: "shpat_traced"}, bucket_size=1000, restore_rate=1000)


async def test_admin_api_calls_are_spans_under_the_run(
    spans: InMemorySpanExporter,
    shopify: Any,
    settings: Settings,
    database: Database,
    redis: ArqRedis,
    runtime: Runtime,  # noqa: F811
) -> None:
    async def shop_name(ctx: JobContext, data: FlakyInput) -> dict[str, Any]:
        data_ = await ctx.admin.graphql("{ shop { name } }")
        return {"name": data_["shop"]["name"]}

    caller = JobType(name="shop_name", handler=shop_name, input_model=FlakyInput)
    configured = settings.model_copy(update={"shopify_admin_url": shopify.url})
    admin = runtime.resources.admin
    assert admin is not None
    admin.settings = configured
    runtime = dataclasses.replace(runtime, types={caller.name: caller})
    await store.upsert_shop(database, SHOP, "shpat_traced", "read_products")
    jobs = await _client(runtime, database, redis)
    enqueued = await jobs.enqueue("shop_name", shop=SHOP, input={"failures": 0})

    assert await run_due(runtime, caller) == [str(enqueued.id)]

    run = one(spans, "run shop_name")
    call = one(spans, "shopify.admin.graphql")
    assert run.attributes["shopjobs.outcome"] == "completed"
    assert parent_of(call) == run.context.span_id
    assert call.kind is SpanKind.CLIENT and call.attributes["shopjobs.shop"] == SHOP
