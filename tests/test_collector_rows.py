"""Golden tests: one OTLP request per signal with every value kind, stored by serve, compared with what the contrib
clickhouse exporter writes for the same input. The expected values are derived by hand from the Go source; each
comment names the function the rule comes from."""

from __future__ import annotations

import base64
import math
import time

import pytest
from collector_support import post, query, running_collector, wait_written
from llmtap.collector.values import as_string, go_float
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.proto.logs.v1 import logs_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

# An hour ago to the second, plus nanoseconds (rows older than the store's retention are dropped on insert).
SECOND = int(time.time()) - 3600
START = SECOND * 10**9 + 123_456_789
TRACE_ID = bytes(range(1, 17))
SPAN_ID = bytes(range(1, 9))
PARENT_ID = bytes(range(9, 17))
LINK_TRACE_ID = bytes(range(17, 33))


def kv(key: str, value: AnyValue) -> KeyValue:
    return KeyValue(key=key, value=value)


def array(*values: AnyValue) -> AnyValue:
    return AnyValue(array_value=ArrayValue(values=list(values)))


def kvlist(**values: AnyValue) -> AnyValue:
    return AnyValue(kvlist_value=KeyValueList(values=[kv(k, v) for k, v in values.items()]))


def S(value: str) -> AnyValue:
    return AnyValue(string_value=value)


def INT(value: int) -> AnyValue:
    return AnyValue(int_value=value)


def D(value: float) -> AnyValue:
    return AnyValue(double_value=value)


def B(value: bool) -> AnyValue:
    return AnyValue(bool_value=value)


def BY(value: bytes) -> AnyValue:
    return AnyValue(bytes_value=value)


# Every value kind, with the string pdata's Value.AsString() gives for it.
ATTRIBUTES = [
    (kv("str", S("hé <b>&</b>")), "hé <b>&</b>"),  # ValueTypeStr: unchanged, no escaping
    (kv("int", INT(-42)), "-42"),  # strconv.FormatInt(v, 10)
    (kv("int.big", INT(2**63 - 1)), "9223372036854775807"),
    (kv("bool", B(True)), "true"),  # strconv.FormatBool
    (kv("double.tenth", D(0.1)), "0.1"),  # float64AsString: shortest repr, 'f' format
    (kv("double.whole", D(100.0)), "100"),
    (kv("double.neg0", D(-0.0)), "-0"),
    (kv("double.1e20", D(1e20)), "100000000000000000000"),  # 'f' below 1e21
    (kv("double.1e21", D(1e21)), "1e+21"),  # 'e' at >= 1e21
    (kv("double.tiny", D(1e-7)), "1e-7"),  # 'e' below 1e-6, "e-07" cleaned to "e-7"
    (kv("double.small", D(2.5e-6)), "0.0000025"),
    (kv("double.nan", D(math.nan)), "json: unsupported value: NaN"),
    (kv("double.inf", D(-math.inf)), "json: unsupported value: -Inf"),
    (kv("bytes", BY(b"\x00\xffhi")), "AP9oaQ=="),  # base64.StdEncoding
    (kv("empty", AnyValue()), ""),  # ValueTypeEmpty
    # ValueTypeSlice: json.Marshal(Slice.AsRaw()); strings HTML-escaped, bytes base64, empty -> null
    (
        kv(
            "array",
            array(S("a<b>&c"), INT(1), D(2.5), D(3.0), B(False), AnyValue(), BY(b"\x01"), array(INT(1))),
        ),
        '["a\\u003cb\\u003e\\u0026c",1,2.5,3,false,null,"AQ==",[1]]',
    ),
    # ValueTypeMap: json.Marshal(Map.AsRaw()) with sorted keys, nested values the same way
    (
        kv("map", kvlist(z=D(1e-9), a=array(S("x")), m=kvlist(n=S("line\nsep\u2028")))),
        '{"a":["x"],"m":{"n":"line\\nsep\\u2028"},"z":1e-9}',
    ),
    (kv("array.nan", array(D(math.nan))), ""),  # json.Marshal fails on NaN; the error is ignored -> ""
    (kv("array.empty", array()), "[]"),
    (kv("gen_ai.request.model", S("gpt-4o")), "gpt-4o"),
    # Lengths whose Native/LEB128 prefix takes two and three bytes (values past the memo's size limit).
    (kv("content.medium", S("é" * 100)), "é" * 100),
    (kv("content.long", S("ü" * 10_000 + "!")), "ü" * 10_000 + "!"),
]


