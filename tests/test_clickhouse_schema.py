"""Migrations 0001/0002: the exporter's tables, applied idempotently, accepting the exporter's own INSERTs."""

from __future__ import annotations

from datetime import date

import pytest
from llmtap.clickhouse.connection import StoreError, connect, default_dsn, parse_dsn
from llmtap.clickhouse.migrations import MigrationError, discover, migrate, split_statements, status

# The contrib exporter's INSERT (internal/sqltemplates/traces_insert.sql), 22 columns, unchanged but for the
# Go placeholders turned into literal values, dated today: rows older than the retention are dropped on insert.
TODAY = date.today().isoformat()
EXPORTER_TRACES_INSERT = """
INSERT INTO otel_traces (
    Timestamp, TraceId, SpanId, ParentSpanId, TraceState, SpanName, SpanKind, ServiceName,
    ResourceAttributes, ScopeName, ScopeVersion, SpanAttributes, Duration, StatusCode, StatusMessage,
    Events.Timestamp, Events.Name, Events.Attributes,
    Links.TraceId, Links.SpanId, Links.TraceState, Links.Attributes
) VALUES (
    '{day} 03:04:05.123456789', '0102030405060708090a0b0c0d0e0f10', '0102030405060708', '', 'k=v',
    'chat gpt-4o', 'Client', 'svc', {'service.name': 'svc'}, 'scope', '1.0', {'gen_ai.request.model': 'gpt-4o'},
    1500000000, 'Ok', '', ['{day} 03:04:05.2'], ['ev'], [{'a': 'b'}],
    ['1112131415161718191a1b1c1d1e1f20'], ['1112131415161718'], [''], [{}]
)
""".replace("{day}", TODAY)

EXPORTER_LOGS_INSERT = """
INSERT INTO otel_logs (
    Timestamp, TraceId, SpanId, TraceFlags, SeverityText, SeverityNumber, ServiceName, Body,
    ResourceSchemaUrl, ResourceAttributes, ScopeSchemaUrl, ScopeName, ScopeVersion, ScopeAttributes,
    LogAttributes, EventName
) VALUES (
    '{day} 03:04:05.5', '', '', 1, 'INFO', 9, 'svc', 'hello', '', {'k8s.pod.name': 'p'}, '', 's', '1',
    {}, {'a': '1'}, ''
)
""".replace("{day}", TODAY)


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    client = connect("chdb://" + str(tmp_path_factory.mktemp("schema") / "chdb"), create_database=True)
    yield client
    client.close()


def test_migrations_apply_once_then_idempotent(client):
    first = migrate(client)
    assert [m.version for m in first.applied] == [m.version for m in discover()]
    assert "applied" in first.summary()
    second = migrate(client)
    assert second.applied == []
    assert len(second.already_applied) == len(discover())
    assert "up to date" in second.summary()
    assert all(done for _, done in status(client))
    recorded = client.query("SELECT count() FROM llmtap_migrations").result_rows[0][0]
    assert recorded == len(discover())


def test_an_empty_uncertain_phrase_is_refused(client):
    """An empty phrase would make every answer uncertain in the rollups from then on: the table refuses it."""
    migrate(client)
    with pytest.raises(Exception, match="phrase_not_empty"):
        client.command("INSERT INTO llm_uncertain_phrases VALUES ('')")
    client.command("INSERT INTO llm_uncertain_phrases VALUES ('as far as i can tell')")
    phrases = [row[0] for row in client.query("SELECT Phrase FROM llm_uncertain_phrases").result_rows]
    assert "as far as i can tell" in phrases and "" not in phrases
    client.command(
        "ALTER TABLE llm_uncertain_phrases DELETE WHERE Phrase = 'as far as i can tell' SETTINGS mutations_sync = 1"
    )


def test_traces_table_is_the_exporters(client):
    migrate(client)
    table = client.query(
        "SELECT sorting_key, primary_key, partition_key, engine FROM system.tables "
        "WHERE database = 'otel' AND name = 'otel_traces'"
    ).result_rows[0]
    assert table == (
        "ServiceName, SpanName, toDateTime(Timestamp), Timestamp",
        "ServiceName, SpanName, toDateTime(Timestamp)",
        "toDate(Timestamp)",
        "MergeTree",
    )
    columns = client.query(
        "SELECT name, type, default_kind FROM system.columns WHERE database = 'otel' AND table = 'otel_traces' "
        "ORDER BY position"
    ).result_rows
    names = [name for name, _, _ in columns]
    assert names[:15] == [
        "Timestamp", "TraceId", "SpanId", "ParentSpanId", "TraceState", "SpanName", "SpanKind", "ServiceName",
        "ResourceAttributes", "ScopeName", "ScopeVersion", "SpanAttributes", "Duration", "StatusCode",
        "StatusMessage",
    ]  # fmt: skip
    aliases = {name for name, _, kind in columns if kind == "ALIAS"}
    assert aliases == {"ResourceAttributeItems", "SpanAttributeItems"}
    types = {name: type_ for name, type_, _ in columns}
    assert types["Duration"] == "UInt64"
    assert types["Events.Attributes"] == "Array(Map(LowCardinality(String), String))"
    indexes = client.query(
        "SELECT name FROM system.data_skipping_indices WHERE database = 'otel' AND table = 'otel_traces'"
    ).result_rows
    assert {name for (name,) in indexes} == {
        "idx_trace_id", "idx_res_attr_key", "idx_res_attr_value", "idx_span_attr_key", "idx_span_attr_value",
        "idx_duration",
    }  # fmt: skip


