"""Added cost of llmtap's OpenAI instrumentation, per call and per streamed chunk.

The same chat call runs uninstrumented and instrumented in alternating blocks (which goes first alternates too,
so machine drift hits both alike), through the fake server's in-process transport (no sockets), with content
capture and redaction on, an SDK tracer provider with an in-memory exporter, and an SDK meter provider. Each call
is timed in CPU time of this process (on a shared machine wall time also counts the neighbours; wall medians are
shown for context). Prints, in microseconds:

* per call: instrumented minus plain, per round (blocks run moments apart), median and p90 over the rounds, for
  a non-streamed chat completion with the same prompt every call (a conversation's system prompt and history
  repeat, and redaction remembers strings it has seen) and with a new user message every call (nothing
  remembered);
* the OpenTelemetry SDK's own part: the plain call followed by the same span (same attributes) and the three
  histogram points made directly, minus the plain call: what any OTel instrumentation recording them pays;
* per chunk: iterating the chunks of a real streamed completion (kept in memory, so transport and SSE decoding
  noise stay out) through the stream proxy, minus iterating them plainly, as the slope between a long and a
  two-chunk stream (what each further chunk costs; the span's end is paid once per call);
* end to end for a streamed completion, for context.

    python bench/instrumentation_overhead.py [--quick]
"""

from __future__ import annotations

import argparse
import gc
import itertools
import time
from collections.abc import Callable

import openai
from _common import load_average, markdown_table, median, quantile, time_calls
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


Rounds = list[dict[bool, dict[str, list[int]]]]  # per round: instrumented? -> clock -> ns of each call


def _alternate(
    action: Callable[[], object],
    rounds: int,
    batch: int,
    instrument: Callable[[bool], None],
    instead: Callable[[], object] | None = None,
) -> Rounds:
    """Per round, a block of plain calls and a block of instrumented ones, the first of the two alternating.

    With ``instead``, the second block runs ``instead`` uninstrumented rather than ``action`` instrumented."""
    result: Rounds = []
    for round_index in range(rounds):
        blocks = {}
        for second in (False, True) if round_index % 2 == 0 else (True, False):
            instrument(second and instead is None)
            gc.collect()
            blocks[second] = time_calls(instead if second and instead else action, batch)
        result.append(blocks)
    instrument(False)
    return result


def _added_us(rounds: Rounds, q: float, clock: str = "cpu") -> float:
    """Median over rounds of (instrumented - plain) at quantile ``q`` of the round's calls, in µs."""
    return median([(quantile(r[True][clock], q) - quantile(r[False][clock], q)) / 1000 for r in rounds])


def _row(what: str, rounds: Rounds) -> list[object]:
    plain = median([quantile(r[False]["cpu"], 0.5) for r in rounds]) / 1000
    traced = median([quantile(r[True]["cpu"], 0.5) for r in rounds]) / 1000
    return [
        what,
        plain,
        traced,
        _added_us(rounds, 0.5),
        _added_us(rounds, 0.9),
        _added_us(rounds, 0.5, "wall"),
    ]


class _ReplayStream:
    """Stands in for ``openai.Stream`` over chunks already received: what the proxy wraps, minus the network."""

    def __init__(self, chunks: list[object]) -> None:
        self._iterator = iter(chunks)

    def __iter__(self):  # type: ignore[no-untyped-def]
        yield from self._iterator

    def close(self) -> None:
        pass


def _per_chunk_us(client: openai.OpenAI, instrument: Callable[[bool], None], repeat: int) -> float:
    """Median added CPU µs per chunk of the stream proxy (accumulation, first-chunk time, and the output
    message they grow), as the slope between a long and a two-chunk stream: the span's start and end, paid
    once per call, cancel out."""
    from llmtap.instrumentation import patching
    from llmtap.instrumentation.calls import server_of, start_call
    from llmtap.instrumentation.operations import CHAT
    from llmtap.instrumentation.streams import wrap_stream

    instrument(True)
    telemetry = patching.active_telemetry()
    long = list(
        client.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, stream=True, extra_headers={"x-fake-chunks": str(CHUNKS)}
        )
    )
    short = [long[0], long[-1]]  # the first content chunk and the one with the finish reason
    request = {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True}
    clock = time.process_time_ns

    def added_ns(chunks: list[object]) -> int:
        start = clock()
        for _chunk in _ReplayStream(chunks):
            pass
        plain = clock() - start
        # The span starts outside the timing; its end, inside, is the same for both lengths and cancels out.
        call = start_call(telemetry, CHAT, request, server_of(client))
        proxy = wrap_stream(_ReplayStream(chunks), call, is_async=False)
        start = clock()
        for _chunk in proxy:
            pass
        return clock() - start - plain

    slopes = [(added_ns(long) - added_ns(short)) / (len(long) - len(short)) for _ in range(repeat)]
    instrument(False)
    return median(slopes) / 1000


