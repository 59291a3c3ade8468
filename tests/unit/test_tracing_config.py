"""service/core/tracing.py without servers: switching on from OTEL_* variables, a missing SDK,
how spans end (an error, a wait), and the trace context a job row keeps."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from service.core import tracing
from service.core.waits import Suspend, WaitFor


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use(provider)
    yield exporter
    tracing.use(None)


def test_a_missing_sdk_leaves_traces_off_with_one_line(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)  # import fails
    with caplog.at_level(logging.WARNING, "shopjobs.tracing"):
        assert not tracing.configure("test", {"OTEL_TRACES_EXPORTER": "console"})
    assert not tracing.enabled()
    assert [r.getMessage() for r in caplog.records] == [
        "OTEL_* asks for traces, but opentelemetry-sdk is not installed: off"
    ]


def test_configured_from_the_environment() -> None:
    try:
        assert not tracing.configure("test", {})
        assert tracing.configure("test", {"OTEL_TRACES_EXPORTER": "console"})
        assert tracing.enabled()
    finally:
        tracing.use(None)


def test_the_carrier_is_the_w3c_context_of_the_current_span(
    spans: InMemorySpanExporter,
) -> None:
    assert tracing.carrier() is None  # no span: nothing to keep
    with tracing.span("outer") as outer:
        assert outer is not None
        kept = tracing.carrier()
    assert kept is not None
    fields = orjson.loads(kept)
    context = outer.get_span_context()
    # version, trace id, parent id, then the flags (sampled; the SDK may add "random")
    assert fields["traceparent"].startswith(f"00-{context.trace_id:032x}-{context.span_id:016x}-")
    with tracing.span("later, elsewhere", parent=kept):
        pass
    later = spans.get_finished_spans()[-1]
    assert later.parent is not None and later.parent.span_id == context.span_id
    with tracing.span("garbage kept", parent="not json"):
        pass  # a damaged column starts a trace of its own, it never fails a run


def test_an_error_marks_the_span_and_a_wait_does_not(spans: InMemorySpanExporter) -> None:
    with pytest.raises(RuntimeError), tracing.span("fails"):
        raise RuntimeError("boom")
    wait = Suspend(WaitFor.BULK_OPERATION, name="gid://1", until=None,
                   look_again=datetime.now(UTC))  # fmt: skip
    with pytest.raises(Suspend), tracing.span("shopify.bulk_operation"):
        raise wait
    failed, waited = spans.get_finished_spans()
    assert failed.status.status_code is StatusCode.ERROR
    assert [e.name for e in failed.events] == ["exception"]
    assert waited.status.status_code is StatusCode.UNSET
    assert waited.attributes["shopjobs.suspended"] is True


def test_an_interval_has_the_times_it_is_given(spans: InMemorySpanExporter) -> None:
    start = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
    tracing.interval("queue wait echo", start, start + timedelta(seconds=2.5), {}, parent=None)
    (wait,) = spans.get_finished_spans()
    assert wait.end_time - wait.start_time == 2_500_000_000
