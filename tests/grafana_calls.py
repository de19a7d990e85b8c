"""LLM calls for the Grafana query tests, stored the way production stores them.

Most calls are real: the openai SDK talks to the fake OpenAI server (in-process transport) with llmtap's
instrumentation on, and the finished spans are encoded with the OTLP exporter's own encoder, converted to rows by
the collector (`llmtap.collector.rows`) and inserted into chDB, where the migrations' materialized views fill
llm_calls and the rollup. Each recorded trace is then replayed at a planned moment of the last six hours (its
span times shifted together), so the charts have a history and the alert windows hold exactly what a test
expects.

A few calls the fake server cannot produce (a model taking six seconds, answers that say "I'm not sure") are
built with the OpenTelemetry SDK using the same semantic-convention attributes, and go through the same path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import openai
from llmtap.collector import rows
from llmtap.fake_openai.transport import http_client_class, sync_transport
from llmtap.instrumentation.instrumentor import OpenAIInstrumentor
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

import llmtap

MINUTE = 60 * 1_000_000_000


@dataclass(frozen=True)
class Service:
    name: str
    project: str


CHECKOUT = Service("checkout", "shop")
SEARCH = Service("search", "shop")
SUPPORT = Service("support-bot", "helpdesk")


@dataclass(frozen=True)
class Planned:
    """A call to make (`make(client)`) and how many minutes before `now` it is replayed."""

    minutes_ago: float
    make: Callable[[openai.OpenAI], Any]


def _chat(model: str, text: str, **extra: Any) -> Callable[[openai.OpenAI], Any]:
    def make(client: openai.OpenAI) -> Any:
        messages = [
            {"role": "system", "content": "You are a concise assistant."},
            {"role": "user", "content": text},
        ]
        return client.chat.completions.create(model=model, messages=messages, **extra)

    return make


def _stream(model: str, text: str) -> Callable[[openai.OpenAI], Any]:
    def make(client: openai.OpenAI) -> Any:
        stream = client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": text}],
            stream=True,
            stream_options={"include_usage": True},
        )
        return [chunk for chunk in stream]

    return make


def _embed(text: str) -> Callable[[openai.OpenAI], Any]:
    return lambda client: client.embeddings.create(model="text-embedding-3-small", input=text)


def _failing(model: str, status: int) -> Callable[[openai.OpenAI], Any]:
    def make(client: openai.OpenAI) -> Any:
        try:
            _chat(model, "This one fails.", extra_headers={"x-fake-status": str(status)})(client)
        except openai.APIStatusError:
            return None
        raise AssertionError(f"the fake server was asked for HTTP {status}")

    return make


def _spread(count: int, newest: float, oldest: float = 350.0) -> list[float]:
    """`count` moments evenly between `oldest` and `newest` minutes ago."""
    step = (oldest - newest) / max(count - 1, 1)
    return [oldest - i * step for i in range(count)]


# What each service does. Kept in the alert windows (the last 5 minutes) on purpose:
#  * checkout: healthy traffic and one call whose prompt carries an e-mail address (redacted);
#  * search: traffic that stops 20 minutes ago (the "calls stopped" rule);
#  * support-bot: recent traffic with one failure in ten (error rate 10 %).
PLAN: dict[Service, list[Planned]] = {
    CHECKOUT: [
        *(Planned(m, _chat("gpt-4o-mini", "Where is my order?")) for m in _spread(10, newest=6)),
        *(Planned(m, _stream("gpt-4o-mini", "Summarise my basket.")) for m in _spread(6, newest=15)),
        *(Planned(m, _failing("gpt-4o-mini", 500)) for m in (300, 200, 45)),
        Planned(120, _failing("gpt-4o-mini", 429)),
        Planned(2, _chat("gpt-4o-mini", "My email is jane.doe@example.com, please send the invoice.")),
        *(Planned(m, _chat("gpt-4o-mini", "Any discount today?")) for m in (4, 3, 1)),
        *(Planned(m, _embed("red running shoes")) for m in _spread(4, newest=30)),
    ],
    SEARCH: [
        *(Planned(m, _embed("blue jacket")) for m in _spread(8, newest=20, oldest=340)),
        *(Planned(m, _chat("gpt-4o", "Rank these results.")) for m in _spread(5, newest=25)),
    ],
    SUPPORT: [
        *(Planned(m, _chat("gpt-4o-mini", "How do I reset my password?")) for m in _spread(8, newest=40)),
        *(
            Planned(m, _chat("gpt-4o-mini", "Is the service down?"))
            for m in (4.5, 4, 3.5, 3, 2.5, 2, 1.5, 1, 0.5)
        ),
        Planned(3.2, _failing("gpt-4o-mini", 503)),
        *(Planned(m, _stream("gpt-4o", "Explain the refund policy.")) for m in _spread(4, newest=50)),
    ],
}

USER_OF = {CHECKOUT: "user-1", SEARCH: "user-2", SUPPORT: "user-3"}
TAGS_OF = {CHECKOUT: ["beta", "web"], SEARCH: ["web"], SUPPORT: ["beta", "chat"]}


@contextmanager
def _instrumented(service: Service) -> Iterator[tuple[InMemorySpanExporter, Any]]:
    """llmtap's OpenAI instrumentation recording into memory for `service` (content on, redaction on), and a
    tracer of the same provider for the application's own request spans (the parents of the LLM spans)."""
    resource = Resource.create({"service.name": service.name, "service.namespace": service.project})
    provider = TracerProvider(resource=resource)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=provider, capture_content=True, redact=True)
    try:
        yield exporter, provider.get_tracer("tests.grafana.app")
    finally:
        instrumentor.uninstrument()
        provider.shutdown()


