"""`llmtap serve` receivers with real clients: the official Python OTLP exporters over HTTP and gRPC for all three
signals, OTLP/JSON and gzip bodies, the OTLP error answers, auth, overload and the local query API."""

from __future__ import annotations

import json
import socket
import time

import grpc
import pytest
from collector_support import post, query, running_collector, settle, wait_written
from fake_openai_helpers import reset_mid_request
from google.rpc import error_details_pb2, status_pb2
from llmtap.collector.app import ConfigError, ServeConfig
from llmtap.collector.pipeline import Limits
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GRPCLogExporter
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GRPCMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GRPCSpanExporter
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HTTPLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HTTPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HTTPSpanExporter
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

TOKEN = "s3cret-token"
# Span times a minute ago: rows older than the store's retention are dropped on insert.
START_NS = (int(time.time()) - 60) * 10**9


def span_request(*spans: trace_pb2.Span, service: str = "raw") -> bytes:
    return trace_service_pb2.ExportTraceServiceRequest(
        resource_spans=[
            trace_pb2.ResourceSpans(
                resource={"attributes": [{"key": "service.name", "value": {"string_value": service}}]},
                scope_spans=[trace_pb2.ScopeSpans(spans=list(spans))],
            )
        ]
    ).SerializeToString()


def good_span(name: str, trace_id: bytes = b"\x01" * 16) -> trace_pb2.Span:
    return trace_pb2.Span(
        trace_id=trace_id, span_id=b"\x02" * 8, name=name, start_time_unix_nano=START_NS,
        end_time_unix_nano=START_NS + 500_000_000,
    )  # fmt: skip


def status_of(body: bytes) -> status_pb2.Status:
    return status_pb2.Status.FromString(body)


@pytest.fixture(scope="module")
def collector(tmp_path_factory):
    with running_collector(tmp_path_factory.mktemp("receivers"), max_body_bytes=256 << 10) as running:
        yield running


def emit_all_signals(service: str, span_exporter, metric_exporter, log_exporter) -> None:
    """What `opentelemetry-instrument` does by default: traces, metrics and logs through OTLP."""
    resource = Resource.create({"service.name": service})
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(SimpleSpanProcessor(span_exporter))
    tracer = tracer_provider.get_tracer("test.tracer", "1.0")
    with tracer.start_as_current_span("chat gpt-4o", attributes={"gen_ai.request.model": "gpt-4o"}) as span:
        span.set_attribute("gen_ai.usage.input_tokens", 12)
    tracer_provider.shutdown()

    reader = PeriodicExportingMetricReader(metric_exporter, export_interval_millis=60_000)
    meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
    meter = meter_provider.get_meter("test.meter")
    meter.create_counter("gen_ai.requests").add(3, {"model": "gpt-4o"})
    meter.create_histogram("gen_ai.client.operation.duration", unit="s").record(0.25)
    meter_provider.shutdown()

    logger_provider = LoggerProvider(resource=resource)
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(log_exporter))
    logger_provider.get_logger("test.logger").emit(
        body=f"hello from {service}", severity_text="WARN", severity_number=SeverityNumber.WARN
    )
    logger_provider.shutdown()


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_official_python_exporters_store_all_three_signals(collector, transport):
    service = f"py-{transport}"
    if transport == "http":
        base = collector.http_url
        exporters = (
            HTTPSpanExporter(endpoint=f"{base}/v1/traces"),
            HTTPMetricExporter(endpoint=f"{base}/v1/metrics"),
            HTTPLogExporter(endpoint=f"{base}/v1/logs"),
        )
    else:
        endpoint = f"127.0.0.1:{collector.grpc_port}"
        exporters = (
            GRPCSpanExporter(endpoint=endpoint, insecure=True),
            GRPCMetricExporter(endpoint=endpoint, insecure=True),
            GRPCLogExporter(endpoint=endpoint, insecure=True),
        )
    before = collector.stats.snapshot()["signals"]
    emit_all_signals(service, *exporters)
    wait_written(collector, "traces", before["traces"]["written"] + 1)
    wait_written(collector, "metrics", before["metrics"]["written"] + 2)
    wait_written(collector, "logs", before["logs"]["written"] + 1)
    spans = query(
        collector,
        "SELECT SpanName, SpanKind, StatusCode, SpanAttributes['gen_ai.usage.input_tokens'], ScopeName "
        "FROM otel_traces WHERE ServiceName = {s:String}",
        {"s": service},
    )
    assert spans == [("chat gpt-4o", "Internal", "Unset", "12", "test.tracer")]
    sums = query(collector, "SELECT MetricName, Value, Attributes FROM otel_metrics_sum WHERE ServiceName = {s:String}",
                 {"s": service})  # fmt: skip
    assert sums == [("gen_ai.requests", 3.0, {"model": "gpt-4o"})]
    histograms = query(collector, "SELECT MetricName, Count, Sum FROM otel_metrics_histogram WHERE ServiceName = {s:String}",
                       {"s": service})  # fmt: skip
    assert histograms == [("gen_ai.client.operation.duration", 1, 0.25)]
    logs = query(
        collector, "SELECT Body, SeverityText FROM otel_logs WHERE ServiceName = {s:String}", {"s": service}
    )
    assert logs == [(f"hello from {service}", "WARN")]