def _sdk_floor(
    chat: Callable[[], object], instrument: Callable[[bool], None], exporter, rounds: int, batch: int
) -> Rounds:
    """The plain call followed by what the OpenTelemetry SDK alone does for its span (same name and attributes)
    and three histogram points, against the plain call: the part of the added cost that any OTel
    instrumentation recording them pays, measured in the same setting (after an SDK call, whose work has
    pushed ours out of the CPU caches, the same code costs more than in a tight loop)."""
    from llmtap.instrumentation import patching

    instrument(True)
    exporter.clear()
    chat()
    span = exporter.get_finished_spans()[0]
    attributes = dict(span.attributes)
    telemetry = patching.active_telemetry()
    metric_keys = (
        "gen_ai.operation.name",
        "gen_ai.provider.name",
        "gen_ai.request.model",
        "gen_ai.response.model",
        "server.address",
        "server.port",
    )
    metric_attributes = {k: attributes[k] for k in metric_keys}
    instrument(False)

    def chat_then_sdk() -> None:
        chat()
        telemetry.tracer.start_span(span.name, kind=span.kind, attributes=attributes).end()
        telemetry.record_metrics(metric_attributes, 0.5, 10, 20, None)

    return _alternate(chat, rounds, batch, instrument, instead=chat_then_sdk)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="fewer iterations (a smoke run, noisier figures)"
    )
    args = parser.parse_args()
    rounds, batch = (4, 10) if args.quick else (40, 50)
    load_before = load_average()

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

    tickets = itertools.count()

    def chat_new_message() -> object:
        system, user = MESSAGES
        message = {"role": "user", "content": f"{user['content']} Ticket {next(tickets)}."}
        return client.chat.completions.create(model="gpt-4o-mini", messages=[system, message])

    def stream() -> object:
        headers = {"x-fake-chunks": str(CHUNKS)}
        created = client.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, stream=True, extra_headers=headers
        )
        return sum(1 for _ in created)

    for warmup in (chat, chat_new_message, stream):
        _alternate(warmup, 2, 5, instrument)

    rows = [
        _row("non-streamed chat, same prompt every call", _alternate(chat, rounds, batch, instrument)),
        _row(
            "non-streamed chat, a new user message every call",
            _alternate(chat_new_message, rounds, batch, instrument),
        ),
        _row(
            "the OTel SDK's part: the same span and 3 histogram points, made directly",
            _sdk_floor(chat, instrument, exporter, rounds, batch),
        ),
        _row(
            f"streamed chat, {CHUNKS} chunks, end to end",
            _alternate(stream, rounds, max(2, batch // 10), instrument),
        ),
    ]
    per_chunk = _per_chunk_us(client, instrument, rounds * batch)
    rows.append(["per streamed chunk (the stream proxy alone)", "—", "—", round(per_chunk, 2), "—", "—"])

    print(
        f"{rounds} rounds of {batch} calls each way, plain and instrumented blocks alternating; content capture "
        "and redaction on; CPU time of the process unless marked wall. Added = per round, instrumented minus "
        "plain at that quantile of the round's calls; the median over rounds is shown. In the SDK row the "
        "instrumented column is the plain call followed by the SDK's work for its span and histogram points.\n"
    )
    print(
        markdown_table(
            [
                "what",
                "plain CPU µs",
                "instrumented CPU µs",
                "added CPU µs median",
                "added CPU µs p90",
                "added wall µs median",
            ],
            rows,
        )
    )
    print(f"\nLoad average (1, 5, 15 min): {load_before} at the start, {load_average()} at the end.")
    print(f"Reference: `sum(range(1000))` takes {_reference_us():.1f} µs here.")


def _reference_us() -> float:
    """A fixed piece of pure-Python work, so a reader can scale the figures to their own machine."""
    clock, samples = time.process_time_ns, []
    for _ in range(20):
        start = clock()
        for _ in range(100):
            sum(range(1000))
        samples.append((clock() - start) / 100)
    return min(samples) / 1000


if __name__ == "__main__":
    main()
