"""Test data for the LLM layer: real OpenAI SDK calls, real instrumentation, real collector rows, in chDB.

The openai SDK talks to the fake server through its in-process transport; llmtap's instrumentation records one
span per call into an in-memory exporter; the spans are encoded as the OTLP request an exporter would send
and turned into otel_traces rows by the collector's own converter (llmtap.collector.rows), then inserted, so
the materialized views fire exactly as they do under ``llmtap serve``. Expected values for the assertions are
computed in Python from the spans themselves.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any

import openai
from llmtap.clickhouse.prices import BUNDLED_PRICES, ModelPrice, read_prices
from llmtap.collector.rows import TRACES_TABLE, Batch, add_request
from llmtap.fake_openai.transport import http_client_class, sync_transport
from llmtap.instrumentation import context
from llmtap.instrumentation.instrumentor import OpenAIInstrumentor
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import StatusCode

SERVICES = (("chat-api", "team-a"), ("batch-worker", "team-b"))


@dataclass(frozen=True)
class Call:
    """What the tests expect of one stored call, read from its span."""

    span_id: str
    trace_id: str
    start_ns: int
    duration_ns: int
    project: str
    service: str
    operation: str
    model: str
    is_error: bool
    error_type: str
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    reasoning_tokens: int
    is_stream: bool
    user_id: str
    session_id: str
    tags: tuple[str, ...]
    attributes: dict[str, str]
    metadata: dict[str, str]
    input_messages: str
    output_messages: str
    finish_reasons: tuple[str, ...] = field(default=())

    @property
    def duration_ms(self) -> float:
        return self.duration_ns / 1e6

    @property
    def timestamp(self) -> datetime:
        # Truncated to the microsecond, as a Python datetime (and so a --since/--until bound) holds it.
        return datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=self.start_ns // 1000)


def _workload(client: openai.OpenAI, service: str) -> None:
    """A varied day of one service: models, streams, errors, embeddings, users, sessions, tags, attributes."""
    if service == "chat-api":
        with context.attributes(user_id="u1", session_id="s1", tags=["prod", "beta"], feature="search"):
            for question in ("What is ClickHouse?", "Explain OTLP briefly.", "Name a columnar database."):
                client.chat.completions.create(  # a dated response model, as OpenAI returns them
                    model="gpt-4o-mini-2024-07-18", messages=[{"role": "user", "content": question}]
                )
            _fail(client, "gpt-4o", 429)
        with context.attributes(user_id="u2", tags=["prod"], feature="chat"):
            for _ in range(2):
                stream = client.chat.completions.create(
                    model="gpt-4o",
                    messages=[
                        {"role": "system", "content": "Be brief."},
                        {"role": "user", "content": "Hi there"},
                    ],
                    stream=True,
                    stream_options={"include_usage": True},
                )
                for _chunk in stream:
                    pass
            client.chat.completions.create(
                model="gpt-4o",
                messages=[{"role": "user", "content": "ticket"}],
                metadata={"ticket": "T-1"},
                store=True,
            )
        client.embeddings.create(model="text-embedding-3-small", input="embed me please")
        client.chat.completions.create(
            model="house-model-7b", messages=[{"role": "user", "content": "unpriced"}]
        )
    else:
        with context.attributes(user_id="u3", session_id="s9", tags=["nightly"], job="summaries"):
            for index in range(3):
                client.chat.completions.create(
                    model="gpt-4.1-mini",
                    messages=[
                        {"role": "user", "content": f"Summarise document {index} " + "lorem ipsum " * 40}
                    ],
                    extra_headers={"x-fake-cached-tokens": str(64 * index)},
                )
            _fail(client, "gpt-4.1-mini", 500)
            client.responses.create(  # five-digit token counts
                model="o4-mini",
                input="Think about prime numbers " + "prime " * 12_000,
                extra_headers={"x-fake-reasoning-tokens": "6789"},
            )


def _fail(client: openai.OpenAI, model: str, status: int) -> None:
    try:
        client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "fail"}],
            extra_headers={"x-fake-status": str(status)},
        )
    except openai.APIStatusError:
        pass
    else:
        raise AssertionError(f"the fake server did not fail with {status}")


def record_spans(id_generator: IdGenerator | None = None) -> list[ReadableSpan]:
    """Run the workload of every service under real instrumentation; the finished spans, oldest first (their
    ids from ``id_generator`` when given, else random)."""
    spans: list[ReadableSpan] = []
    for service, project in SERVICES:
        exporter = InMemorySpanExporter()
        provider = TracerProvider(
            resource=Resource({"service.name": service, "service.namespace": project}),
            id_generator=id_generator,
        )
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        instrumentor = OpenAIInstrumentor()
        instrumentor.instrument(tracer_provider=provider, capture_content=True)
        try:
            http_client = http_client_class()(transport=sync_transport())
            client = openai.OpenAI(
                base_url="http://fake/v1", api_key="x", http_client=http_client, max_retries=0
            )
            _workload(client, service)
            # A span that is not an LLM call, and an agent span: neither belongs in llm_calls.
            tracer = provider.get_tracer("app")
            with tracer.start_as_current_span("GET /health"):
                pass
            with tracer.start_as_current_span(
                "invoke_agent helper", attributes={"gen_ai.operation.name": "invoke_agent"}
            ):
                pass
        finally:
            instrumentor.uninstrument()
        spans.extend(exporter.get_finished_spans())
    return spans


def insert_spans(
    client: Any, spans: list[ReadableSpan], *, old_status_spelling: set[str] = frozenset()
) -> int:
    """Insert the spans as the collector would (optionally with the old exporter's STATUS_CODE_ERROR)."""
    batch = Batch()
    rows = add_request(batch, "traces", encode_spans(spans).SerializeToString())
    columns = batch.table(TRACES_TABLE)
    columns["StatusCode"] = [
        "STATUS_CODE_ERROR" if span_id in old_status_spelling and status == "Error" else status
        for span_id, status in zip(columns["SpanId"], columns["StatusCode"], strict=True)
    ]
    names = list(columns)
    # A token of its own, as each batch of serve has: tests insert the same spans twice on purpose, which the
    # store would otherwise take for a retry of one batch and drop (migration 0017).
    settings = {"insert_deduplication_token": uuid.uuid4().hex}
    client.insert(
        TRACES_TABLE, [columns[n] for n in names], column_names=names, column_oriented=True, settings=settings
    )
    return rows


def expected_calls(spans: list[ReadableSpan]) -> list[Call]:
    """The llm_calls rows these spans should produce, derived in Python from the span attributes."""
    calls = []
    for span in spans:
        attrs = dict(span.attributes or {})
        operation = str(attrs.get("gen_ai.operation.name", ""))
        if not operation or operation in ("invoke_agent", "create_agent", "execute_tool"):
            continue
        resource = span.resource.attributes
        calls.append(
            Call(
                span_id=f"{span.context.span_id:016x}",
                trace_id=f"{span.context.trace_id:032x}",
                start_ns=span.start_time,
                duration_ns=span.end_time - span.start_time,
                project=str(resource.get("service.namespace", "")),
                service=str(resource.get("service.name", "")),
                operation=operation,
                model=str(attrs.get("gen_ai.response.model") or attrs.get("gen_ai.request.model") or ""),
                is_error=span.status.status_code == StatusCode.ERROR,
                error_type=str(attrs.get("error.type", "")),
                input_tokens=int(attrs.get("gen_ai.usage.input_tokens", 0)),
                output_tokens=int(attrs.get("gen_ai.usage.output_tokens", 0)),
                cached_tokens=int(attrs.get("gen_ai.usage.cache_read.input_tokens", 0)),
                reasoning_tokens=int(attrs.get("gen_ai.usage.reasoning.output_tokens", 0)),
                is_stream=bool(attrs.get("gen_ai.request.stream", False)),
                user_id=str(attrs.get("user.id", "")),
                session_id=str(attrs.get("session.id", "")),
                tags=tuple(attrs.get("llmtap.tags", ())),
                attributes={
                    k[len("llmtap.attr.") :]: str(v) for k, v in attrs.items() if k.startswith("llmtap.attr.")
                },
                metadata={
                    k[len("llmtap.metadata.") :]: str(v)
                    for k, v in attrs.items()
                    if k.startswith("llmtap.metadata.")
                },
                input_messages=str(attrs.get("gen_ai.input.messages", "")),
                output_messages=str(attrs.get("gen_ai.output.messages", "")),
                finish_reasons=tuple(attrs.get("gen_ai.response.finish_reasons", ())),
            )
        )
    return calls


def quantile(values: list[float], level: float) -> float:
    """ClickHouse ``quantiles`` on fewer than 8192 values: exact, linear interpolation between neighbours."""
    ordered = sorted(values)
    position = level * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def price_of(model: str, day: date, prices: list[ModelPrice]) -> ModelPrice | None:
    """The price in force: the model's own rows, else those of its name without a dated-snapshot suffix."""
    import re

    names = {p.model for p in prices}
    key = model if model in names else re.sub(r"-(\d{4}-\d{2}-\d{2}|\d{4})$", "", model)
    rows = sorted((p for p in prices if p.model == key and p.valid_from <= day), key=lambda p: p.valid_from)
    return rows[-1] if rows else None


def cost_of(call: Call, prices: list[ModelPrice] | None = None) -> float | None:
    price = price_of(
        call.model, call.timestamp.date(), prices if prices is not None else read_prices(BUNDLED_PRICES)
    )
    if price is None:
        return None
    cached = min(call.cached_tokens, call.input_tokens)
    return (
        (call.input_tokens - cached) * price.input_per_million
        + cached * price.cached_input_per_million
        + call.output_tokens * price.output_per_million
    ) / 1e6
