"""Turn OTLP request bodies into validated export requests, or a clear error.

Both receivers call :func:`validate` on every request before anything is written: bad items (ids of the wrong
length, timestamps ClickHouse cannot store, a span ending before it starts) are removed and counted as
rejected, so the rest of the request is stored and the client gets the OTLP "partial success" answer naming
the problem. Bodies that cannot be decoded at all (malformed protobuf or JSON, wrong content type, too large)
raise :class:`DecodeError` carrying the HTTP status to answer with; nothing is stored for them.
"""

from __future__ import annotations

import base64
import json
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError as ProtobufDecodeError
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
_INFLATE_PIECE = 1 << 20  # bytes inflated at a time, each counted before the next
_PROTOBUF_TYPES = {PROTOBUF, "application/protobuf", "application/vnd.google.protobuf"}

# The sort key uses toDateTime(Timestamp) and metrics store DateTime: both end at 2106-02-07 06:28:15 UTC.
MAX_TIMESTAMP_NS = 4_294_967_295 * 1_000_000_000
_ID_FIELDS = {"traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"}


@dataclass(frozen=True)
class Signal:
    """One OTLP signal: its request/response classes and how OTLP counts its items."""

    name: str
    request_type: Any
    response_type: Any
    rejected_field: str  # field of partial_success counting rejected items
    item: str  # what one item is called in messages

    def response(self, rejected: int = 0, message: str = "") -> Any:
        response = self.response_type()
        if rejected or message:
            partial = response.partial_success
            setattr(partial, self.rejected_field, rejected)
            partial.error_message = message
        return response


TRACES = Signal(
    "traces",
    trace_service_pb2.ExportTraceServiceRequest,
    trace_service_pb2.ExportTraceServiceResponse,
    "rejected_spans",
    "span",
)
METRICS = Signal(
    "metrics",
    metrics_service_pb2.ExportMetricsServiceRequest,
    metrics_service_pb2.ExportMetricsServiceResponse,
    "rejected_data_points",
    "data point",
)
LOGS = Signal(
    "logs",
    logs_service_pb2.ExportLogsServiceRequest,
    logs_service_pb2.ExportLogsServiceResponse,
    "rejected_log_records",
    "log record",
)
SIGNALS = {signal.name: signal for signal in (TRACES, METRICS, LOGS)}


class DecodeError(ValueError):
    """A request that cannot be accepted at all; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Validation:
    """What validation removed from a request."""

    accepted: int = 0
    rejected: int = 0
    problems: list[str] = field(default_factory=list)

    def reject(self, problem: str) -> None:
        self.rejected += 1
        if len(self.problems) < 5:  # enough to explain, bounded for huge bad batches
            self.problems.append(problem)

    def message(self, signal: Signal) -> str:
        if not self.rejected:
            return ""
        more = (
            "" if self.rejected <= len(self.problems) else f" (and {self.rejected - len(self.problems)} more)"
        )
        return f"rejected {self.rejected} invalid {signal.item}(s): " + "; ".join(self.problems) + more


def decompress(
    body: bytes, content_encoding: str | None, max_bytes: int, hold: Callable[[int], None] | None = None
) -> bytes:
    """Undo Content-Encoding (gzip, deflate or none), refusing to inflate beyond ``max_bytes`` (413). ``hold`` is
    told the size of each inflated piece before it is kept (the HTTP receiver's byte budget, which may raise)."""
    encoding = (content_encoding or "identity").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "x-gzip", "deflate"):
        raise DecodeError(415, f"unsupported Content-Encoding {content_encoding!r} (use gzip or none)")
    wbits = 16 + zlib.MAX_WBITS if encoding != "deflate" else zlib.MAX_WBITS
    inflater = zlib.decompressobj(wbits)
    pieces: list[bytes] = []
    size = 0
    pending = body
    while not inflater.eof:
        try:
            piece = inflater.decompress(pending, min(_INFLATE_PIECE, max_bytes + 1 - size))
        except zlib.error as exc:
            raise DecodeError(400, f"malformed {encoding} body: {exc}") from None
        pending = inflater.unconsumed_tail
        size += len(piece)
        if size > max_bytes:
            raise DecodeError(413, f"decompressed body exceeds the {max_bytes} byte limit")
        if not piece and not pending:
            raise DecodeError(400, f"truncated {encoding} body")
        if hold is not None:
            hold(len(piece))
        pieces.append(piece)
    return b"".join(pieces)


def media_type(content_type: str | None) -> str:
    """The bare media type of a Content-Type header ('' when absent), or 415 when OTLP has no such encoding."""
    kind = (content_type or "").split(";")[0].strip().lower()
    if kind in _PROTOBUF_TYPES:
        return PROTOBUF
    if kind == JSON:
        return JSON
    raise DecodeError(
        415, f"unsupported Content-Type {content_type!r}: OTLP/HTTP accepts {PROTOBUF} or {JSON}"
    )


