"""Many gRPC exporters at once (issue 18, item 7): calls wait for a worker instead of being refused, and a refusal
always carries the RetryInfo without which OTLP exporters drop the data. Before, 8 concurrent calls were the
limit and the rest got RESOURCE_EXHAUSTED without RetryInfo."""

from __future__ import annotations

import threading
import time

import grpc
from collector_support import running_collector, settle
from google.rpc import error_details_pb2
from llmtap.collector import grpc_server
from llmtap.collector.pipeline import Pipeline
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2
from test_collector_receivers import START_NS, span_request

CLIENTS = 100
SPANS = 200  # per call: enough work that the calls overlap


def request(client: int) -> trace_service_pb2.ExportTraceServiceRequest:
    spans = [
        trace_pb2.Span(
            trace_id=client.to_bytes(16, "big"),
            span_id=(index + 1).to_bytes(8, "big"),
            name="load",
            start_time_unix_nano=START_NS,
            end_time_unix_nano=START_NS + 1,
        )
        for index in range(SPANS)
    ]
    return trace_service_pb2.ExportTraceServiceRequest.FromString(span_request(*spans, service="grpc-load"))


def export_at_once(port: int, clients: int = CLIENTS, timeout: float = 60) -> list[grpc.RpcError | None]:
    """Every client sends one export at the same moment, each on its own channel (as separate exporters do)."""
    start = threading.Barrier(clients)
    results: list[grpc.RpcError | None] = [None] * clients

    def client(number: int) -> None:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=10)
            stub = trace_service_pb2_grpc.TraceServiceStub(channel)
            message = request(number)
            start.wait()
            try:
                stub.Export(message, timeout=timeout)
            except grpc.RpcError as exc:
                results[number] = exc

    threads = [threading.Thread(target=client, args=(number,)) for number in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_a_hundred_exporters_at_once_are_all_accepted(tmp_path):
    with running_collector(tmp_path) as collector:
        results = export_at_once(collector.grpc_port)
        refused = [error.code() for error in results if error is not None]
        assert refused == []
        settle(collector)
        assert collector.stats.snapshot()["signals"]["traces"]["written"] == CLIENTS * SPANS


def test_calls_past_the_queue_are_refused_at_once_with_retry_info(tmp_path, monkeypatch):
    """With a slow disk (each accept takes 0.5 s), one worker and room for 4 waiting calls, 16 exporters with a
    1.5 s deadline: the refused get RESOURCE_EXHAUSTED + RetryInfo before their deadline, not behind the queue."""
    monkeypatch.setattr(grpc_server, "WORKERS", 1)
    monkeypatch.setattr(grpc_server, "QUEUED_RPCS", 4)
    accept = Pipeline.accept

    def slow_accept(self, *args):
        time.sleep(0.5)
        return accept(self, *args)

    monkeypatch.setattr(Pipeline, "accept", slow_accept)
    with running_collector(tmp_path) as collector:
        results = export_at_once(collector.grpc_port, clients=16, timeout=1.5)
        refused = [
            error
            for error in results
            if error is not None and error.code() != grpc.StatusCode.DEADLINE_EXCEEDED
        ]
        late = [
            error
            for error in results
            if error is not None and error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        ]
        assert len(refused) >= 16 - 1 - 4 and len(late) <= 4  # only calls let into the queue may time out
        for error in refused:
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            retry = dict(error.trailing_metadata())["google.rpc.retryinfo-bin"]
            assert error_details_pb2.RetryInfo.FromString(retry).retry_delay.seconds >= 1
