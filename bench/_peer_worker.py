"""One benchmarked peer inside its own venv: set it up, then time workloads on the parent's command.

Run by bench/peers.py as ``<venv>/bin/python bench/_peer_worker.py <peer>``. Every peer gets the same OTel
SDK setup (tracer, meter and logger providers with exporters that drop what they get, spans exported
synchronously) and an OpenAI client on llmtap.fake_openai's in-process transport, so a call costs no socket
and no sleep: what differs between peers is the instrumentation alone.

Protocol: one JSON object per line. The worker writes ``{"ready": {...}}`` (or ``{"error": ...}``), then for
each line ``{"workload": name, "calls": n}`` read from stdin answers ``{"cpu": [ns, ...], "wall": [ns, ...]}``,
until stdin closes.
Its own stdout is kept for the protocol; anything a peer prints goes to stderr.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

from _common import rss_bytes, time_calls

MODEL = "gpt-4o-mini"
EMBEDDING_MODEL = "text-embedding-3-small"
# A marker in every prompt, to check that a peer really records content (content capture on).
MARKER = "zebra-quartz-7319"
MESSAGES = [
    {"role": "system", "content": "You are a terse assistant. Answer in one sentence."},
    {
        "role": "user",
        "content": f"Summarise why observability matters for LLM apps ({MARKER}); mail ops@example.com.",
    },
]
STREAM_CHUNKS = 50
WARMUP_CALLS = 20

# Each peer's own documented switch for recording prompts and completions, set before its import.
CONTENT_ENV = {
    "otel": {
        "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "span_only",
        "OTEL_SEMCONV_STABILITY_OPT_IN": "gen_ai_latest_experimental",
    },
    "openllmetry": {"TRACELOOP_TRACE_CONTENT": "true"},
    "openinference": {},  # records content unless OPENINFERENCE_HIDE_* say otherwise
    "openlit": {},  # capture_message_content=True is passed to openlit.init
    "llmtap": {"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "true"},
    "bare": {},
}


def main() -> None:
    peer = sys.argv[1]
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # a peer that prints must not corrupt the protocol
    sys.stdout = sys.stderr
    try:
        ready, workloads, requests_log = set_up(peer)
    except BaseException as exc:  # a peer that breaks is a result to report, not a crash
        protocol.write(json.dumps({"error": _describe(exc)}) + "\n")
        return
    protocol.write(json.dumps({"ready": ready}) + "\n")
    for line in sys.stdin:
        command = json.loads(line)
        run = workloads[command["workload"]]
        try:
            samples = time_calls(run, command["calls"])
        except BaseException as exc:
            protocol.write(json.dumps({"error": _describe(exc)}) + "\n")
            return
        finally:
            requests_log.clear()  # the fake API logs every request; keep memory flat
        protocol.write(json.dumps(samples) + "\n")


def set_up(peer: str) -> tuple[dict[str, Any], dict[str, Callable[[], object]], list]:
    """SDK and client first (the baseline), then the peer.

    Returns the startup figures, the workloads, and the fake API's request log (to empty between blocks).
    """
    os.environ.update(CONTENT_ENV[peer])
    sink = _otel_sdk()
    client, transport = _client()
    workloads = _workloads(client)
    for run in workloads.values():
        time_calls(run, 3)
    transport.requests.clear()
    gc.collect()
    rss_before = rss_bytes()

    # CPU time, like the per-call figures: on a shared machine wall time measures the neighbours.
    started = time.process_time()
    instrument = INSTRUMENT[peer]()  # the import of the instrumentation
    imported = time.process_time()
    version = instrument()  # its setup: patching, provider lookup
    set_up_at = time.process_time()

    checks = {}
    sink.inspecting = True
    for name, run in workloads.items():
        sink.reset()
        time_calls(run, WARMUP_CALLS)
        checks[name] = sink.check(WARMUP_CALLS)
    sink.inspecting = False
    transport.requests.clear()
    gc.collect()
    import openai

    ready = {
        "peer_version": version,
        "openai": openai.__version__,
        "import_ms": (imported - started) * 1000,
        "setup_ms": (set_up_at - imported) * 1000,
        "rss_added_bytes": rss_bytes() - rss_before,
        "checks": checks,
        "python": sys.version.split()[0],
    }
    return ready, workloads, transport.requests


class Sink:
    """Drops every span and log record; while ``inspecting`` (warm-up only, never in a timed block), first
    counts them and looks for the prompt marker in them."""

    def __init__(self) -> None:
        self.inspecting = False
        self.reset()

    def reset(self) -> None:
        self.spans = 0
        self.content = 0

    def take_spans(self, spans) -> None:
        if not self.inspecting:
            return
        for span in spans:
            self.spans += 1
            texts = [
                *span.attributes.values(),
                *(v for e in span.events for v in (e.attributes or {}).values()),
            ]
            self.content += any(MARKER in str(text) for text in texts)

    def take_logs(self, batch) -> None:
        if not self.inspecting:
            return
        for item in batch:
            record = getattr(item, "log_record", item)
            self.content += MARKER in str(record.body) + str(dict(record.attributes or {}))

    def check(self, calls: int) -> dict[str, Any]:
        return {"spans_per_call": self.spans / calls, "content": self.content >= calls}


def _otel_sdk() -> Sink:
    """Tracer, meter and logger providers as an app with OTel set up has them; exporters drop everything."""
    from opentelemetry import _logs, metrics, trace
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

    sink = Sink()

    class SpanSink(SpanExporter):
        def export(self, spans):
            sink.take_spans(spans)
            return SpanExportResult.SUCCESS

    class LogSink:  # duck-typed: the SDK's log exporter base class was renamed across the versions peers pin
        def export(self, batch):
            sink.take_logs(batch)

        def force_flush(self, timeout_millis: int = 0) -> bool:
            return True

        def shutdown(self) -> None:
            pass

    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(SpanSink()))
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))
    logger_provider = LoggerProvider()
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(LogSink()))
    _logs.set_logger_provider(logger_provider)
    return sink


def _client():
    from llmtap.fake_openai.transport import http_client_class, sync_transport
    from openai import OpenAI

    transport = sync_transport(chunks=STREAM_CHUNKS)
    http_client = http_client_class()(transport=transport)
    return OpenAI(base_url="http://fake/v1", api_key="x", http_client=http_client, max_retries=0), transport


def _workloads(client) -> dict[str, Callable[[], object]]:
    def chat() -> object:
        return client.chat.completions.create(model=MODEL, messages=MESSAGES)

    def stream() -> object:
        return list(client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True))

    def stream1() -> object:
        return list(
            client.chat.completions.create(
                model=MODEL, messages=MESSAGES, stream=True, extra_headers={"x-fake-chunks": "1"}
            )
        )

    def embeddings() -> object:
        return client.embeddings.create(model=EMBEDDING_MODEL, input=f"observability for LLM apps {MARKER}")

    return {"chat": chat, "stream": stream, "stream1": stream1, "embeddings": embeddings}


# Each entry imports a peer's instrumentation and returns the function that switches it on (and reports its
# version). Imports happen inside, so that the parent's import timing covers exactly them.


def _bare():
    return lambda: "—"


def _llmtap():
    import llmtap.instrumentation

    def instrument() -> str:
        # Content capture and redaction on: what the README's figures promise.
        llmtap.instrumentation.instrument(capture_content=True, redact=True)
        return _version("llmtap")

    return instrument


def _otel():
    try:
        from opentelemetry.instrumentation.genai.openai import OpenAIInstrumentor

        dist = "opentelemetry-instrumentation-genai-openai"
    except ImportError:
        from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor

        dist = "opentelemetry-instrumentation-openai-v2"

    def instrument() -> str:
        OpenAIInstrumentor().instrument()
        return f"{dist} {_version(dist)}"

    return instrument


def _openllmetry():
    from opentelemetry.instrumentation.openai import OpenAIInstrumentor

    def instrument() -> str:
        OpenAIInstrumentor().instrument()
        return _version("opentelemetry-instrumentation-openai")

    return instrument


def _openinference():
    from openinference.instrumentation.openai import OpenAIInstrumentor

    def instrument() -> str:
        OpenAIInstrumentor().instrument()
        return _version("openinference-instrumentation-openai")

    return instrument


def _openlit():
    import openlit
    from openlit._instrumentors import MODULE_NAME_MAP

    def instrument() -> str:
        # Only its OpenAI instrumentor (openlit.init would also trace httpx, requests, ...), metrics and
        # events through the providers set up above, and a local empty price list: by default init
        # downloads one, and this machine has no network.
        prices = os.path.join(os.path.dirname(os.path.abspath(__file__)), ".venvs", "openlit-prices.json")
        os.makedirs(os.path.dirname(prices), exist_ok=True)
        with open(prices, "w") as file:
            file.write("{}")
        openlit.init(
            capture_message_content=True,
            disabled_instrumentors=[name for name in MODULE_NAME_MAP if name != "openai"],
            pricing_json=prices,
        )
        return _version("openlit")

    return instrument


INSTRUMENT: dict[str, Callable[[], Callable[[], str]]] = {
    "bare": _bare,
    "llmtap": _llmtap,
    "otel": _otel,
    "openllmetry": _openllmetry,
    "openinference": _openinference,
    "openlit": _openlit,
}


def _version(dist: str) -> str:
    from importlib.metadata import version

    return version(dist)


def _describe(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (at {frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {exc}{where}"


if __name__ == "__main__":
    main()
