"""OTLP export requests -> column-oriented rows for the exporter's tables (the value rules of the contrib exporter).

:func:`add_request` parses a spooled export request and appends its rows to a :class:`Batch`, a set of per-table
column lists ready for ``client.insert(..., column_oriented=True)``. The request is parsed with the classes of
:mod:`llmtap.collector.request_views`, which leave attribute lists encoded for the memoized
:func:`~llmtap.collector.values.encoded_attributes_to_map`. One function per signal mirrors the newest contrib
exporter (exporter/clickhouseexporter): traces ``pushTraceData`` in exporter_traces.go, logs ``pushLogsData`` in
exporter_logs.go, metrics the ``insert`` methods in internal/metrics/*_metrics.go. Timestamps are passed as
integers (nanoseconds for DateTime64(9), seconds for DateTime) so no precision is lost on the way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from llmtap.collector.request_views import VIEW_TYPES, parse_view
from llmtap.collector.values import as_string as value_as_string
from llmtap.collector.values import (
    attributes_to_map,
    encoded_attributes_to_map,
    fixed_span_id_hex,
    fixed_trace_id_hex,
    service_name,
    span_id_hex,
    trace_id_hex,
)

# ptrace.SpanKind.String() and ptrace.StatusCode.String() (pdata), indexed by the OTLP enum number.
SPAN_KINDS = ("Unspecified", "Internal", "Server", "Client", "Producer", "Consumer")
STATUS_CODES = ("Unset", "Ok", "Error")

TRACES_TABLE = "otel_traces"
LOGS_TABLE = "otel_logs"
GAUGE_TABLE = "otel_metrics_gauge"
SUM_TABLE = "otel_metrics_sum"
HISTOGRAM_TABLE = "otel_metrics_histogram"
EXP_HISTOGRAM_TABLE = "otel_metrics_exponential_histogram"
SUMMARY_TABLE = "otel_metrics_summary"

# Column order of each table's INSERT, as in the exporter's sqltemplates/*_insert.sql.
TRACES_COLUMNS = (
    "Timestamp", "TraceId", "SpanId", "ParentSpanId", "TraceState", "SpanName", "SpanKind", "ServiceName",
    "ResourceAttributes", "ScopeName", "ScopeVersion", "SpanAttributes", "Duration", "StatusCode", "StatusMessage",
    "Events.Timestamp", "Events.Name", "Events.Attributes",
    "Links.TraceId", "Links.SpanId", "Links.TraceState", "Links.Attributes",
)  # fmt: skip
LOGS_COLUMNS = (
    "Timestamp", "TraceId", "SpanId", "TraceFlags", "SeverityText", "SeverityNumber", "ServiceName", "Body",
    "ResourceSchemaUrl", "ResourceAttributes", "ScopeSchemaUrl", "ScopeName", "ScopeVersion", "ScopeAttributes",
    "LogAttributes", "EventName",
)  # fmt: skip
_METRIC_HEAD = (
    "ResourceAttributes", "ResourceSchemaUrl", "ScopeName", "ScopeVersion", "ScopeAttributes",
    "ScopeDroppedAttrCount", "ScopeSchemaUrl", "ServiceName", "MetricName", "MetricDescription", "MetricUnit",
    "Attributes", "StartTimeUnix", "TimeUnix",
)  # fmt: skip
_EXEMPLARS = (
    "Exemplars.FilteredAttributes", "Exemplars.TimeUnix", "Exemplars.Value", "Exemplars.SpanId", "Exemplars.TraceId",
)  # fmt: skip
METRICS_COLUMNS = {
    GAUGE_TABLE: (*_METRIC_HEAD, "Value", "Flags", *_EXEMPLARS),
    SUM_TABLE: (*_METRIC_HEAD, "Value", "Flags", *_EXEMPLARS, "AggregationTemporality", "IsMonotonic"),
    HISTOGRAM_TABLE: (
        *_METRIC_HEAD, "Count", "Sum", "BucketCounts", "ExplicitBounds", *_EXEMPLARS, "Flags", "Min", "Max",
        "AggregationTemporality",
    ),
    EXP_HISTOGRAM_TABLE: (
        *_METRIC_HEAD, "Count", "Sum", "Scale", "ZeroCount", "PositiveOffset", "PositiveBucketCounts",
        "NegativeOffset", "NegativeBucketCounts", *_EXEMPLARS, "Flags", "Min", "Max", "AggregationTemporality",
    ),
    SUMMARY_TABLE: (*_METRIC_HEAD, "Count", "Sum", "ValueAtQuantiles.Quantile", "ValueAtQuantiles.Value", "Flags"),
}  # fmt: skip
TABLE_COLUMNS: dict[str, tuple[str, ...]] = {
    TRACES_TABLE: TRACES_COLUMNS,
    LOGS_TABLE: LOGS_COLUMNS,
    **METRICS_COLUMNS,
}

_NS = 1_000_000_000
_NONE = ()  # the value of every empty Events/Links array: shared, so spans without any allocate nothing


class Batch:
    """Rows for several tables, kept column by column (what clickhouse-connect inserts fastest).

    ``attributes`` turns a span's (or its events' and links') encoded attribute list into its map value: a dict
    by default, or entries already in Native form for serve's own Native writer (see llmtap.collector.native).
    """

    def __init__(self, attributes: Callable[[Sequence[bytes]], Any] = encoded_attributes_to_map) -> None:
        self.columns: dict[str, dict[str, list[Any]]] = {}
        self.attributes = attributes

    def table(self, name: str) -> dict[str, list[Any]]:
        columns = self.columns.get(name)
        if columns is None:
            columns = self.columns[name] = {column: [] for column in TABLE_COLUMNS[name]}
        return columns

    def rows(self, name: str) -> int:
        columns = self.columns.get(name)
        return len(next(iter(columns.values()))) if columns else 0

    def total_rows(self) -> int:
        return sum(self.rows(name) for name in self.columns)

    def __bool__(self) -> bool:
        return self.total_rows() > 0


def add_request(batch: Batch, signal: str, payload: bytes) -> int:
    """Append the rows of one serialized export request of ``signal``; returns how many items it held."""
    return _CONVERTERS[signal](batch, parse_view(signal, payload))


def _view(signal: str, request: Any) -> Any:
    """The request as its view class (callers may hold the generated class)."""
    if isinstance(request, VIEW_TYPES[signal]):
        return request
    return parse_view(signal, request.SerializeToString())


def add_traces(batch: Batch, request: Any) -> int:
    """Append one ExportTraceServiceRequest; returns the number of span rows (exporter pushTraceData)."""
    request = _view("traces", request)
    columns = batch.table(TRACES_TABLE)
    c_ts, c_trace, c_span, c_parent = (columns[n] for n in ("Timestamp", "TraceId", "SpanId", "ParentSpanId"))
    c_state, c_name, c_kind, c_service = (
        columns[n] for n in ("TraceState", "SpanName", "SpanKind", "ServiceName")
    )
    c_res, c_scope, c_scope_v, c_attrs = (
        columns[n] for n in ("ResourceAttributes", "ScopeName", "ScopeVersion", "SpanAttributes")
    )
    c_duration, c_status, c_message = (columns[n] for n in ("Duration", "StatusCode", "StatusMessage"))
    c_ev_ts, c_ev_name, c_ev_attrs = (
        columns[n] for n in ("Events.Timestamp", "Events.Name", "Events.Attributes")
    )
    c_ln_trace, c_ln_span, c_ln_state, c_ln_attrs = (
        columns[n] for n in ("Links.TraceId", "Links.SpanId", "Links.TraceState", "Links.Attributes")
    )
    to_map = batch.attributes
    count = 0
    for resource_spans in request.resource_spans:
        resource_attributes = resource_spans.resource.attributes
        resource = attributes_to_map(resource_attributes)
        service = service_name(resource_attributes)
        for scope_spans in resource_spans.scope_spans:
            scope_name = scope_spans.scope.name
            scope_version = scope_spans.scope.version
            for span in scope_spans.spans:
                start = span.start_time_unix_nano
                c_ts.append(start)
                c_trace.append(trace_id_hex(span.trace_id))
                c_span.append(span_id_hex(span.span_id))
                c_parent.append(span_id_hex(span.parent_span_id))
                c_state.append(span.trace_state)
                c_name.append(span.name)
                kind = span.kind
                c_kind.append(SPAN_KINDS[kind] if 0 <= kind < 6 else "")
                c_service.append(service)
                c_res.append(resource)
                c_scope.append(scope_name)
                c_scope_v.append(scope_version)
                c_attrs.append(to_map(span.attributes))
                # EndTimestamp - StartTimestamp on uint64 (decoding rejects end < start, so no wrap-around).
                c_duration.append(span.end_time_unix_nano - start)
                code = span.status.code
                c_status.append(STATUS_CODES[code] if 0 <= code < 3 else "")
                c_message.append(span.status.message)
                events = span.events
                if events:  # convertEvents
                    c_ev_ts.append([event.time_unix_nano for event in events])
                    c_ev_name.append([event.name for event in events])
                    c_ev_attrs.append([to_map(event.attributes) for event in events])
                else:
                    c_ev_ts.append(_NONE)
                    c_ev_name.append(_NONE)
                    c_ev_attrs.append(_NONE)
                links = span.links
                if links:  # convertLinks
                    c_ln_trace.append([trace_id_hex(link.trace_id) for link in links])
                    c_ln_span.append([span_id_hex(link.span_id) for link in links])
                    c_ln_state.append([link.trace_state for link in links])
                    c_ln_attrs.append([to_map(link.attributes) for link in links])
                else:
                    c_ln_trace.append(_NONE)
                    c_ln_span.append(_NONE)
                    c_ln_state.append(_NONE)
                    c_ln_attrs.append(_NONE)
                count += 1
    return count


def add_logs(batch: Batch, request: Any) -> int:
    """Append one ExportLogsServiceRequest; returns the number of log rows (exporter pushLogsData)."""
    request = _view("logs", request)
    columns = batch.table(LOGS_TABLE)
    count = 0
    for resource_logs in request.resource_logs:
        resource_attributes = resource_logs.resource.attributes
        resource = attributes_to_map(resource_attributes)
        service = service_name(resource_attributes)
        resource_url = resource_logs.schema_url
        for scope_logs in resource_logs.scope_logs:
            scope = scope_logs.scope
            scope_attributes = attributes_to_map(scope.attributes)
            for record in scope_logs.log_records:
                # A record without its own time is stored at its observed time.
                columns["Timestamp"].append(record.time_unix_nano or record.observed_time_unix_nano)
                columns["TraceId"].append(trace_id_hex(record.trace_id))
                columns["SpanId"].append(span_id_hex(record.span_id))
                columns["TraceFlags"].append(record.flags & 0xFF)  # uint8(r.Flags())
                columns["SeverityText"].append(record.severity_text)
                columns["SeverityNumber"].append(record.severity_number & 0xFF)  # uint8(r.SeverityNumber())
                columns["ServiceName"].append(service)
                columns["Body"].append(value_as_string(record.body))
                columns["ResourceSchemaUrl"].append(resource_url)
                columns["ResourceAttributes"].append(resource)
                columns["ScopeSchemaUrl"].append(scope_logs.schema_url)
                columns["ScopeName"].append(scope.name)
                columns["ScopeVersion"].append(scope.version)
                columns["ScopeAttributes"].append(scope_attributes)
                columns["LogAttributes"].append(encoded_attributes_to_map(record.attributes))
                columns["EventName"].append(record.event_name)
                count += 1
    return count


def _number(point: Any) -> float:
    """metrics getValue: int -> float64, double as is, an unset value -> 0."""
    kind = point.WhichOneof("value")
    if kind == "as_int":
        return float(point.as_int)
    if kind == "as_double":
        return point.as_double
    return 0.0


def _append_exemplars(columns: dict[str, list[Any]], exemplars: Any) -> None:
    """metrics convertExemplars (ids always hex-encoded, zeros when empty)."""
    columns["Exemplars.FilteredAttributes"].append(
        [encoded_attributes_to_map(e.filtered_attributes) for e in exemplars]
    )
    columns["Exemplars.TimeUnix"].append([e.time_unix_nano // _NS for e in exemplars])
    columns["Exemplars.Value"].append([_number(e) for e in exemplars])
    columns["Exemplars.SpanId"].append([fixed_span_id_hex(e.span_id) for e in exemplars])
    columns["Exemplars.TraceId"].append([fixed_trace_id_hex(e.trace_id) for e in exemplars])


def add_metrics(batch: Batch, request: Any) -> int:
    """Append one ExportMetricsServiceRequest; returns the number of data point rows."""
    request = _view("metrics", request)
    count = 0
    for resource_metrics in request.resource_metrics:
        resource_attributes = resource_metrics.resource.attributes
        head = {
            "ResourceAttributes": attributes_to_map(resource_attributes),
            "ResourceSchemaUrl": resource_metrics.schema_url,
            "ServiceName": service_name(resource_attributes),
        }
        for scope_metrics in resource_metrics.scope_metrics:
            scope = scope_metrics.scope
            head["ScopeName"] = scope.name
            head["ScopeVersion"] = scope.version
            head["ScopeAttributes"] = attributes_to_map(scope.attributes)
            head["ScopeDroppedAttrCount"] = scope.dropped_attributes_count
            head["ScopeSchemaUrl"] = scope_metrics.schema_url
            for metric in scope_metrics.metrics:
                head["MetricName"] = metric.name
                head["MetricDescription"] = metric.description
                head["MetricUnit"] = metric.unit
                count += _add_metric(batch, head, metric)
    return count


def _add_metric(batch: Batch, head: dict[str, Any], metric: Any) -> int:
    kind = metric.WhichOneof("data")
    if kind is None:
        return 0
    table = {
        "gauge": GAUGE_TABLE,
        "sum": SUM_TABLE,
        "histogram": HISTOGRAM_TABLE,
        "exponential_histogram": EXP_HISTOGRAM_TABLE,
        "summary": SUMMARY_TABLE,
    }[kind]
    data = getattr(metric, kind)
    columns = batch.table(table)
    for point in data.data_points:
        for name, value in head.items():
            columns[name].append(value)
        columns["Attributes"].append(encoded_attributes_to_map(point.attributes))
        columns["StartTimeUnix"].append(point.start_time_unix_nano // _NS)  # DateTime: whole seconds
        columns["TimeUnix"].append(point.time_unix_nano // _NS)
        columns["Flags"].append(point.flags)
        if kind in ("gauge", "sum"):
            columns["Value"].append(_number(point))
        else:
            columns["Count"].append(point.count)
            columns["Sum"].append(point.sum)  # 0 when the optional sum is unset, like dp.Sum()
        if kind == "summary":
            columns["ValueAtQuantiles.Quantile"].append([q.quantile for q in point.quantile_values])
            columns["ValueAtQuantiles.Value"].append([q.value for q in point.quantile_values])
            continue
        _append_exemplars(columns, point.exemplars)
        if kind == "sum":
            columns["AggregationTemporality"].append(data.aggregation_temporality)
            columns["IsMonotonic"].append(data.is_monotonic)
            continue
        if kind == "gauge":
            continue
        columns["Min"].append(point.min)
        columns["Max"].append(point.max)
        columns["AggregationTemporality"].append(data.aggregation_temporality)
        if kind == "histogram":
            columns["BucketCounts"].append(list(point.bucket_counts))
            columns["ExplicitBounds"].append(list(point.explicit_bounds))
        else:
            columns["Scale"].append(point.scale)
            columns["ZeroCount"].append(point.zero_count)
            columns["PositiveOffset"].append(point.positive.offset)
            columns["PositiveBucketCounts"].append(list(point.positive.bucket_counts))
            columns["NegativeOffset"].append(point.negative.offset)
            columns["NegativeBucketCounts"].append(list(point.negative.bucket_counts))
    return len(data.data_points)


_CONVERTERS = {"traces": add_traces, "metrics": add_metrics, "logs": add_logs}