def _shift(request: Any, offsets: dict[bytes, int]) -> None:
    """Move every span (and its events) of each trace by that trace's offset in nanoseconds."""
    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                offset = offsets[span.trace_id]
                span.start_time_unix_nano += offset
                span.end_time_unix_nano += offset
                for event in span.events:
                    event.time_unix_nano += offset


def instrumented_requests(now: datetime) -> list[Any]:
    """OTLP export requests of every planned call, recorded by the real instrumentation and replayed in time."""
    now_ns = int(now.timestamp() * 1e9)
    requests = []
    for service, plan in PLAN.items():
        with _instrumented(service) as (exporter, app_tracer):
            http_client = http_client_class()(transport=sync_transport())
            client = openai.OpenAI(
                base_url="http://fake/v1", api_key="sk-test", max_retries=0, http_client=http_client
            )
            for index, planned in enumerate(plan):
                with (
                    app_tracer.start_as_current_span(f"handle {service.name} request", kind=SpanKind.SERVER),
                    llmtap.attributes(
                        user_id=USER_OF[service],
                        session_id=f"session-{index % 3 + 1}",
                        tags=TAGS_OF[service],
                        plan="pro" if index % 2 else "free",
                    ),
                ):
                    planned.make(client)
            spans = exporter.get_finished_spans()
        request = encode_spans(spans)
        _shift(request, _offsets(spans, [planned.minutes_ago for planned in plan], now_ns))
        requests.append(request)
    return requests


def _offsets(spans: Sequence[ReadableSpan], minutes_ago: Sequence[float], now_ns: int) -> dict[bytes, int]:
    """Per trace id: the shift that moves the trace's first span to its planned moment (traces in call order)."""
    starts: dict[int, int] = {}
    for span in spans:
        trace_id = span.context.trace_id
        starts[trace_id] = min(starts.get(trace_id, span.start_time), span.start_time)
    ordered = sorted(starts, key=starts.__getitem__)
    assert len(ordered) == len(minutes_ago), (len(ordered), len(minutes_ago))
    return {
        trace_id.to_bytes(16, "big"): now_ns - int(minutes * MINUTE) - starts[trace_id]
        for trace_id, minutes in zip(ordered, minutes_ago, strict=True)
    }


# --- calls the fake server cannot make -----------------------------------------------------------------------

UNCERTAIN_ANSWER = "I'm not sure, but the refund may take a few days."
SURE_ANSWER = "Refunds take three business days."


def _output_messages(text: str) -> str:
    import json

    return json.dumps(
        [{"role": "assistant", "parts": [{"type": "text", "content": text}], "finish_reason": "stop"}]
    )


def built_requests(now: datetime) -> list[Any]:
    """Scenario calls built with the OTel SDK and the GenAI attributes llmtap's instrumentation sets:
    checkout's gpt-4o taking 6-8 s in the last five minutes, and support-bot's gpt-4o-mini answers turning
    uncertain (1 in 20 before the last half hour, 6 in 12 within it) while its gpt-4o stays sure."""
    requests = []
    scenarios = {
        CHECKOUT: [(m, "gpt-4o", seconds, SURE_ANSWER) for m, seconds in ((4, 6.0), (3, 7.5), (1, 8.0))],
        SUPPORT: [
            *((m, "gpt-4o-mini", 0.8, UNCERTAIN_ANSWER if i == 0 else SURE_ANSWER)
              for i, m in enumerate(_spread(20, newest=40, oldest=300))),
            *((m, "gpt-4o-mini", 0.8, UNCERTAIN_ANSWER if i % 2 else SURE_ANSWER)
              for i, m in enumerate(_spread(12, newest=8, oldest=28))),
            # a steady model next to it: as sure as ever, so the rule must leave it alone
            *((m, "gpt-4o", 1.2, SURE_ANSWER) for m in (*_spread(12, newest=40), *_spread(12, newest=6, oldest=28))),
        ],
    }  # fmt: skip
    now_ns = int(now.timestamp() * 1e9)
    for service, calls in scenarios.items():
        resource = Resource.create({"service.name": service.name, "service.namespace": service.project})
        provider = TracerProvider(resource=resource)
        exporter = InMemorySpanExporter()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        tracer = provider.get_tracer("llmtap.instrumentation")
        for minutes, model, seconds, answer in calls:
            start = now_ns - int(minutes * MINUTE)
            span = tracer.start_span(f"chat {model}", kind=SpanKind.CLIENT, start_time=start)
            span.set_attributes(
                {
                    "gen_ai.operation.name": "chat",
                    "gen_ai.provider.name": "openai",
                    "gen_ai.request.model": model,
                    "gen_ai.response.model": model,
                    "gen_ai.usage.input_tokens": 42,
                    "gen_ai.usage.output_tokens": len(answer.split()),
                    "gen_ai.response.finish_reasons": ["stop"],
                    "gen_ai.input.messages": '[{"role": "user", "parts": [{"type": "text", "content": "Refund?"}]}]',
                    "gen_ai.output.messages": _output_messages(answer),
                    "user.id": USER_OF[service],
                    "llmtap.tags": TAGS_OF[service],
                }
            )
            span.set_status(Status(StatusCode.OK))
            span.end(end_time=start + int(seconds * 1e9))
        provider.shutdown()
        requests.append(encode_spans(exporter.get_finished_spans()))
    return requests


def load(client: Any, requests: Sequence[Any]) -> int:
    """Convert export requests with the collector's row conversion and insert them; returns the span count."""
    batch = rows.Batch()
    count = sum(rows.add_traces(batch, request) for request in requests)
    columns = batch.table(rows.TRACES_TABLE)
    names = list(columns)
    client.insert(rows.TRACES_TABLE, [columns[n] for n in names], column_names=names, column_oriented=True)
    return count


def now_utc() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0) - timedelta(seconds=1)
