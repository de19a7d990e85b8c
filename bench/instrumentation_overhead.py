"""Added latency of llmtap's OpenAI instrumentation, per call and per streamed chunk.

The same chat call runs uninstrumented and instrumented in alternating batches (so machine noise hits both
alike), through the fake server's in-process transport (no sockets), with content capture and redaction on, an
SDK tracer provider with an in-memory exporter, and an SDK meter provider. Prints median microseconds:

* per call: instrumented minus plain, for a non-streamed chat completion;
* per chunk: iterating the chunks of a real streamed completion (kept in memory, so transport and SSE decoding
  noise stay out) through the stream proxy, minus iterating them plainly;
* end to end for a streamed completion, for context.

    python bench/instrumentation_overhead.py [--quick]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Callable

import openai
from llmtap.fake_openai.transport import http_client_class, sync_transport
from llmtap.instrumentation import OpenAIInstrumentor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

MESSAGES = [
    {"role": "system", "content": "You are a concise assistant for the support team of an online shop."},
    {
        "role": "user",
        "content": "My order 4417 arrived damaged. Write a short apology and offer a replacement. "
        "Reply to jane.doe@example.com, phone +1 415 555 0100.",
    },
]
CHUNKS = 200


def _client() -> openai.OpenAI:
    return openai.OpenAI(
        base_url="http://fake/v1",
        api_key="bench",
        max_retries=0,
        http_client=http_client_class()(transport=sync_transport()),
    )


def _timed(action: Callable[[], object], repeat: int) -> list[float]:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        samples.append(time.perf_counter() - start)
    return samples


def _alternate(
    action: Callable[[], object], rounds: int, batch: int, instrument: Callable[[bool], None]
) -> tuple:
    """Median seconds per action, (plain, instrumented), over alternating batches."""
    plain: list[float] = []
    traced: list[float] = []
    for _ in range(rounds):
        for enabled, into in ((False, plain), (True, traced)):
            instrument(enabled)
            gc.collect()
            into.extend(_timed(action, batch))
    instrument(False)
    return statistics.median(plain), statistics.median(traced)


class _ReplayStream:
    """Stands in for ``openai.Stream`` over chunks already received: what the proxy wraps, minus the network."""

    def __init__(self, chunks: list[object]) -> None:
        self._iterator = iter(chunks)

    def __iter__(self):  # type: ignore[no-untyped-def]
        yield from self._iterator

    def close(self) -> None:
        pass


def _per_chunk_seconds(client: openai.OpenAI, instrument: Callable[[bool], None], repeat: int) -> float:
    """Median added seconds per chunk of the stream proxy (accumulation, first-chunk time, span end)."""
    from llmtap.instrumentation import patching
    from llmtap.instrumentation.calls import server_of, start_call
    from llmtap.instrumentation.operations import CHAT
    from llmtap.instrumentation.streams import wrap_stream

    instrument(True)
    telemetry = patching.active_telemetry()
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, stream=True, extra_headers={"x-fake-chunks": str(CHUNKS)}
        )
    )
    request = {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True}
    plain, traced = [], []
    for _ in range(repeat):
        start = time.perf_counter()
        for _chunk in _ReplayStream(chunks):
            pass
        plain.append(time.perf_counter() - start)
        call = start_call(telemetry, CHAT, request, server_of(client))  # span start: per call, not per chunk
        proxy = wrap_stream(_ReplayStream(chunks), call, is_async=False)
        start = time.perf_counter()
        for _chunk in proxy:
            pass
        traced.append(time.perf_counter() - start)
    instrument(False)
    return (statistics.median(traced) - statistics.median(plain)) / len(chunks)


def _sdk_floor_seconds(
    client: openai.OpenAI, instrument: Callable[[bool], None], exporter, repeat: int
) -> float:
    """What the OpenTelemetry SDK alone costs for one such span and its three histogram points: the part of the
    overhead any OTel instrumentation pays, whatever it does."""
    from llmtap.instrumentation import patching

    instrument(True)
    exporter.clear()
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    span = exporter.get_finished_spans()[0]
    attributes = dict(span.attributes)
    telemetry = patching.active_telemetry()
    metric_attributes = {
        k: attributes[k]
        for k in (
            "gen_ai.operation.name",
            "gen_ai.provider.name",
            "gen_ai.request.model",
            "gen_ai.response.model",
            "server.address",
            "server.port",
        )
    }

    def sdk_only() -> None:
        telemetry.tracer.start_span(span.name, kind=span.kind, attributes=attributes).end()
        telemetry.record_metrics(metric_attributes, 0.5, 10, 20, None)

    samples = _timed(sdk_only, repeat)
    instrument(False)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="fewer iterations (a smoke run, noisier figures)"
    )
    args = parser.parse_args()
    rounds, batch = (6, 20) if args.quick else (30, 40)

    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    instrumentor = OpenAIInstrumentor()

    def instrument(enabled: bool) -> None:
        exporter.clear()
        if enabled and not instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.instrument(
                tracer_provider=tracer_provider,
                meter_provider=meter_provider,
                capture_content=True,
                redact=True,
            )
        elif not enabled and instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.uninstrument()

    client = _client()

    def chat() -> object:
        return client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    def stream(chunks: int) -> Callable[[], object]:
        headers = {"x-fake-chunks": str(chunks)}

        def consume() -> object:
            return sum(
                1
                for _ in client.chat.completions.create(
                    model="gpt-4o-mini", messages=MESSAGES, stream=True, extra_headers=headers
                )
            )

        return consume

    for warmup in (chat, stream(CHUNKS)):
        _alternate(warmup, 1, 5, instrument)

    plain, traced = _alternate(chat, rounds, batch, instrument)
    stream_plain, stream_traced = _alternate(stream(CHUNKS), rounds, max(2, batch // 4), instrument)
    per_chunk = _per_chunk_seconds(client, instrument, rounds * batch)
    sdk_floor = _sdk_floor_seconds(client, instrument, exporter, rounds * batch)

    print(f"rounds={rounds} batch={batch} (alternating plain/instrumented), content capture + redaction on")
    print(
        f"non-streamed call : plain {plain * 1e6:8.1f} us, instrumented {traced * 1e6:8.1f} us, "
        f"added {(traced - plain) * 1e6:7.1f} us per call ({traced / plain:.2f}x)"
    )
    print(f"  of which the OTel SDK itself (span + export + 3 histogram points): {sdk_floor * 1e6:.1f} us")
    print(
        f"streamed call     : plain {stream_plain * 1e6:8.1f} us, instrumented {stream_traced * 1e6:8.1f} us "
        f"for {CHUNKS} chunks ({stream_traced / stream_plain:.2f}x)"
    )
    print(f"added per streamed chunk: {per_chunk * 1e6:.2f} us")


if __name__ == "__main__":
    main()
