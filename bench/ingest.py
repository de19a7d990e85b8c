"""Sustained ingest of `llmtap serve`: realistic LLM spans over OTLP/HTTP and OTLP/gRPC into chDB.

Runs a real `llmtap serve` process, sends pre-built OTLP requests (512 spans each; every span ~28 attributes with
about 2 KB of prompt/response content, like the instrumentation emits) from client threads, and measures spans/s
from the first request until serve reports every span written to ClickHouse, plus serve's peak RSS. The baseline,
measured in the same run, inserts the very same rows straight into a chDB store with clickhouse-connect (rows
already converted, one process, no network, batches of serve's default size): what ClickHouse itself costs; a
second baseline does the same with every materialized view dropped (otel_traces alone).

    python bench/ingest.py            # 200k spans per transport
    python bench/ingest.py --quick    # 10k spans per transport
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from _common import machine_info, markdown_table
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue
from opentelemetry.proto.trace.v1 import trace_pb2

SPANS_PER_REQUEST = 512
CLIENT_THREADS = 4
START_NS = 1_760_000_000_000_000_000


def _value(value: object) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, list):
        return AnyValue(array_value=ArrayValue(values=[_value(v) for v in value]))
    return AnyValue(string_value=str(value))


def llm_span(rng: random.Random, index: int) -> trace_pb2.Span:
    """One chat-completion span as llmtap.instrumentation emits it."""
    prompt = "Summarise the following support ticket for the on-call engineer. " * 14  # ~900 bytes
    answer = (
        "The customer reports intermittent 502 errors from the EU gateway since 09:00. " * 12
    )  # ~950 bytes
    start = START_NS + index * 1_000_000
    model = rng.choice(["gpt-4o", "gpt-4o-mini", "o3-mini"])
    attributes = {
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": model,
        "gen_ai.response.model": f"{model}-2024-08-06", "gen_ai.response.id": f"chatcmpl-{rng.getrandbits(64):x}",
        "gen_ai.response.finish_reasons": ["stop"], "gen_ai.usage.input_tokens": rng.randint(50, 4000),
        "gen_ai.usage.output_tokens": rng.randint(10, 800), "gen_ai.usage.cache_read.input_tokens": 0,
        "gen_ai.usage.reasoning.output_tokens": 0, "gen_ai.request.stream": rng.random() < 0.5,
        "gen_ai.response.time_to_first_chunk": rng.random(), "gen_ai.request.temperature": 0.2,
        "gen_ai.request.max_tokens": 1024, "server.address": "api.openai.com", "server.port": 443,
        "gen_ai.system_instructions": json.dumps([{"type": "text", "content": "You are a support assistant."}]),
        "gen_ai.input.messages": json.dumps([{"role": "user", "parts": [{"type": "text", "content": prompt}]}]),
        "gen_ai.output.messages": json.dumps(
            [{"role": "assistant", "parts": [{"type": "text", "content": answer}], "finish_reason": "stop"}]
        ),
        "user.id": f"user-{rng.randint(1, 500)}", "session.id": f"session-{rng.randint(1, 5000)}",
        "llmtap.tags": ["support", "eu"], "llmtap.attr.customer": f"acme-{rng.randint(1, 50)}",
        "llmtap.attr.feature": "ticket-summary", "llmtap.metadata.env": "prod",
        "llmtap.prompt.hash": f"{rng.getrandbits(128):032x}", "llmtap.redaction.count": 0,
        "llmtap.content.truncated": False,
    }  # fmt: skip
    return trace_pb2.Span(
        trace_id=rng.getrandbits(128).to_bytes(16, "big"),
        span_id=rng.getrandbits(64).to_bytes(8, "big"),
        name=f"chat {model}",
        kind=trace_pb2.Span.SPAN_KIND_CLIENT,
        start_time_unix_nano=start,
        end_time_unix_nano=start + rng.randint(200_000_000, 9_000_000_000),
        attributes=[KeyValue(key=k, value=_value(v)) for k, v in attributes.items()],
    )


def build_requests(total_spans: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    resource = [
        KeyValue(key=k, value=_value(v))
        for k, v in {
            "service.name": "support-bot", "service.namespace": "acme", "telemetry.sdk.language": "python",
            "telemetry.sdk.name": "opentelemetry", "telemetry.sdk.version": "1.45.0",
        }.items()
    ]  # fmt: skip
    requests = []
    for first in range(0, total_spans, SPANS_PER_REQUEST):
        spans = [llm_span(rng, first + i) for i in range(min(SPANS_PER_REQUEST, total_spans - first))]
        requests.append(
            trace_service_pb2.ExportTraceServiceRequest(
                resource_spans=[
                    trace_pb2.ResourceSpans(
                        resource={"attributes": resource},
                        scope_spans=[
                            trace_pb2.ScopeSpans(scope={"name": "llmtap", "version": "0.1.0"}, spans=spans)
                        ],
                    )
                ]
            ).SerializeToString()
        )
    return requests


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServeProcess:
    """`python -m llmtap serve` on a fresh chDB store."""

    def __init__(self, directory: Path) -> None:
        self.http_port, self.grpc_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "llmtap", "serve", "--port", str(self.http_port), "--grpc-port",
             str(self.grpc_port), "--dsn", f"chdb://{directory / 'chdb'}", "--no-status", "--log-level", "warning"],
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                self.health()
                return
            except OSError:
                if self.process.poll() is not None:
                    raise SystemExit(f"serve failed to start: {self.process.stderr.read()}") from None
                time.sleep(0.1)
        raise SystemExit("serve did not start")

    def health(self) -> dict:
        with urllib.request.urlopen(self.url + "/health", timeout=5) as response:
            return json.loads(response.read())

    def written(self) -> int:
        return self.health()["signals"]["traces"]["written"]

    def peak_rss_bytes(self) -> int:
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        return 0

    def cpu_seconds(self) -> float:
        """CPU time (user + system) of serve and its encoder processes so far."""
        pids = [self.process.pid]
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        with contextlib.suppress(OSError):
            pids += [int(pid) for pid in children.read_text().split()]
        total = 0
        for pid in pids:
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])  # utime, stime in clock ticks
        return total / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(120)


def send_http(url: str, requests: list[bytes]) -> None:
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=120)
    for body in requests:
        while True:
            connection.request("POST", "/v1/traces", body, {"Content-Type": "application/x-protobuf"})
            response = connection.getresponse()
            response.read()
            if response.status == 200:
                break
            if response.status not in (429, 503):
                raise SystemExit(f"serve answered {response.status}")
            time.sleep(float(response.getheader("Retry-After", "1")))
    connection.close()


def send_grpc(port: int, requests: list[bytes]) -> None:
    import grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        export = channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export")
        for body in requests:
            export(body, timeout=120)


def run_transport(transport: str, requests: list[bytes], total: int) -> dict[str, float]:
    directory = Path(tempfile.mkdtemp(prefix=f"llmtap-bench-{transport}-"))
    serve = ServeProcess(directory)
    try:
        shares = [requests[i::CLIENT_THREADS] for i in range(CLIENT_THREADS)]
        if transport == "http":
            targets = [lambda share=share: send_http(serve.url, share) for share in shares]
        else:
            targets = [lambda share=share: send_grpc(serve.grpc_port, share) for share in shares]
        threads = [threading.Thread(target=target) for target in targets]
        cpu_before = serve.cpu_seconds()
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        acknowledged = time.perf_counter() - started
        while serve.written() < total:
            time.sleep(0.05)
        elapsed = time.perf_counter() - started
        return {
            "cpu_us_per_span": (serve.cpu_seconds() - cpu_before) / total * 1e6,
            "spans_per_s": total / elapsed,
            "ack_spans_per_s": total / acknowledged,
            "peak_rss_mb": serve.peak_rss_bytes() / 2**20,
            "seconds": elapsed,
        }
    finally:
        serve.stop()
        shutil.rmtree(directory, ignore_errors=True)


def run_baseline(requests: list[bytes], total: int, views: bool = True) -> dict[str, float]:
    """The same rows, already converted, inserted straight into chDB with clickhouse-connect.

    In batches of serve's default size; ``views=False`` drops every materialized view first, so only otel_traces
    itself is written (what ClickHouse costs without llm_calls, its rollups and the exporter's trace-id lookup).
    """
    from llmtap.clickhouse.connection import connect
    from llmtap.clickhouse.migrations import migrate
    from llmtap.collector import rows
    from llmtap.collector.pipeline import Limits

    directory = Path(tempfile.mkdtemp(prefix="llmtap-bench-baseline-"))
    client = connect(f"chdb://{directory / 'chdb'}", create_database=True)
    try:
        migrate(client)
        if not views:
            for (view,) in client.query(
                "SELECT name FROM system.tables WHERE database = currentDatabase() AND engine = 'MaterializedView'"
            ).result_rows:
                client.command(f"DROP VIEW {view}")
        batches, batch = [], rows.Batch()
        for body in requests:
            rows.add_request(batch, "traces", body)
            if batch.rows(rows.TRACES_TABLE) >= Limits.batch_rows:
                batches.append(batch)
                batch = rows.Batch()
        if batch:
            batches.append(batch)
        cpu_before = time.process_time()
        started = time.perf_counter()
        for batch in batches:
            columns = batch.columns[rows.TRACES_TABLE]
            names = list(columns)
            client.insert(
                rows.TRACES_TABLE, [columns[n] for n in names], column_names=names, column_oriented=True
            )
        elapsed = time.perf_counter() - started
        cpu = (time.process_time() - cpu_before) / total * 1e6
        return {"spans_per_s": total / elapsed, "seconds": elapsed, "cpu_us_per_span": cpu}
    finally:
        client.close()
        shutil.rmtree(directory, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="10k spans per transport instead of 200k")
    parser.add_argument("--spans", type=int, help="spans per transport (overrides --quick)")
    args = parser.parse_args()
    total = args.spans or (10_000 if args.quick else 200_000)
    requests = build_requests(total, seed=7)
    size = sum(len(body) for body in requests) / total
    print(
        f"{total} spans per transport, {size:.0f} bytes of OTLP protobuf per span, {CLIENT_THREADS} client threads"
    )
    print(", ".join(f"{k}: {v}" for k, v in machine_info().items()))
    results = {transport: run_transport(transport, requests, total) for transport in ("http", "grpc")}
    baseline = run_baseline(requests, total)
    bare = run_baseline(requests, total, views=False)
    table = [
        [f"serve OTLP/{t.upper()} → chDB", f"{r['spans_per_s']:,.0f}", f"{r['ack_spans_per_s']:,.0f}",
         f"{r['spans_per_s'] / baseline['spans_per_s']:.2f}", f"{r['cpu_us_per_span']:.0f}", f"{r['peak_rss_mb']:.0f}"]
        for t, r in results.items()
    ]  # fmt: skip
    table.append(
        ["baseline: clickhouse-connect insert", f"{baseline['spans_per_s']:,.0f}", "—", "1.00",
         f"{baseline['cpu_us_per_span']:.0f}", "—"]
    )  # fmt: skip
    table.append(
        ["baseline without materialized views", f"{bare['spans_per_s']:,.0f}", "—",
         f"{bare['spans_per_s'] / baseline['spans_per_s']:.2f}", f"{bare['cpu_us_per_span']:.0f}", "—"]
    )  # fmt: skip
    headers = [
        "path",
        "spans/s written",
        "spans/s acknowledged",
        "× baseline",
        "CPU µs/span",
        "serve peak RSS MiB",
    ]
    print(markdown_table(headers, table))
    print(f"load average after the run: {os.getloadavg()[0]:.1f} (other processes share these cores)")


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    main()
