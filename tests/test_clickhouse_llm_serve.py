"""While `llmtap serve` holds the chDB store, the CLI queries through serve's API with the same query layer.

A real serve (in this process) receives the spans from the real OTLP/HTTP exporter; the commands find it through
its discovery file and run their queries through ``POST /api/query``.
"""

from __future__ import annotations

import json
import time
from collections import Counter

import pytest
from click.testing import CliRunner
from clickhouse_llm_calls import cost_of, expected_calls, record_spans
from llmtap.clickhouse import queries
from llmtap.clickhouse.connection import StoreError
from llmtap.clickhouse.filters import CallFilter
from llmtap.clickhouse.prices import load_bundled_prices
from llmtap.clickhouse.serve_client import ServeClient
from llmtap.clickhouse.store import open_store
from llmtap.collector.app import Collector, ServeConfig
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace.export import SpanExportResult

from llmtap.cli import main


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    base = tmp_path_factory.mktemp("served")
    dsn = f"chdb://{base}/store"
    # `llmtap db migrate` first, as a user would: it also loads the bundled prices.
    assert CliRunner().invoke(main, ["db", "migrate", "--dsn", dsn]).exit_code == 0
    collector = Collector(ServeConfig(dsn=dsn, port=0, grpc_port=-1, spool_dir=base / "spool"))
    collector.start()
    try:
        spans = record_spans()
        exporter = OTLPSpanExporter(endpoint=f"{collector.http_url}/v1/traces")
        assert exporter.export(spans) == SpanExportResult.SUCCESS
        exporter.shutdown()
        calls = expected_calls(spans)
        client = open_store(dsn)
        assert isinstance(client, ServeClient)
        deadline = time.monotonic() + 30
        while queries.total_stats(client, CallFilter()).calls < len(calls):
            assert time.monotonic() < deadline, "serve did not write the calls"
            time.sleep(0.1)
        yield dsn, calls, client
    finally:
        collector.stop()


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def test_query_layer_through_serve(served):
    _, calls, client = served
    rows = {r.key: r for r in queries.call_stats(client, CallFilter(), by="model")}
    assert {k: r.calls for k, r in rows.items()} == Counter(c.model for c in calls)
    call = next(c for c in calls if c.metadata)
    (detail,) = queries.get_calls(client, call.span_id)
    assert detail.metadata == call.metadata and detail.tags == list(call.tags)
    assert detail.timestamp.tzinfo is not None and detail.finish_reasons == list(call.finish_reasons)
    summary = queries.search_calls(client, CallFilter(), limit=1)[0]
    assert summary.span_id == max(calls, key=lambda c: c.start_ns).span_id


def test_cli_commands_go_through_serve(served, tmp_path):
    dsn, calls, _ = served
    code, output = run("stats", "--dsn", dsn, "--by", "service", "--json")
    assert code == 0, output
    (report,) = [json.loads(line) for line in output.splitlines()]
    assert {g["key"]: g["calls"] for g in report["groups"]} == Counter(c.service for c in calls)
    code, output = run("logs", "--dsn", dsn, "--json", "--status", "error")
    assert {json.loads(line)["span_id"] for line in output.splitlines()} == {
        c.span_id for c in calls if c.is_error
    }
    streamed = next(c for c in calls if c.is_stream)
    code, output = run("logs", "show", streamed.span_id, "--dsn", dsn)
    assert code == 0 and "Hi there" in output
    for fmt in ("jsonl", "csv", "parquet"):
        code, output = run("export", "--dsn", dsn, "--format", fmt, "-o", str(tmp_path / f"calls.{fmt}"))
        assert code == 0, output
        assert f"exported {len(calls)} calls" in output
    lines = (tmp_path / "calls.csv").read_text().splitlines()
    assert lines[0].startswith('"Timestamp","TraceId"') and not lines[1].startswith('"Timestamp"')
    costs = {
        json.loads(line)["SpanId"]: json.loads(line)["Cost"]
        for line in (tmp_path / "calls.jsonl").read_text().splitlines()
    }
    for call in calls:
        assert costs[call.span_id] == (None if cost_of(call) is None else pytest.approx(cost_of(call)))
    code, output = run("db", "status", "--dsn", dsn)
    assert code == 0 and "through llmtap serve" in output


def test_writes_are_refused_while_serve_holds_the_store(served):
    dsn, _, client = served
    for args in (["db", "migrate"], ["db", "retention", "--content", "7d"]):
        code, output = run(*args, "--dsn", dsn)
        assert code == 1 and "stop it to change" in output
    with pytest.raises(StoreError, match="read-only"):
        load_bundled_prices(client)
