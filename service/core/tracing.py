"""OpenTelemetry traces: one trace from the request that creates a job to its last run.

Off unless the standard OpenTelemetry variables ask for traces (docs/operations.md):
`OTEL_TRACES_EXPORTER` set to anything but `none`, or an OTLP endpoint
(`OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`); `OTEL_SDK_DISABLED=true`
turns them off again. The packages are an optional extra (`pip install shopjobs[otel]`): when
traces are asked for but the packages are missing, the process says so in one log line and runs
without them. When off, every function here returns at its first line: no imports, no spans,
no extra Postgres statement.

What is traced, and why each part is where it is:
- every HTTP request of the web (`TracedRequests`), continuing a caller's `traceparent`;
- `enqueue <type>` around the creation of a job (service/intake.py), whatever asked for it:
  the storefront proxy, the merchant API, a webhook, JobsClient.enqueue, a handler;
- the job row keeps the W3C trace context current at its creation (`jobs.trace_context`,
  migration 0004), because a run may happen in another process, after a retry's backoff or a
  wait of a day, long after any in-memory context is gone: every run reads it back;
- `queue wait <type>` from created_at to the first start, and `run <type>` for each run with
  its attempt and outcome (`completed`, `retried`, `suspended`, ...; jobs/worker/runner.py);
- `shopify.admin.graphql` for each Admin API call and `shopify.bulk_operation` for each bulk
  operation under the run (service/shopify/admin.py).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson

from service.core.waits import Suspend

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

logger = logging.getLogger("shopjobs.tracing")

INSTRUMENTATION = "shopjobs"
Attributes = Mapping[str, str | int | float | bool]

_tracer: Tracer | None = None
_provider: TracerProvider | None = None


def wanted(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the environment asks for traces, in OpenTelemetry's own variables."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return exporter != "none"
    return bool(
        environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def enabled() -> bool:
    return _tracer is not None


def configure(service_name: str, environ: Mapping[str, str] = os.environ) -> bool:
    """Start tracing for this process if the environment asks for it; whether it is on.

    Called once at start by the web and the worker. The exporters named by
    OTEL_TRACES_EXPORTER (comma-separated: `otlp`, the default, and `console`) each get a
    batch span processor; OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES are read by the SDK.
    """
    if _tracer is not None or not wanted(environ):
        return _tracer is not None
    try:
        from opentelemetry.sdk.resources import OTELResourceDetector, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
    except ImportError:
        logger.warning("OTEL_* asks for traces, but opentelemetry-sdk is not installed: off")
        return False
    resource = Resource.create({"service.name": service_name}).merge(
        OTELResourceDetector().detect()
    )
    provider = TracerProvider(resource=resource)
    names = environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() or "otlp"
    for name in (n.strip() for n in names.split(",")):
        exporter: SpanExporter
        if name == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            exporter = ConsoleSpanExporter()
        elif name == "otlp":
            try:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                    OTLPSpanExporter,
                )
            except ImportError:
                logger.warning("OTLP traces asked for, but the OTLP exporter is not installed")
                continue
            exporter = OTLPSpanExporter()  # its endpoint and headers from OTEL_EXPORTER_OTLP_*
        else:
            logger.warning("OTEL_TRACES_EXPORTER=%s is not supported here: ignored", name)
            continue
        provider.add_span_processor(BatchSpanProcessor(exporter))
    use(provider)
    logger.info("OpenTelemetry traces on (%s)", names)
    return True


def use(provider: TracerProvider | None) -> None:
    """Trace through `provider` (None: stop tracing). `configure` calls it; tests give one
    with an in-memory exporter."""
    global _tracer, _provider
    _provider = provider
    _tracer = None if provider is None else provider.get_tracer(INSTRUMENTATION)


def flush() -> None:
    """Export the spans still batched, at a process's orderly stop (the SDK's own exit hook
    shuts the provider down after)."""
    if _provider is not None:
        _provider.force_flush()


def _parent(carrier: str | None) -> Context | None:
    if not carrier:
        return None
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    try:
        fields = orjson.loads(carrier)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(fields, dict):
        return None
    return TraceContextTextMapPropagator().extract({str(k): str(v) for k, v in fields.items()})


def carrier() -> str | None:
    """The current span's W3C trace context (`traceparent`, `tracestate`) as JSON text, for the
    job row; None when off or outside any span."""
    if _tracer is None:
        return None
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    fields: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(fields)
    return orjson.dumps(fields).decode() if fields else None


@contextmanager
def span(
    name: str,
    attributes: Attributes | None = None,
    *,
    parent: str | None = None,
    kind: str = "INTERNAL",
) -> Iterator[Span | None]:
    """A span around the block, child of the current one (or of the stored `parent` carrier);
    None when off. An exception leaving the block is recorded on it, a Suspend excepted (it is
    how a run waits, not an error)."""
    if _tracer is None:
        yield None
        return
    from opentelemetry.trace import SpanKind, Status, StatusCode

    with _tracer.start_as_current_span(
        name,
        context=_parent(parent),
        kind=SpanKind[kind],
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as current:
        try:
            yield current
        except BaseException as exc:
            if isinstance(exc, Suspend):
                current.set_attribute("shopjobs.suspended", True)
            elif isinstance(exc, Exception):
                current.record_exception(exc)
                current.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise


def interval(
    name: str, start: datetime, end: datetime, attributes: Attributes, *, parent: str | None
) -> None:
    """A span that already happened (a job's queue wait), from its two timestamps."""
    if _tracer is None:
        return
    began = int(start.timestamp() * 1e9)
    done = _tracer.start_span(
        name, context=_parent(parent), attributes=attributes, start_time=began
    )
    done.end(end_time=max(began, int(end.timestamp() * 1e9)))


def set_outcome(current: Span | None, outcome: str, failed: bool = False) -> None:
    """Name how a run ended on its span (`shopjobs.outcome`); a failed one's status is ERROR."""
    if current is None:
        return
    current.set_attribute("shopjobs.outcome", outcome)
    if failed:
        from opentelemetry.trace import Status, StatusCode

        current.set_status(Status(StatusCode.ERROR, outcome))


class TracedRequests:
    """ASGI middleware: a SERVER span per HTTP request while tracing is on (one check when off),
    continuing the caller's `traceparent`: the parent of a request's `enqueue` span."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if _tracer is None or scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        incoming = {k: headers[k] for k in ("traceparent", "tracestate") if k in headers}
        method = scope["method"]
        status: list[int] = []

        async def send_status(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status.append(int(message["status"]))
            await send(message)

        with span(
            method,  # semantic conventions: the route template, unknown here, or the method alone
            {"http.request.method": method, "url.path": scope["path"]},
            parent=orjson.dumps(incoming).decode() if incoming else None,
            kind="SERVER",
        ) as current:
            await self.app(scope, receive, send_status)
            if current is not None and status:
                current.set_attribute("http.response.status_code", status[0])
