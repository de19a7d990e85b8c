"""OTLP/gRPC receiver (:4317): the three collector services through opentelemetry-proto's generated servicers.

Status codes follow the OTLP specification: INVALID_ARGUMENT for a request that cannot be decoded,
UNAUTHENTICATED for a missing/wrong bearer token (``authorization`` metadata), RESOURCE_EXHAUSTED when
overloaded and UNAVAILABLE when the store is down, both with a google.rpc.RetryInfo so exporters back off.

RPCs beyond the worker threads wait for one: a waiting call costs little, since its message is read only once a
worker runs it. Only past :data:`QUEUED_RPCS` are they refused, with RetryInfo. (grpc's own
``maximum_concurrent_rpcs`` refuses without RetryInfo, and OTLP exporters drop what is refused so.)
"""

from __future__ import annotations

import os
import threading
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


# Workers: exports wait on the spool's fsync as much as they use the CPU; each holds a request of up to
# --max-body-mb. Calls waiting for one, at most.
WORKERS = min(8, 2 * (os.cpu_count() or 1))
QUEUED_RPCS = 256
_BUSY_RETRY_SECONDS = 1


class _CountingPool(futures.ThreadPoolExecutor):
    """A worker pool that knows how many calls it holds, running or waiting (grpc submits each call to it)."""

    def __init__(self, workers: int) -> None:
        super().__init__(max_workers=workers, thread_name_prefix="llmtap-grpc")
        self._held = 0
        self._lock = threading.Lock()

    def held(self) -> int:
        return self._held

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> futures.Future[Any]:
        with self._lock:
            self._held += 1
        future = super().submit(fn, *args, **kwargs)
        future.add_done_callback(self._done)  # also when the call was cancelled while it waited
        return future

    def _done(self, _: futures.Future[Any]) -> None:
        with self._lock:
            self._held -= 1


class _Admission(grpc.ServerInterceptor):
    """Refuses calls past the queue with RetryInfo; makes request decoding failures reach the servicer (grpc would
    answer a generic INTERNAL otherwise) and keeps each request's own bytes (re-serializing a big export request
    costs more than parsing it). Runs on grpc's serving thread, before the call goes to the pool."""

    def __init__(self, pool: _CountingPool, queued: int) -> None:
        self._pool = pool
        self._queued = queued

    def intercept_service(self, continuation: Any, handler_call_details: Any) -> Any:
        handler = continuation(handler_call_details)
        if handler is None or handler.request_deserializer is None:
            return handler
        if self._pool.held() >= self._queued:
            return handler._replace(request_deserializer=None, unary_unary=_refuse_busy)
        return handler._replace(request_deserializer=_tolerant(handler.request_deserializer))


def _refuse_busy(request: Any, context: grpc.ServicerContext) -> None:
    """The answer to a call past the queue, at once: it runs on a thread of its own, not behind the queue."""
    _abort_with_retry(
        context, grpc.StatusCode.RESOURCE_EXHAUSTED, "llmtap serve is overloaded (too many calls waiting); retry later",
        _BUSY_RETRY_SECONDS,
    )  # fmt: skip


# grpc runs a method on the pool its behaviour names in this attribute (so in grpcio 1.63, the oldest we take).
_refuse_busy.experimental_thread_pool = futures.ThreadPoolExecutor(1, thread_name_prefix="llmtap-grpc-refuse")  # type: ignore[attr-defined]


def _abort_with_retry(
    context: grpc.ServicerContext, code: grpc.StatusCode, message: str, seconds: int
) -> None:
    """End the call with ``code`` and a google.rpc.RetryInfo: OTLP exporters retry only what carries one."""
    retry = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=seconds))
    context.set_trailing_metadata((("google.rpc.retryinfo-bin", retry.SerializeToString()),))
    context.abort(code, message)


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
            code = grpc.StatusCode.UNAVAILABLE if exc.store_down else grpc.StatusCode.RESOURCE_EXHAUSTED
            _abort_with_retry(context, code, str(exc), exc.retry_after)


class _Traces(_Export, trace_service_pb2_grpc.TraceServiceServicer):
    signal = TRACES


class _Metrics(_Export, metrics_service_pb2_grpc.MetricsServiceServicer):
    signal = METRICS


class _Logs(_Export, logs_service_pb2_grpc.LogsServiceServicer):
    signal = LOGS


def start_grpc_server(
    receiver: Receiver, host: str, port: int, max_body_bytes: int
) -> tuple[grpc.Server, int]:
    """Start the OTLP/gRPC server; returns it with the bound port (useful when ``port`` is 0)."""
    pool = _CountingPool(WORKERS)  # each worker holds one request of up to max_body_bytes
    server = grpc.server(
        pool,
        interceptors=[_Admission(pool, QUEUED_RPCS)],
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