def golden_traces() -> ExportTraceServiceRequest:
    span = trace_pb2.Span(
        trace_id=TRACE_ID,
        span_id=SPAN_ID,
        parent_span_id=PARENT_ID,
        trace_state="vendor=x",
        name="chat gpt-4o",
        kind=trace_pb2.Span.SPAN_KIND_CLIENT,
        start_time_unix_nano=START,
        end_time_unix_nano=START + 1_500_000_001,
        attributes=[attribute for attribute, _ in ATTRIBUTES],
        events=[
            trace_pb2.Span.Event(
                time_unix_nano=START + 5, name="gen_ai.choice", attributes=[kv("index", INT(0))]
            )
        ],
        links=[trace_pb2.Span.Link(trace_id=LINK_TRACE_ID, span_id=SPAN_ID, attributes=[kv("l", B(False))])],
        status=trace_pb2.Status(code=trace_pb2.Status.STATUS_CODE_ERROR, message="boom"),
    )
    root = trace_pb2.Span(
        trace_id=TRACE_ID,
        span_id=PARENT_ID,
        name="root",
        start_time_unix_nano=START,
        end_time_unix_nano=START,
    )
    resource = [kv("service.name", S("golden-svc")), kv("res.int", INT(7))]
    return ExportTraceServiceRequest(
        resource_spans=[
            trace_pb2.ResourceSpans(
                resource={"attributes": resource},
                scope_spans=[
                    trace_pb2.ScopeSpans(scope={"name": "golden.scope", "version": "9.9"}, spans=[span, root])
                ],
            )
        ]
    )


def golden_metrics() -> ExportMetricsServiceRequest:
    t, t0 = SECOND * 10**9 + 999_999_999, (SECOND - 1000) * 10**9 + 1
    attrs = [kv("route", S("/chat")), kv("code", INT(200))]
    exemplar = metrics_pb2.Exemplar(time_unix_nano=t, as_int=3, trace_id=TRACE_ID, span_id=SPAN_ID)
    bare_exemplar = metrics_pb2.Exemplar(time_unix_nano=t, as_double=0.25)
    metrics = [
        metrics_pb2.Metric(
            name="g", description="a gauge", unit="1",
            gauge=metrics_pb2.Gauge(data_points=[metrics_pb2.NumberDataPoint(
                start_time_unix_nano=t0, time_unix_nano=t, as_int=5, attributes=attrs, flags=1,
                exemplars=[exemplar, bare_exemplar])]),
        ),
        metrics_pb2.Metric(
            name="s", unit="By",
            sum=metrics_pb2.Sum(aggregation_temporality=2, is_monotonic=True, data_points=[
                metrics_pb2.NumberDataPoint(start_time_unix_nano=t0, time_unix_nano=t, as_double=1.5)]),
        ),
        metrics_pb2.Metric(
            name="h", unit="s",
            histogram=metrics_pb2.Histogram(aggregation_temporality=1, data_points=[metrics_pb2.HistogramDataPoint(
                start_time_unix_nano=t0, time_unix_nano=t, count=3, sum=4.5, bucket_counts=[1, 2, 0],
                explicit_bounds=[1.0, 2.0], min=0.5, max=2.0)]),
        ),
        metrics_pb2.Metric(
            name="eh",
            exponential_histogram=metrics_pb2.ExponentialHistogram(aggregation_temporality=2, data_points=[
                metrics_pb2.ExponentialHistogramDataPoint(
                    start_time_unix_nano=t0, time_unix_nano=t, count=4, scale=3, zero_count=1,
                    positive=metrics_pb2.ExponentialHistogramDataPoint.Buckets(offset=-2, bucket_counts=[1, 2]),
                    negative=metrics_pb2.ExponentialHistogramDataPoint.Buckets(offset=1, bucket_counts=[0]))]),
        ),
        metrics_pb2.Metric(
            name="sm",
            summary=metrics_pb2.Summary(data_points=[metrics_pb2.SummaryDataPoint(
                start_time_unix_nano=t0, time_unix_nano=t, count=10, sum=20.0,
                quantile_values=[metrics_pb2.SummaryDataPoint.ValueAtQuantile(quantile=0.5, value=1.5)])]),
        ),
    ]  # fmt: skip
    return ExportMetricsServiceRequest(
        resource_metrics=[
            metrics_pb2.ResourceMetrics(
                resource={"attributes": [kv("service.name", S("golden-svc"))]},
                schema_url="https://res/1",
                scope_metrics=[
                    metrics_pb2.ScopeMetrics(
                        scope={
                            "name": "meter",
                            "version": "2",
                            "attributes": [kv("sa", INT(1))],
                            "dropped_attributes_count": 4,
                        },
                        schema_url="https://scope/1",
                        metrics=metrics,
                    )
                ],
            )
        ]
    )