def test_otlp_json_with_hex_ids_camel_case_and_enum_numbers(collector):
    body = {
        "resourceSpans": [{
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "json-svc"}}]},
            "scopeSpans": [{
                "scope": {"name": "json.scope"},
                "spans": [{
                    "traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174",
                    "parentSpanId": "", "name": "json span", "kind": 3,
                    "startTimeUnixNano": str(START_NS), "endTimeUnixNano": START_NS + 100,
                    "attributes": [{"key": "n", "value": {"intValue": "7"}},
                                   {"key": "raw", "value": {"bytesValue": "AQI="}}],
                    "status": {"code": 2}, "unknownField": {"ignored": True},
                }],
            }],
        }]
    }  # fmt: skip
    status, headers, answer = post(
        collector.http_url + "/v1/traces", json.dumps(body).encode(), "application/json"
    )
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert json.loads(answer) == {}
    settle(collector)
    rows = query(collector, "SELECT TraceId, SpanId, SpanKind, StatusCode, Duration, SpanAttributes FROM otel_traces "
                 "WHERE ServiceName = 'json-svc'")  # fmt: skip
    assert rows == [
        (
            "5b8efff798038103d269b633813fc60c",
            "eee19b7ec3c1b174",
            "Client",
            "Error",
            100,
            {"n": "7", "raw": "AQI="},
        )
    ]


def test_gzip_protobuf_body(collector):
    status, _, _ = post(
        collector.http_url + "/v1/traces", span_request(good_span("zipped"), service="gz"), compress=True
    )
    assert status == 200
    settle(collector)
    assert query(collector, "SELECT SpanName FROM otel_traces WHERE ServiceName = 'gz'") == [("zipped",)]


def test_partial_success_rejects_only_the_invalid_spans(collector):
    bad_id = good_span("bad id", trace_id=b"\x01" * 5)
    backwards = good_span("backwards")
    backwards.end_time_unix_nano = backwards.start_time_unix_nano - 1
    too_late = good_span("year 2200")
    too_late.start_time_unix_nano = too_late.end_time_unix_nano = 7_258_118_400 * 10**9
    status, _, answer = post(
        collector.http_url + "/v1/traces",
        span_request(good_span("kept"), bad_id, backwards, too_late, service="ps"),
    )
    assert status == 200
    partial = trace_service_pb2.ExportTraceServiceResponse.FromString(answer).partial_success
    assert partial.rejected_spans == 3
    assert "trace_id must be 16 bytes, got 5" in partial.error_message
    assert "before start_time_unix_nano" in partial.error_message
    assert "beyond 2106" in partial.error_message
    settle(collector)
    assert query(collector, "SELECT SpanName FROM otel_traces WHERE ServiceName = 'ps'") == [("kept",)]