def test_exporter_inserts_are_accepted_unchanged(client):
    migrate(client)
    client.command(EXPORTER_TRACES_INSERT)
    client.command(EXPORTER_LOGS_INSERT)
    row = client.query(
        "SELECT SpanKind, Duration, SpanAttributeItems, Links.TraceId FROM otel_traces WHERE SpanName = 'chat gpt-4o'"
    ).result_rows[0]
    assert row == (
        "Client",
        1500000000,
        ["gen_ai.request.model=gpt-4o"],
        ["1112131415161718191a1b1c1d1e1f20"],
    )
    lookup = client.query(
        "SELECT TraceId, min(Start), max(End) FROM otel_traces_trace_id_ts GROUP BY TraceId"
    ).result_rows
    assert lookup[0][0] == "0102030405060708090a0b0c0d0e0f10"
    pod = client.query("SELECT `__otel_materialized_k8s.pod.name` FROM otel_logs").result_rows
    assert pod == [("p",)]


def test_metrics_tables_exist(client):
    migrate(client)
    names = {
        name for (name,) in client.query("SELECT name FROM system.tables WHERE database = 'otel'").result_rows
    }
    assert {
        "otel_metrics_gauge", "otel_metrics_sum", "otel_metrics_histogram", "otel_metrics_exponential_histogram",
        "otel_metrics_summary", "otel_logs", "otel_traces", "otel_traces_trace_id_ts", "otel_traces_trace_id_ts_mv",
    } <= names  # fmt: skip


def test_split_statements_ignores_comments_and_semicolons_inside_lines():
    sql = "-- a comment; with a semicolon\nCREATE TABLE a (x String DEFAULT ';')\nENGINE = Memory;\n\nSELECT 1;\n"
    assert split_statements(sql) == ["CREATE TABLE a (x String DEFAULT ';')\nENGINE = Memory", "SELECT 1"]


def test_misnamed_migration_is_an_error(tmp_path):
    (tmp_path / "1_bad.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match=r"NNNN_<name>\.sql"):
        discover(tmp_path)


def test_failing_statement_names_file_and_statement(client, tmp_path):
    client.command("CREATE DATABASE IF NOT EXISTS broken_migrations")
    client.database = "broken_migrations"
    (tmp_path / "0001_ok.sql").write_text("CREATE TABLE IF NOT EXISTS mig_ok (x UInt8) ENGINE = Memory;\n")
    (tmp_path / "0002_broken.sql").write_text("SELECT 1;\nTHIS IS NOT SQL;\n")
    with pytest.raises(MigrationError, match=r"0002_broken.sql, statement 2"):
        migrate(client, directory=tmp_path)
    assert [m.version for m, done in status(client, directory=tmp_path) if done] == [
        1
    ]  # nothing recorded as applied
    client.database = "otel"


@pytest.mark.parametrize(
    "dsn",
    ["", "postgres://x", "chdb://relative/path", "chdb://", "http://", "http://host:notaport/db", "nonsense"],
)
def test_bad_dsns_get_a_clear_error(dsn):
    with pytest.raises(StoreError, match="invalid DSN"):
        parse_dsn(dsn)


def test_dsn_parsing_and_password_masking(monkeypatch):
    parsed = parse_dsn("https://alice:s3cret@ch.example:8443/analytics")
    assert (parsed.scheme, parsed.database) == ("https", "analytics")
    assert "s3cret" not in parsed.display
    assert parse_dsn("http://localhost:8123").database == "otel"
    assert parse_dsn("chdb:///tmp/x").path == "/tmp/x"
    monkeypatch.setenv("LLMTAP_DSN", "http://localhost:8123/otel")
    assert default_dsn() == "http://localhost:8123/otel"
    monkeypatch.delenv("LLMTAP_DSN")
    monkeypatch.setenv("XDG_DATA_HOME", "/data")
    assert default_dsn() == "chdb:///data/llmtap/chdb"


def test_server_that_is_down_gets_a_clear_error():
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(
        StoreError, match=f"^cannot reach ClickHouse at 127.0.0.1:{port}: connection refused$"
    ):
        connect(f"http://default:@127.0.0.1:{port}/otel", connect_timeout=1)