def golden_logs() -> ExportLogsServiceRequest:
    record = logs_pb2.LogRecord(
        time_unix_nano=0,
        observed_time_unix_nano=START,
        severity_number=9,
        severity_text="INFO",
        body=kvlist(msg=S("hi"), n=INT(2)),
        attributes=[kv("a", D(1.25))],
        flags=0x101,
        trace_id=TRACE_ID,
        span_id=SPAN_ID,
        event_name="gen_ai.client.inference.operation.details",
    )
    return ExportLogsServiceRequest(
        resource_logs=[
            logs_pb2.ResourceLogs(
                resource={"attributes": [kv("service.name", INT(12))]},  # non-string service.name: AsString
                schema_url="https://res/2",
                scope_logs=[
                    logs_pb2.ScopeLogs(
                        scope={"name": "logger"}, schema_url="https://scope/2", log_records=[record]
                    )
                ],
            )
        ]
    )


@pytest.fixture(scope="module", params=[1, -1], ids=["encoder-workers", "in-writer"])
def collector(request, tmp_path_factory):
    # Both write paths must store the same rows: encoders serializing Native blocks (serve's normal path, the
    # same code in a thread or in worker processes) and the writer's own column inserts (replays and retries).
    with running_collector(tmp_path_factory.mktemp("golden"), workers=request.param) as running:
        yield running


def test_traces_row_is_the_exporters(collector):
    status, _, _ = post(collector.http_url + "/v1/traces", golden_traces().SerializeToString())
    assert status == 200
    wait_written(collector, "traces", 2)
    rows = query(
        collector,
        "SELECT toUnixTimestamp64Nano(Timestamp), TraceId, SpanId, ParentSpanId, TraceState, SpanName, SpanKind, "
        "ServiceName, ResourceAttributes, ScopeName, ScopeVersion, SpanAttributes, Duration, StatusCode, "
        "StatusMessage, arrayMap(t -> toUnixTimestamp64Nano(t), Events.Timestamp), Events.Name, Events.Attributes, "
        "Links.TraceId, Links.SpanId, Links.TraceState, Links.Attributes FROM otel_traces ORDER BY SpanName",
    )
    assert len(rows) == 2
    expected_attributes = {attribute.key: text for attribute, text in ATTRIBUTES}
    assert rows[0] == (
        START,
        TRACE_ID.hex(),  # traceutil.TraceIDToHexOrEmptyString
        SPAN_ID.hex(),
        PARENT_ID.hex(),
        "vendor=x",  # TraceState().AsRaw()
        "chat gpt-4o",
        "Client",  # ptrace.SpanKind.String()
        "golden-svc",  # internal.GetServiceName
        {"res.int": "7", "service.name": "golden-svc"},  # internal.AttributesToMap, sorted by key
        "golden.scope",
        "9.9",
        dict(sorted(expected_attributes.items())),
        1_500_000_001,  # EndTimestamp - StartTimestamp
        "Error",  # ptrace.StatusCode.String()
        "boom",
        [START + 5],  # convertEvents
        ["gen_ai.choice"],
        [{"index": "0"}],
        [LINK_TRACE_ID.hex()],  # convertLinks
        [SPAN_ID.hex()],
        [""],
        [{"l": "false"}],
    )
    assert list(rows[0][11]) == sorted(expected_attributes)  # stored in key order, like the ordered map
    root = rows[1]
    assert (root[3], root[6], root[12], root[13], root[15], root[18]) == (
        "",
        "Unspecified",
        0,
        "Unset",
        [],
        [],
    )