@pytest.mark.parametrize(
    ("path", "body", "content_type", "headers", "status", "message"),
    [
        ("/v1/traces", b"\xff\xff\xff", "application/x-protobuf", {}, 400, "malformed protobuf"),
        ("/v1/metrics", b"{not json", "application/json", {}, 400, "malformed JSON"),
        ("/v1/logs", b'{"resourceLogs": 3}', "application/json", {}, 400, "malformed OTLP JSON"),
        ("/v1/traces", b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"zz"}]}]}]}', "application/json", {},
         400, "is not hex"),
        ("/v1/traces", b"x", "text/plain", {}, 415, "unsupported Content-Type"),
        ("/v1/traces", b"x", "application/x-protobuf", {"Content-Encoding": "br"}, 415, "Content-Encoding"),
        ("/v1/traces", b"not gzip", "application/x-protobuf", {"Content-Encoding": "gzip"}, 400, "malformed gzip"),
        ("/v1/traces", b"\0" * (300 << 10), "application/x-protobuf", {}, 413, "exceeds"),
    ],
)  # fmt: skip
def test_bad_input_gets_a_clear_error_and_changes_nothing(
    collector, path, body, content_type, headers, status, message
):
    before = collector.stats.snapshot()["signals"]
    code, answer_headers, answer = post(collector.http_url + path, body, content_type, headers)
    assert code == status
    if answer_headers["Content-Type"] == "application/json":
        assert message in json.loads(answer)["message"]
    else:
        assert message in status_of(answer).message
    after = collector.stats.snapshot()["signals"]
    assert all(after[s]["received"] == before[s]["received"] for s in after)
    ok, _, _ = post(
        collector.http_url + "/v1/traces", span_request(good_span("still fine"), service="after-bad")
    )
    assert ok == 200


def test_gzip_bomb_is_refused(collector):
    import gzip

    code, _, answer = post(collector.http_url + "/v1/traces", gzip.compress(b"\0" * (2 << 20)),
                           headers={"Content-Encoding": "gzip"})  # fmt: skip
    assert code == 413
    assert "decompressed body exceeds" in status_of(answer).message


def test_unknown_paths_and_methods(collector):
    assert post(collector.http_url + "/v2/traces", b"")[0] == 404
    import urllib.error
    import urllib.request

    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(collector.http_url + "/v1/traces")
    assert info.value.code == 405