def parse(signal: Signal, body: bytes, kind: str) -> Any:
    """Decode a (decompressed) body of media type ``kind`` into the signal's export request."""
    request = signal.request_type()
    if kind == PROTOBUF:
        try:
            request.ParseFromString(body)
        except (ProtobufDecodeError, RuntimeError, ValueError) as exc:
            raise DecodeError(400, f"malformed protobuf {signal.request_type.__name__}: {exc}") from None
        return request
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise DecodeError(400, f"malformed JSON: {exc}") from None
    if not isinstance(document, dict):
        raise DecodeError(400, "malformed OTLP JSON: the body must be a JSON object")
    try:
        _hex_ids_to_base64(document)
        json_format.ParseDict(document, request, ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError, RecursionError) as exc:
        raise DecodeError(400, f"malformed OTLP JSON {signal.request_type.__name__}: {exc}") from None
    return request


def _hex_ids_to_base64(node: Any) -> None:
    """OTLP/JSON writes trace and span ids as hex, protobuf's JSON mapping expects base64: translate in place."""
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, value in item.items():
                if key in _ID_FIELDS and isinstance(value, str):
                    if value:
                        try:
                            item[key] = base64.b64encode(bytes.fromhex(value)).decode()
                        except ValueError:
                            raise ValueError(f"{key} {value[:64]!r} is not hex") from None
                elif isinstance(value, (dict, list)):
                    stack.append(value)
        elif isinstance(item, list):
            stack.extend(value for value in item if isinstance(value, (dict, list)))


def _id_problem(name: str, value: bytes, size: int, required: bool) -> str | None:
    if len(value) == size or (not value and not required):
        return None
    return f"{name} must be {size} bytes, got {len(value)}"


def _time_problem(name: str, nanos: int) -> str | None:
    return f"{name} {nanos} is beyond 2106-02-07 (ClickHouse DateTime)" if nanos > MAX_TIMESTAMP_NS else None


def validate(signal: Signal, request: Any) -> Validation:
    """Remove invalid items from ``request`` in place and report them."""
    return {"traces": _validate_traces, "metrics": _validate_metrics, "logs": _validate_logs}[signal.name](
        request
    )


def _span_problem(span: Any) -> str | None:
    start, end = span.start_time_unix_nano, span.end_time_unix_nano
    problem = (
        _id_problem("trace_id", span.trace_id, 16, True)
        or _id_problem("span_id", span.span_id, 8, True)
        or _id_problem("parent_span_id", span.parent_span_id, 8, False)
        or ("start_time_unix_nano is missing" if not start else None)
        or _time_problem("start_time_unix_nano", start)
        or _time_problem("end_time_unix_nano", end)
        or (f"end_time_unix_nano {end} is before start_time_unix_nano {start}" if end < start else None)
    )
    if problem:
        return problem
    for event in span.events:
        problem = _time_problem("event time_unix_nano", event.time_unix_nano)
        if problem:
            return problem
    for link in span.links:
        problem = _id_problem("link trace_id", link.trace_id, 16, False) or _id_problem(
            "link span_id", link.span_id, 8, False
        )
        if problem:
            return problem
    return None


def _validate_traces(request: Any) -> Validation:
    result = Validation()
    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            spans = scope_spans.spans
            for index in range(len(spans) - 1, -1, -1):
                span = spans[index]
                problem = _span_problem(span)
                if problem:
                    result.reject(f"span {span.name[:80]!r}: {problem}")
                    del spans[index]
                else:
                    result.accepted += 1
    return result


def _validate_logs(request: Any) -> Validation:
    result = Validation()
    for resource_logs in request.resource_logs:
        for scope_logs in resource_logs.scope_logs:
            records = scope_logs.log_records
            for index in range(len(records) - 1, -1, -1):
                record = records[index]
                problem = (
                    _id_problem("trace_id", record.trace_id, 16, False)
                    or _id_problem("span_id", record.span_id, 8, False)
                    or _time_problem("time_unix_nano", record.time_unix_nano)
                    or _time_problem("observed_time_unix_nano", record.observed_time_unix_nano)
                )
                if problem:
                    result.reject(f"log record: {problem}")
                    del records[index]
                else:
                    result.accepted += 1
    return result


def _point_problem(point: Any) -> str | None:
    problem = _time_problem("time_unix_nano", point.time_unix_nano) or _time_problem(
        "start_time_unix_nano", point.start_time_unix_nano
    )
    if problem or not hasattr(point, "exemplars"):
        return problem
    for exemplar in point.exemplars:
        problem = (
            _time_problem("exemplar time_unix_nano", exemplar.time_unix_nano)
            or _id_problem("exemplar trace_id", exemplar.trace_id, 16, False)
            or _id_problem("exemplar span_id", exemplar.span_id, 8, False)
        )
        if problem:
            return problem
    return None


def _validate_metrics(request: Any) -> Validation:
    result = Validation()
    for resource_metrics in request.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                kind = metric.WhichOneof("data")
                if kind is None:
                    continue
                points = getattr(metric, kind).data_points
                for index in range(len(points) - 1, -1, -1):
                    problem = _point_problem(points[index])
                    if problem:
                        result.reject(f"metric {metric.name[:80]!r}: {problem}")
                        del points[index]
                    else:
                        result.accepted += 1
    return result


def encode_response(message: Any, kind: str) -> bytes:
    """Serialize a response (or google.rpc.Status) in the request's encoding."""
    if kind == JSON:
        return json_format.MessageToJson(message, indent=None).encode()
    return message.SerializeToString()
