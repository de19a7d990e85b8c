"""Every table ends exact after `kill -9`: real `llmtap serve` processes killed again and again while they insert
LLM spans, then every table derived from `otel_traces` (`llm_calls`, each rollup, each chained view) is compared
with a recomputation: the same migrations in a scratch database, fed `otel_traces` in one INSERT SELECT.

A kill that lands after `otel_traces` took a batch but before its materialized views did (or between two views of
one insert) used to leave the views short for good: the replay skipped the rows `otel_traces` already had."""

from __future__ import annotations

import contextlib
import math
import random
import re
import sys
import time
from pathlib import Path

import pytest
from collector_support import post
from llmtap.clickhouse.connection import connect
from llmtap.clickhouse.migrations import migrate
from llmtap.collector import rows
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.trace.v1 import trace_pb2
from test_collector_durability import Serve

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from ingest import START_NS, llm_span

pytestmark = pytest.mark.slow

KILLS = 5
REQUESTS_PER_ROUND = 48
SPANS_PER_REQUEST = 400
# Tables serve writes itself, and tables no view writes: the rest is derived from the raw tables.
NOT_DERIVED = {
    rows.TRACES_TABLE, rows.LOGS_TABLE, rows.GAUGE_TABLE, rows.SUM_TABLE, rows.HISTOGRAM_TABLE,
    rows.EXP_HISTOGRAM_TABLE, rows.SUMMARY_TABLE, "model_prices", "llm_uncertain_phrases", "llmtap_migrations",
}  # fmt: skip
# The spans are of the last hour: the store's retention would delete older ones.
SHIFT_NS = time.time_ns() - 3600 * 10**9 - START_NS
_SIMPLE = re.compile(r"^SimpleAggregateFunction\((\w+),")
_AGGREGATE = re.compile(r"^AggregateFunction\((\w+)(\([^)]*\))?,")


def export_request(rng: random.Random, first: int) -> bytes:
    """LLM spans as the instrumentation emits them; one in seven failed (for the failure rollup)."""
    spans = []
    for index in range(first, first + SPANS_PER_REQUEST):
        span = llm_span(rng, index)
        span.start_time_unix_nano += SHIFT_NS
        span.end_time_unix_nano += SHIFT_NS
        if index % 7 == 0:
            span.status.code = trace_pb2.Status.STATUS_CODE_ERROR
            span.status.message = "rate limited"
        spans.append(span)
    return trace_service_pb2.ExportTraceServiceRequest(
        resource_spans=[trace_pb2.ResourceSpans(scope_spans=[trace_pb2.ScopeSpans(spans=spans)])]
    ).SerializeToString()


def writing(serve: Serve) -> bool:
    """Whether serve has accepted spans it has not written yet (its writer is busy)."""
    _, health = serve.health()
    traces = health["signals"]["traces"]
    return traces["written"] < traces["received"]


def derived_tables(client) -> list[str]:
    names = client.query(
        "SELECT name FROM system.tables WHERE database = 'otel' AND engine LIKE '%MergeTree' ORDER BY name"
    ).result_rows
    return [name for (name,) in names if name not in NOT_DERIVED]


def content(client, database: str, table: str) -> list[tuple]:
    """A table's rows with its aggregates merged per key, ordered, so that two tables holding the same data in
    different parts compare equal; a table without aggregates as (rows, checksum)."""
    columns = client.query(
        "SELECT name, type FROM system.columns WHERE database = {d:String} AND table = {t:String} "
        "AND default_kind NOT IN ('MATERIALIZED', 'ALIAS') ORDER BY position",
        parameters={"d": database, "t": table},
    ).result_rows
    keys, values = [], []
    for name, kind in columns:
        if simple := _SIMPLE.match(kind):
            values.append(f"{simple.group(1)}({name})")
        elif aggregate := _AGGREGATE.match(kind):
            merged = f"{aggregate.group(1)}Merge{aggregate.group(2) or ''}({name})"
            values.append(f"tuple('digest', {merged})")  # quantileTDigest: approximate, see same()
        else:
            keys.append(name)
    if not values:
        return client.query(f"SELECT count(), sum(cityHash64(*)) FROM {database}.{table}").result_rows
    key_list = ", ".join(keys)
    return client.query(
        f"SELECT {key_list}, {', '.join(values)} FROM {database}.{table} GROUP BY {key_list} ORDER BY {key_list}"
    ).result_rows