def test_metrics_rows_are_the_exporters(collector):
    status, _, _ = post(collector.http_url + "/v1/metrics", golden_metrics().SerializeToString())
    assert status == 200
    wait_written(collector, "metrics", 5)
    head = (
        "ResourceAttributes, ResourceSchemaUrl, ScopeName, ScopeVersion, ScopeAttributes, ScopeDroppedAttrCount, "
        "ScopeSchemaUrl, ServiceName, MetricName, MetricDescription, MetricUnit, Attributes, "
        "toUnixTimestamp(StartTimeUnix), toUnixTimestamp(TimeUnix)"
    )
    common = (
        {"service.name": "golden-svc"},
        "https://res/1",
        "meter",
        "2",
        {"sa": "1"},
        4,
        "https://scope/1",
        "golden-svc",
    )
    t, t0 = SECOND, SECOND - 1000  # DateTime: whole seconds of the nanosecond times
    gauge = query(collector, f"SELECT {head}, Value, Flags, Exemplars.FilteredAttributes, "
                  "arrayMap(x -> toUnixTimestamp(x), Exemplars.TimeUnix), Exemplars.Value, Exemplars.SpanId, "
                  "Exemplars.TraceId FROM otel_metrics_gauge")  # fmt: skip
    assert gauge == [
        (*common, "g", "a gauge", "1", {"code": "200", "route": "/chat"}, t0, t,
         5.0, 1, [{}, {}], [t, t], [3.0, 0.25],
         [SPAN_ID.hex(), "0" * 16], [TRACE_ID.hex(), "0" * 32])  # exemplar ids: hex.EncodeToString, zeros when empty
    ]  # fmt: skip
    total = query(
        collector, f"SELECT {head}, Value, AggregationTemporality, IsMonotonic FROM otel_metrics_sum"
    )
    assert total == [(*common, "s", "", "By", {}, t0, t, 1.5, 2, True)]
    histogram = query(
        collector,
        f"SELECT {head}, Count, Sum, BucketCounts, ExplicitBounds, Min, Max, AggregationTemporality "
        "FROM otel_metrics_histogram",
    )
    assert histogram == [(*common, "h", "", "s", {}, t0, t, 3, 4.5, [1, 2, 0], [1.0, 2.0], 0.5, 2.0, 1)]
    exponential = query(
        collector,
        f"SELECT {head}, Count, Sum, Scale, ZeroCount, PositiveOffset, PositiveBucketCounts, NegativeOffset, "
        "NegativeBucketCounts, Min, Max FROM otel_metrics_exponential_histogram",
    )
    assert exponential == [(*common, "eh", "", "", {}, t0, t, 4, 0.0, 3, 1, -2, [1, 2], 1, [0], 0.0, 0.0)]
    summary = query(
        collector,
        f"SELECT {head}, Count, Sum, ValueAtQuantiles.Quantile, ValueAtQuantiles.Value FROM otel_metrics_summary",
    )
    assert summary == [(*common, "sm", "", "", {}, t0, t, 10, 20.0, [0.5], [1.5])]


def test_logs_row_is_the_exporters(collector):
    status, _, _ = post(collector.http_url + "/v1/logs", golden_logs().SerializeToString())
    assert status == 200
    wait_written(collector, "logs", 1)
    rows = query(
        collector,
        "SELECT toUnixTimestamp64Nano(Timestamp), TraceId, SpanId, TraceFlags, SeverityText, SeverityNumber, "
        "ServiceName, Body, ResourceSchemaUrl, ResourceAttributes, ScopeSchemaUrl, ScopeName, ScopeVersion, "
        "ScopeAttributes, LogAttributes, EventName FROM otel_logs",
    )
    assert rows == [
        (
            START,  # Timestamp 0 -> ObservedTimestamp
            TRACE_ID.hex(),
            SPAN_ID.hex(),
            1,  # uint8(r.Flags())
            "INFO",
            9,
            "12",  # GetServiceName uses AsString
            '{"msg":"hi","n":2}',  # Body().AsString()
            "https://res/2",
            {"service.name": "12"},
            "https://scope/2",
            "logger",
            "",
            {},
            {"a": "1.25"},
            "gen_ai.client.inference.operation.details",
        )
    ]


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1.0, "1"), (-2.5, "-2.5"), (123456789.125, "123456789.125"), (1e16, "10000000000000000"),
        (1.2345678901234566e17, "123456789012345660"), (1e-6, "0.000001"), (9.99e-7, "9.99e-7"),
        (5e-324, "5e-324"), (1.7976931348623157e308, "1.7976931348623157e+308"), (-1e21, "-1e+21"),
        (1e-10, "1e-10"), (0.0, "0"), (math.inf, "json: unsupported value: +Inf"),
    ],
)  # fmt: skip
def test_go_float_formatting(value, text):
    # strconv.AppendFloat(f, 'f'|'e', -1, 64) plus encoding/json's exponent clean-up.
    assert go_float(value) == text


def test_bytes_and_control_characters():
    assert as_string(BY(b"")) == ""
    assert as_string(array(S("\x01\t\x7f\u2029"))) == '["\\u0001\\t\x7f\\u2029"]'
    assert as_string(array(BY(b"\xfb\xff"))) == '["' + base64.b64encode(b"\xfb\xff").decode() + '"]'
    duplicate = AnyValue(kvlist_value=KeyValueList(values=[kv("k", S("first")), kv("k", S("second"))]))
    assert as_string(duplicate) == '{"k":"second"}'  # Map.AsRaw builds a Go map: the last duplicate wins