def test_grpc_malformed_request_is_invalid_argument(collector):
    with grpc.insecure_channel(f"127.0.0.1:{collector.grpc_port}") as channel:
        call = channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export")
        with pytest.raises(grpc.RpcError) as info:
            call(b"\xff\xff\xff", timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "malformed protobuf" in info.value.details()


def test_health_and_self_metrics(collector):
    import urllib.request

    with urllib.request.urlopen(collector.http_url + "/health") as response:
        health = json.loads(response.read())
    assert health["status"] == "ok" and health["store_up"] is True
    assert health["signals"]["traces"]["received"] >= 1
    assert set(health["write_latency_ms"]) == {"p50", "p99"}
    with urllib.request.urlopen(collector.http_url + "/metrics") as response:
        text = response.read().decode()
    assert 'llmtap_serve_items_received_total{signal="traces"}' in text
    assert "llmtap_serve_write_latency_p99_ms" in text


def test_query_api_reads_with_bound_parameters_and_refuses_writes(collector):
    post(collector.http_url + "/v1/traces", span_request(good_span("queried"), service="q"))
    settle(collector)
    request = {
        "query": "SELECT SpanName FROM otel_traces WHERE ServiceName = {svc:String}",
        "parameters": {"svc": "q"},
    }
    status, headers, answer = post(
        collector.http_url + "/api/query", json.dumps(request).encode(), "application/json"
    )
    assert status == 200 and headers["Content-Type"] == "application/x-ndjson"
    assert [json.loads(line) for line in answer.splitlines()] == [{"SpanName": "queried"}]
    for sql in ("INSERT INTO otel_traces (SpanName) VALUES ('x')", "DROP TABLE otel_traces"):
        status, _, answer = post(
            collector.http_url + "/api/query", json.dumps({"query": sql}).encode(), "application/json"
        )
        assert status == 400 and "runs one SELECT" in json.loads(answer)["error"]
    status, _, answer = post(collector.http_url + "/api/query", b'{"query": "SELECT 1", "format": "XML"}',
                             "application/json")  # fmt: skip
    assert status == 400 and "unsupported format" in json.loads(answer)["error"]
    assert query(collector, "SELECT count() FROM otel_traces WHERE ServiceName = 'q'") == [(1,)]


def test_discovery_file_lets_the_cli_find_serve(collector):
    from llmtap.collector.discovery import find_serve, query_rows

    info = find_serve(collector.config.dsn)
    assert info is not None and info.url == collector.http_url
    assert query_rows(info, "SELECT {n:UInt8} AS n", {"n": 7}) == [{"n": 7}]


def test_bearer_token_http_and_grpc(collector, tmp_path):
    # chDB allows one store per process: a second serve in this process shares it, with its own spool.
    with running_collector(
        tmp_path, dsn=collector.config.dsn, spool_dir=tmp_path / "spool", token=TOKEN
    ) as collector:
        url = collector.http_url + "/v1/traces"
        body = span_request(good_span("authed"))
        assert post(url, body)[0] == 401
        assert post(url, body, headers={"Authorization": "Bearer wrong"})[0] == 401
        assert post(url, body, headers={"Authorization": f"Bearer {TOKEN}"})[0] == 200
        assert post(collector.http_url + "/api/query", b'{"query": "SELECT 1"}', "application/json")[0] == 401
        exporter = GRPCSpanExporter(endpoint=f"127.0.0.1:{collector.grpc_port}", insecure=True,
                                    headers={"authorization": f"Bearer {TOKEN}"})  # fmt: skip
        assert exporter.export([]).name == "SUCCESS"
        with grpc.insecure_channel(f"127.0.0.1:{collector.grpc_port}") as channel:
            stub = trace_service_pb2_grpc.TraceServiceStub(channel)
            with pytest.raises(grpc.RpcError) as info:
                stub.Export(trace_service_pb2.ExportTraceServiceRequest(), timeout=10)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_overload_answers_429_with_retry_after(collector, tmp_path):
    limits = Limits(spool_bytes=16, flush_seconds=0.05)
    with running_collector(
        tmp_path, dsn=collector.config.dsn, spool_dir=tmp_path / "spool", limits=limits
    ) as collector:
        status, headers, answer = post(collector.http_url + "/v1/traces", span_request(good_span("too much")))
        assert status == 429
        assert headers["Retry-After"] == "5"
        assert "overloaded" in status_of(answer).message


def test_store_down_beyond_the_buffer_answers_503_and_unavailable(tmp_path):
    with socket.socket() as sock:  # nothing listens there: the ClickHouse server is "down"
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    limits = Limits(
        spool_bytes=len(span_request(good_span("spooled"))) + 8, flush_seconds=0.05
    )  # room for one
    with running_collector(tmp_path, dsn=f"http://default:@127.0.0.1:{port}/otel", spool_dir=tmp_path / "spool",
                           limits=limits) as collector:  # fmt: skip
        url = collector.http_url + "/v1/traces"
        assert (
            post(url, span_request(good_span("spooled")))[0] == 200
        )  # durable in the spool while the store is down
        status, headers, answer = post(url, span_request(good_span("no room")))
        assert status == 503 and headers["Retry-After"] == "5"
        assert "unavailable" in status_of(answer).message
        with grpc.insecure_channel(f"127.0.0.1:{collector.grpc_port}") as channel:
            stub = trace_service_pb2_grpc.TraceServiceStub(channel)
            with pytest.raises(grpc.RpcError) as info:
                stub.Export(trace_service_pb2.ExportTraceServiceRequest.FromString(span_request(good_span("g"))),
                            timeout=10)  # fmt: skip
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        retry = dict(info.value.trailing_metadata())["google.rpc.retryinfo-bin"]
        assert error_details_pb2.RetryInfo.FromString(retry).retry_delay.seconds == 5


def test_non_loopback_binding_needs_allow_remote():
    with pytest.raises(ConfigError, match="--allow-remote"):
        ServeConfig(dsn="chdb:///tmp/x", host="0.0.0.0").check()
    ServeConfig(dsn="chdb:///tmp/x", host="0.0.0.0", allow_remote=True).check()
    ServeConfig(dsn="chdb:///tmp/x", host="::1").check()


def test_cli_refuses_a_public_address_without_allow_remote(tmp_path):
    from click.testing import CliRunner

    from llmtap.cli import main

    result = CliRunner().invoke(main, ["serve", "--host", "0.0.0.0", "--dsn", f"chdb://{tmp_path / 'x'}"])
    assert result.exit_code == 1
    assert "--allow-remote" in result.output
    help_text = CliRunner().invoke(main, ["serve", "--help"]).output
    for flag in (
        "--host",
        "--port",
        "--grpc-port",
        "--dsn",
        "--token",
        "--spool-dir",
        "--workers",
        "LLMTAP_DSN",
    ):
        assert flag in help_text


def test_status_line_is_compact(collector):
    from llmtap.collector.cli import status_line

    line = status_line(collector.health())
    assert line.startswith("spans ") and "written" in line and "store ok" in line
    assert "\n" not in line and len(line) < 220


def test_a_client_resetting_its_connection_prints_no_traceback(collector, capfd):
    reset_mid_request(collector.http_port)
    assert "Traceback" not in capfd.readouterr().err
    assert post(collector.http_url + "/v1/traces", span_request(good_span("after reset")))[0] == 200