def same(found: list[tuple], expected: list[tuple]) -> bool:
    """Equal, but for floats: sums added in another order differ in their last digits, and a latency digest
    (quantileTDigest) merged from other batches gives quantiles a few tenths of a percent apart. Counts, tokens,
    keys and the number of rows must be equal."""
    if len(found) != len(expected):
        return False
    for row, other in zip(found, expected, strict=True):
        for value, wanted in zip(row, other, strict=True):
            if isinstance(value, tuple) and value[:1] == ("digest",):
                close = math.isclose(value[1], wanted[1], rel_tol=0.02)
            elif isinstance(value, float):
                close = math.isclose(value, wanted, rel_tol=1e-9, abs_tol=1e-9)
            else:
                close = value == wanted
            if not close:
                return False
    return True


def recompute(client) -> None:
    """The llmtap schema in a scratch database `recheck`, its views fed every row of otel.otel_traces at once."""
    client.command("DROP DATABASE IF EXISTS recheck SYNC")
    client.command("CREATE DATABASE recheck")
    client.database = "recheck"
    try:
        migrate(client)
    finally:
        client.database = "otel"
    client.command("INSERT INTO recheck.otel_traces SELECT * FROM otel.otel_traces")


def test_every_derived_table_is_exact_after_repeated_kill_minus_9_under_load(tmp_path):
    rng, sent, kills_while_writing = random.Random(18), 0, 0
    for _ in range(KILLS):
        bodies = [export_request(rng, sent + i * SPANS_PER_REQUEST) for i in range(REQUESTS_PER_ROUND)]
        serve = Serve(tmp_path)
        try:
            for body in bodies:
                status, _, answer = post(serve.url + "/v1/traces", body)
                assert status == 200, answer
                sent += SPANS_PER_REQUEST
            time.sleep(rng.uniform(0.1, 1.2))  # the writer is inserting batches meanwhile
            kills_while_writing += writing(serve)
        finally:
            serve.kill()
    serve = Serve(tmp_path)
    code, stderr = serve.terminate()  # replays what the kills left, writes it and exits
    assert code == 0 and "unwritten" not in stderr, (code, stderr)
    assert kills_while_writing >= KILLS - 1  # the kills hit inserts, not an idle writer

    unlike = tables_unlike_a_recomputation(tmp_path, sent)
    print(f"{sent} spans, {KILLS} kills; tables unlike a recomputation (rows, expected rows): {unlike}")
    assert not unlike


def test_a_batch_the_next_process_replays_is_stored_once_in_every_table(tmp_path):
    """serve dies right after inserting a batch, before its checkpoint says so; the next serve, a new process,
    sends the batch again with its token. No table may take it twice: not otel_traces, and not the tables behind
    the views that the first process, which made the store, changed by MODIFY QUERY (migration 0016), whose
    blocks got other ids in that process than after a restart."""
    serve = Serve(tmp_path, env={"LLMTAP_FAULT_EXIT_AFTER_INSERT": "1"})
    status, _, answer = post(serve.url + "/v1/traces", export_request(random.Random(3), 0))
    assert status == 200, answer
    assert serve.process.wait(30) == 70
    code, stderr = Serve(tmp_path).terminate()
    assert code == 0 and "replayed 1 spooled request(s)" in stderr, (code, stderr)
    assert tables_unlike_a_recomputation(tmp_path, SPANS_PER_REQUEST) == {}


def tables_unlike_a_recomputation(directory: Path, sent: int) -> dict[str, tuple[int, int]]:
    """Check that otel_traces holds the ``sent`` spans once each; then each derived table unlike a recomputation
    from otel_traces, with its (rows, expected rows)."""
    with contextlib.closing(connect(f"chdb://{directory / 'chdb'}")) as client:
        stored, distinct = client.query(
            "SELECT count(), uniqExact(TraceId, SpanId) FROM otel_traces"
        ).result_rows[0]
        assert (stored, distinct) == (sent, sent)  # every acknowledged span, once
        recompute(client)
        tables = derived_tables(client)
        assert {"llm_calls", "llm_calls_1m", "llm_calls_1h", "llm_calls_1d", "llm_answers_1h"} <= set(tables)
        found = {table: content(client, "otel", table) for table in tables}
        expected = {table: content(client, "recheck", table) for table in tables}
    assert found["llm_calls"][0][0] == sent
    return {
        table: (len(found[table]), len(expected[table]))
        for table in tables
        if not same(found[table], expected[table])
    }
