"""OTLP/gRPC receiver (:4317): the three collector services through opentelemetry-proto's generated servicers.

Status codes follow the OTLP specification: INVALID_ARGUMENT for a request that cannot be decoded,
UNAUTHENTICATED for a missing/wrong bearer token (``authorization`` metadata), RESOURCE_EXHAUSTED when
overloaded and UNAVAILABLE when the store is down, both with a google.rpc.RetryInfo so exporters back off.
"""

from __future__ import annotations

from concurrent import futures
from typing import Any

import grpc
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2
from llmtap.clickhouse.connection import host_port
from llmtap.collector.decode import LOGS, METRICS, TRACES, Signal
from llmtap.collector.pipeline import Refused
from llmtap.collector.receiver import Receiver
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc


class _Undecodable:
    """Stands in for a request grpc could not deserialize, so the servicer can answer INVALID_ARGUMENT."""

    def __init__(self, error: Exception) -> None:
        self.error = error


class _Decoded:
    """A decoded request with the bytes it came in: spooled as they are when validation removes nothing."""

    def __init__(self, message: Any, raw: bytes) -> None:
        self.message = message
        self.raw = raw


def _tolerant(deserializer: Any) -> Any:
    def deserialize(data: bytes) -> Any:
        try:
            return _Decoded(deserializer(data), data)
        except Exception as exc:
            return _Undecodable(exc)

    return deserialize


class _DecodeInterceptor(grpc.ServerInterceptor):
    """Makes request decoding failures reach the servicer (grpc would answer a generic INTERNAL otherwise) and
    keeps each request's own bytes (re-serializing a big export request costs more than parsing it)."""

    def intercept_service(self, continuation: Any, handler_call_details: Any) -> Any:
        handler = continuation(handler_call_details)
        if handler is None or handler.request_deserializer is None:
            return handler
        return handler._replace(request_deserializer=_tolerant(handler.request_deserializer))


class _Export:
    """Shared Export() body of the three servicers."""

    signal: Signal

    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver

    def Export(self, request: Any, context: grpc.ServicerContext) -> Any:
        receiver = self.receiver
        authorization = next((v for k, v in context.invocation_metadata() if k == "authorization"), None)
        if not receiver.authorized(authorization):
            receiver.stats.refused()
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")
        if isinstance(request, _Undecodable):
            receiver.stats.refused()
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"malformed protobuf {self.signal.request_type.__name__}: {request.error}",
            )
        try:
            return receiver.export(self.signal, request.message, raw=request.raw)
        except Refused as exc:
            receiver.stats.refused()
            retry = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=exc.retry_after))
            context.set_trailing_metadata((("google.rpc.retryinfo-bin", retry.SerializeToString()),))
            code = grpc.StatusCode.UNAVAILABLE if exc.store_down else grpc.StatusCode.RESOURCE_EXHAUSTED
            context.abort(code, str(exc))


class _Traces(_Export, trace_service_pb2_grpc.TraceServiceServicer):
    signal = TRACES


class _Metrics(_Export, metrics_service_pb2_grpc.MetricsServiceServicer):
    signal = METRICS


class _Logs(_Export, logs_service_pb2_grpc.LogsServiceServicer):
    signal = LOGS


def start_grpc_server(
    receiver: Receiver, host: str, port: int, max_body_bytes: int, workers: int = 4
) -> tuple[grpc.Server, int]:
    """Start the OTLP/gRPC server; returns it with the bound port (useful when ``port`` is 0)."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="llmtap-grpc"),
        interceptors=[_DecodeInterceptor()],
        # Bounds the requests held at once (each up to max_body_bytes); more get RESOURCE_EXHAUSTED to retry.
        maximum_concurrent_rpcs=2 * workers,
        options=[
            ("grpc.max_receive_message_length", max_body_bytes),
            ("grpc.so_reuseport", 0),
        ],
    )
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_Traces(receiver), server)
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(_Metrics(receiver), server)
    logs_service_pb2_grpc.add_LogsServiceServicer_to_server(_Logs(receiver), server)
    address = host_port(host, port)
    bound = server.add_insecure_port(address)
    if not bound:
        raise OSError(f"cannot listen for OTLP/gRPC on {address}")
    server.start()
    return server, bound
