"""`llmtap logs`, `stats`, `export` and `db` through click's CliRunner and as real processes."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from clickhouse_llm_calls import cost_of, expected_calls, insert_spans, record_spans
from llmtap.clickhouse.connection import connect
from llmtap.clickhouse.migrations import discover, migrate
from llmtap.clickhouse.prices import load_bundled_prices

from llmtap.cli import main

TESTS = Path(__file__).parent


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    dsn = "chdb://" + str(tmp_path_factory.mktemp("cli") / "chdb")
    client = connect(dsn, create_database=True)
    migrate(client)
    load_bundled_prices(client)
    spans = record_spans()
    insert_spans(client, spans)
    yield dsn, expected_calls(spans)
    client.close()


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def json_lines(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.strip()]


# ---------------------------------------------------------------- logs


def test_logs_table_shows_the_newest_calls(store):
    dsn, calls = store
    code, output = run("logs", "--dsn", dsn, "--limit", "5")
    assert code == 0, output
    header = output.splitlines()[0].split()
    assert header[:4] == ["time", "service", "model", "latency"] and "prompt" in header
    newest = sorted(calls, key=lambda c: c.start_ns, reverse=True)[:5]
    assert all(c.span_id in output for c in newest)
    assert sum(c.span_id in output for c in calls) == 5


def test_logs_json_with_filters(store):
    dsn, calls = store
    code, output = run(
        "logs", "--dsn", dsn, "--json", "--service", "chat-api", "--status", "ok", "--tag", "prod"
    )
    assert code == 0, output
    rows = json_lines(output)
    expected = {c.span_id for c in calls if c.service == "chat-api" and not c.is_error and "prod" in c.tags}
    assert {r["span_id"] for r in rows} == expected
    assert all(r["status"] == "ok" and r["timestamp"].endswith("+00:00") for r in rows)
    code, output = run("logs", "--dsn", dsn, "--json", "--attr", "feature=search", "--search", "CLICKHOUSE")
    assert [r["prompt_preview"] for r in json_lines(output)] == ["What is ClickHouse?"]


def test_logs_show_prints_the_whole_call(store):
    dsn, calls = store
    call = next(c for c in calls if c.service == "chat-api" and c.is_stream)
    code, output = run("logs", "show", call.span_id, "--dsn", dsn)
    assert code == 0, output
    for text in ("Be brief.", "Hi there", "feature", "chat", call.trace_id, "gpt-4o", "first chunk"):
        assert text in output
    code, output = run("logs", "show", call.span_id, "--dsn", dsn, "--json")
    (detail,) = json_lines(output)
    assert detail["cost"] == pytest.approx(cost_of(call)) and detail["tags"] == list(call.tags)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["logs", "--since", "yesterday"], "Invalid value for '--since'"),
        (["logs", "--since", "1h", "--until", "2h"], "is not before --until"),
        (["logs", "--attr", "=x"], "has no key"),
        (["logs", "--model", ""], "empty value"),
        (["logs", "--trace", "xyz"], "not a trace id"),
        (["logs", "--slower-than", "fast"], "invalid duration"),
        (["logs", "--status", "maybe"], "'maybe' is not one of"),
        (["logs", "--follow", "--until", "1h"], "cannot be combined with --follow"),
        (["logs", "show", "nope"], "neither a span id"),
        (["stats", "--by", "planet"], "'planet' is not one of"),
        (["export", "--format", "parquet"], "Parquet needs a file"),
        (["export", "--format", "xml"], "'xml' is not one of"),
        (["db", "retention", "--content", "500d"], "cannot be longer than calls retention"),
        (["db", "retention", "--calls", "36h"], "whole number of days"),
    ],
)
def test_bad_input_is_a_usage_error_naming_the_option(store, args, message):
    dsn, _ = store
    code, output = run(*args, "--dsn", dsn)
    assert code == 2, output
    assert message in output
    assert "Traceback" not in output


def test_store_problems_are_one_line_errors(tmp_path):
    code, output = run("logs", "--dsn", f"chdb://{tmp_path}/missing")
    assert code == 1 and "no llmtap store at" in output
    code, output = run("stats", "--dsn", "ftp://example")
    assert code == 1 and "invalid DSN" in output
    code, output = run("logs", "show", "0" * 16, "--dsn", f"chdb://{tmp_path}/missing")
    assert code == 1


def test_logs_show_unknown_id(store):
    dsn, _ = store
    code, output = run("logs", "show", "0" * 16, "--dsn", dsn)
    assert code == 1 and "no call with id" in output


# ---------------------------------------------------------------- stats


def test_stats_json_matches_the_calls(store):
    dsn, calls = store
    code, output = run("stats", "--dsn", dsn, "--by", "service", "--json")
    assert code == 0, output
    (report,) = json_lines(output)
    counts = Counter(c.service for c in calls)
    assert {g["key"]: g["calls"] for g in report["groups"]} == counts
    assert report["total"]["calls"] == len(calls)
    assert report["total"]["errors"] == sum(c.is_error for c in calls)
    assert report["total"]["unpriced_calls"] == 1


def test_stats_tables_and_latency(store):
    dsn, calls = store
    code, output = run("stats", "--dsn", dsn, "--since", "1d")
    assert code == 0, output
    assert "Calls by model" in output and "Latency by model" in output and "unpriced" in output
    assert all(c.model in output for c in calls)
    code, output = run("stats", "--dsn", dsn, "--latency", "--json")
    (rows,) = json_lines(output)
    assert {r["model"] for r in rows} == {c.model for c in calls}
    code, output = run("stats", "--dsn", dsn, "--until", "2000-01-01")
    assert code == 0 and "no calls" in output


# ---------------------------------------------------------------- export


def test_export_jsonl_csv_parquet(store, tmp_path):
    dsn, calls = store
    code, output = run("export", "--dsn", dsn, "-o", str(tmp_path / "calls.jsonl"))
    assert code == 0, output
    assert f"exported {len(calls)} calls" in output
    rows = json_lines((tmp_path / "calls.jsonl").read_text())
    assert sorted(r["SpanId"] for r in rows) == sorted(c.span_id for c in calls)
    assert rows[0]["Timestamp"].endswith("Z") and isinstance(rows[0]["Tags"], list)
    assert isinstance(rows[0]["InputTokens"], int)

    code, output = run(
        "export", "--dsn", dsn, "--format", "csv", "--model", "gpt-4.1-mini", "-o", str(tmp_path / "c.csv")
    )
    assert code == 0, output
    with open(tmp_path / "c.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == sum(c.model == "gpt-4.1-mini" for c in calls)
    assert json.loads(table[0]["Tags"]) == ["nightly"] and json.loads(table[0]["Attributes"]) == {
        "job": "summaries"
    }

    code, output = run(
        "export", "--dsn", dsn, "--format", "parquet", "-o", str(tmp_path / "c.parquet"), "--status", "error"
    )
    assert code == 0, output
    parquet = pq.read_table(tmp_path / "c.parquet")
    assert sorted(parquet.column("SpanId").to_pylist()) == sorted(c.span_id for c in calls if c.is_error)
    stamp = parquet.schema.field("Timestamp").type
    assert stamp.unit == "ns" and stamp.tz in ("UTC", "Etc/UTC")


def test_export_to_stdout(store):
    dsn, calls = store
    code, output = run("export", "--dsn", dsn, "--format", "csv", "--no-progress")
    assert code == 0
    table = list(csv.DictReader(io.StringIO(output.split("exported")[0])))
    assert len(table) == len(calls)


# ---------------------------------------------------------------- db


def test_db_migrate_status_retention_prices(store, tmp_path):
    dsn, _ = store
    fresh = dsn + "?database=fresh"
    code, output = run("db", "migrate", "--dsn", fresh)
    assert code == 0, output
    assert f"applied {len(discover())} migration(s)" in output and "model prices" in output
    code, output = run("db", "migrate", "--dsn", fresh)
    assert "up to date" in output
    code, output = run("db", "status", "--dsn", fresh, "--json")
    (status,) = json_lines(output)
    assert all(m["applied"] for m in status["migrations"])
    assert status["retention"]["content_days"] == 30 and status["retention"]["calls_days"] == 400
    code, output = run("db", "retention", "--dsn", fresh, "--content", "2w", "--calls", "90")
    assert code == 0, output
    assert "14 days" in output and "90 days" in output
    code, output = run("db", "status", "--dsn", fresh)
    assert "applied  0003_llm_calls" in output and "llm_calls: 0 rows" in output

    code, output = run("db", "prices", "--dsn", fresh, "--model", "gpt-4o")
    assert code == 0 and "gpt-4o" in output and "2024-10-02" in output
    bad = tmp_path / "bad.csv"
    bad.write_text("Model,ValidFrom,InputPerMillion,CachedInputPerMillion,OutputPerMillion\nm,someday,1,,2\n")
    code, output = run("db", "prices", "--dsn", fresh, "--load", str(bad))
    assert code == 2 and "bad.csv:2" in output
    good = tmp_path / "good.csv"
    good.write_text(
        "Model,ValidFrom,InputPerMillion,CachedInputPerMillion,OutputPerMillion\nhouse-model-7b,2020-01-01,1,,2\n"
    )
    code, output = run("db", "prices", "--dsn", fresh, "--load", str(good))
    assert code == 0 and "loaded 1 prices" in output
    code, output = run("db", "prices", "--dsn", fresh, "--model", "house-model-7b")
    assert "user" in output


def test_stats_cost_follows_a_user_price(store, tmp_path):
    dsn, calls = store
    house = next(c for c in calls if c.model == "house-model-7b")
    prices = tmp_path / "house.csv"
    prices.write_text(
        "Model,ValidFrom,InputPerMillion,CachedInputPerMillion,OutputPerMillion\nhouse-model-7b,2020-01-01,1000,,2000\n"
    )
    assert run("db", "prices", "--dsn", dsn, "--load", str(prices))[0] == 0
    try:
        (report,) = json_lines(run("stats", "--dsn", dsn, "--model", "house-model-7b", "--json")[1])
        assert report["total"]["cost"] == pytest.approx(
            (house.input_tokens * 1000 + house.output_tokens * 2000) / 1e6
        )
    finally:
        prices.write_text("Model,ValidFrom,InputPerMillion,CachedInputPerMillion,OutputPerMillion\n")
        assert run("db", "prices", "--dsn", dsn, "--load", str(prices))[0] == 0


# ---------------------------------------------------------------- real processes


def test_commands_as_real_processes(tmp_path):
    """A store made by one process, queried by `llmtap` processes (the chDB directory is free between them)."""
    dsn = f"chdb://{tmp_path}/store"
    maker = textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {str(TESTS)!r})
        from clickhouse_llm_calls import expected_calls, insert_spans, record_spans
        from llmtap.clickhouse.connection import connect
        from llmtap.clickhouse.migrations import migrate
        client = connect({dsn!r}, create_database=True)
        migrate(client)
        spans = record_spans()
        insert_spans(client, spans)
        print(json.dumps([[c.model, c.span_id] for c in expected_calls(spans)]))
    """)
    made = subprocess.run(
        [sys.executable, "-c", maker], capture_output=True, text=True, timeout=120, check=True
    )
    calls = json.loads(made.stdout.strip().splitlines()[-1])
    llmtap = [sys.executable, "-m", "llmtap"]
    env = {**os.environ, "LLMTAP_DSN": dsn}
    stats = subprocess.run([*llmtap, "stats", "--json"], capture_output=True, text=True, timeout=60, env=env)
    assert stats.returncode == 0, stats.stderr
    (report,) = json_lines(stats.stdout)
    assert {g["key"]: g["calls"] for g in report["groups"]} == Counter(model for model, _ in calls)
    out = tmp_path / "calls.jsonl"
    export = subprocess.run(
        [*llmtap, "export", "-o", str(out)], capture_output=True, text=True, timeout=60, env=env
    )
    assert export.returncode == 0, export.stderr
    assert sorted(json.loads(line)["SpanId"] for line in out.read_text().splitlines()) == sorted(
        s for _, s in calls
    )
    bad = subprocess.run(
        [*llmtap, "logs", "--since", "soon"], capture_output=True, text=True, timeout=60, env=env
    )
    assert bad.returncode == 2 and "Invalid value for '--since'" in bad.stderr
