"""Shared by the instrumentation tests: in-memory OTel pipeline, instrumented-vs-plain runs, span checks."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from fake_openai_helpers import open_client
from llmtap.instrumentation import OpenAIInstrumentor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

# Ids and timestamps differ between two runs of the same request; everything else must be identical.
_VOLATILE = frozenset({"id", "created", "created_at", "completed_at", "call_id", "item_id", "response_id"})
CONTENT_ATTRIBUTES = (
    "gen_ai.input.messages",
    "gen_ai.output.messages",
    "gen_ai.system_instructions",
    "gen_ai.tool.definitions",
)


@dataclass
class Pipeline:
    """An SDK tracer/meter provider pair writing to memory, and the instrumentor bound to them."""

    exporter: InMemorySpanExporter = field(default_factory=InMemorySpanExporter)
    reader: InMemoryMetricReader = field(default_factory=InMemoryMetricReader)

    def __post_init__(self) -> None:
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def instrument(self, **options: Any) -> None:
        instrumentor = OpenAIInstrumentor()
        if instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.uninstrument()
        options.setdefault("capture_content", True)
        instrumentor.instrument(
            tracer_provider=self.tracer_provider, meter_provider=self.meter_provider, **options
        )
        self.exporter.clear()

    @staticmethod
    def uninstrument() -> None:
        instrumentor = OpenAIInstrumentor()
        if instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.uninstrument()

    def spans(self) -> tuple[ReadableSpan, ...]:
        return self.exporter.get_finished_spans()

    def one_span(self) -> ReadableSpan:
        spans = self.spans()
        assert len(spans) == 1, [s.name for s in spans]
        return spans[0]

    def metric_points(self, name: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        points = []
        for resource_metrics in data.resource_metrics if data else ():
            for scope in resource_metrics.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        points.extend(metric.data.data_points)
        return points


def normalize(value: Any) -> Any:
    """An SDK result as plain data without per-request ids and timestamps."""
    if hasattr(value, "model_dump"):
        value = value.model_dump(warnings=False)
    if isinstance(value, dict):
        return {k: normalize(v) for k, v in value.items() if k not in _VOLATILE}
    if isinstance(value, (list, tuple)):
        return [normalize(v) for v in value]
    return value


Scenario = Callable[[Any], Awaitable[Any]]


async def outcome(kind: str, base_url: str, scenario: Scenario) -> tuple[Any, ...]:
    """Run ``scenario`` on a fresh client: ("ok", normalized result) or ("error", type, message, partial)."""
    async with open_client(kind, base_url) as client:
        partial: list[Any] = []
        try:
            return ("ok", normalize(await scenario(client, partial)))
        except Exception as error:  # the comparison is the point: same type, same message
            return ("error", type(error), str(error), normalize(partial))


async def compare(pipeline: Pipeline, kind: str, base_url: str, scenario: Scenario, **options: Any) -> tuple:
    """The scenario uninstrumented, then instrumented: the app must not see any difference."""
    pipeline.uninstrument()
    plain = await outcome(kind, base_url, scenario)
    pipeline.instrument(**options)
    try:
        traced = await outcome(kind, base_url, scenario)
    finally:
        pipeline.uninstrument()
    assert traced == plain
    return traced


def check_span(
    span: ReadableSpan,
    operation: str,
    model: str,
    *,
    stream: bool | None = None,
    error: str | None = None,
    server: str = "127.0.0.1",
) -> dict[str, Any]:
    """The span shape every call form must produce; returns the attributes for call-specific checks."""
    attrs = dict(span.attributes or {})
    assert span.kind is SpanKind.CLIENT
    assert span.name == f"{operation} {model}"
    assert span.end_time is not None and span.end_time >= span.start_time
    assert attrs["gen_ai.operation.name"] == operation
    assert attrs["gen_ai.provider.name"] == "openai"
    assert attrs["gen_ai.request.model"] == model
    assert attrs["server.address"] == server
    assert isinstance(attrs["server.port"], int)
    if stream is not None:
        assert attrs["gen_ai.request.stream"] is stream
    if error is None:
        assert span.status.status_code is StatusCode.UNSET, span.status
        assert "error.type" not in attrs
    else:
        assert span.status.status_code is StatusCode.ERROR
        assert attrs["error.type"] == error
    for key in CONTENT_ATTRIBUTES:
        if key in attrs:
            json.loads(attrs[key])
    for value in attrs.values():
        assert "test-key" not in str(value)  # the API key is never recorded
    return attrs


class AttributeWarnings(logging.Handler):
    """Collects the OTel SDK's warnings about invalid attribute values (None, dicts...)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())
