"""`llmtap logs`, `stats`, `export` and `db` through click's CliRunner and as real processes."""

from __future__ import annotations

import csv
import io
import itertools
import json
import os
import re
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from clickhouse_llm_calls import cost_of, expected_calls, insert_spans, record_spans
from llmtap.clickhouse import queries, render
from llmtap.clickhouse.connection import connect
from llmtap.clickhouse.filters import CallFilter
from llmtap.clickhouse.migrations import discover, migrate
from llmtap.clickhouse.prices import load_bundled_prices
from opentelemetry.sdk.trace.id_generator import IdGenerator
from rich.console import Console

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


class SharedPrefixIds(IdGenerator):
    """Span and trace ids that all start with abcdef00, so that shorter prefixes start many of them."""

    def __init__(self) -> None:
        self.serial = itertools.count(1)

    def generate_span_id(self) -> int:
        return 0xABCDEF00 << 32 | next(self.serial)

    def generate_trace_id(self) -> int:
        return 0xABCDEF00 << 96 | next(self.serial)


@pytest.fixture(scope="module")
def shared_prefix_store(store):
    """The same workload in another database of the store, its ids all starting with abcdef00."""
    dsn = store[0] + "?database=prefixes"
    client = connect(dsn, create_database=True)
    migrate(client)
    spans = record_spans(SharedPrefixIds())
    insert_spans(client, spans)
    yield dsn, expected_calls(spans)
    client.close()


def run(*args: str, columns: int | None = None) -> tuple[int, str]:
    """Exit code and output of `llmtap ARGS`, printed as to a terminal ``columns`` wide (default: a pipe)."""
    env = {"COLUMNS": str(columns) if columns else None}
    result = CliRunner(env=env).invoke(main, list(args), catch_exceptions=False)
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


def test_logs_prices_each_call(store):
    """The cost column of `llmtap logs` (`cost` in --json): at the price in force that day, None unpriced."""
    dsn, calls = store
    code, output = run("logs", "--dsn", dsn, "--json")
    assert code == 0, output
    costs = {row["span_id"]: row["cost"] for row in json_lines(output)}
    assert costs == pytest.approx({c.span_id: cost_of(c) for c in calls})
    assert sum(cost is None for cost in costs.values()) == 1


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
        (["logs", "show", "nope"], "the first 6 or more hex digits"),
        (["logs", "show", "abc12"], "the first 6 or more hex digits"),
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
    for unknown in ("0" * 16, "0" * 32, "000000"):
        code, output = run("logs", "show", unknown, "--dsn", dsn)
        assert code == 1 and f"no call with id {unknown}" in output


def test_logs_group_options_apply_to_show(store, tmp_path):
    """`llmtap logs --dsn X show ID`, as the demo prints it; the subcommand's own --dsn wins."""
    dsn, calls = store
    call = calls[0]
    code, output = run("logs", "--dsn", dsn, "show", call.span_id)
    assert code == 0, output
    assert call.trace_id in output
    code, output = run("logs", "--dsn", dsn, "--json", "show", call.span_id)
    assert [detail["span_id"] for detail in json_lines(output)] == [call.span_id]
    code, output = run("logs", "--dsn", f"chdb://{tmp_path}/missing", "show", call.span_id, "--dsn", dsn)
    assert code == 0, output


def test_logs_show_takes_a_prefix_of_a_span_or_trace_id(store):
    """An id as 80 columns used to cut it names its call; a trace id's prefix its calls."""
    dsn, calls = store
    call = next(c for c in calls if c.is_stream)
    code, output = run("logs", "show", call.span_id[:12], "--dsn", dsn, "--json")
    assert code == 0, output
    assert [detail["span_id"] for detail in json_lines(output)] == [call.span_id]
    code, output = run("logs", "show", call.trace_id[:20].upper(), "--dsn", dsn, "--json")
    expected = sorted(c.span_id for c in calls if c.trace_id == call.trace_id)
    assert sorted(detail["span_id"] for detail in json_lines(output)) == expected


def test_logs_show_lists_the_ids_an_ambiguous_prefix_starts(shared_prefix_store):
    dsn, calls = shared_prefix_store
    code, output = run("logs", "show", "abcdef", "--dsn", dsn)
    assert code == 2, output
    assert "more characters" in output and "Traceback" not in output
    listed = re.findall(r"\babcdef[0-9a-f]{10,26}\b", output)
    ids = {c.span_id for c in calls} | {c.trace_id for c in calls}
    assert len(listed) == 10 and set(listed) <= ids
    assert "more than 10 ids" in output and "gpt-4" in output


# ---------------------------------------------------------------- narrow terminals


def whole(text: str, line: str) -> bool:
    """``text`` is in ``line`` as whole words (not cut, not part of a longer word)."""
    return re.search(rf"(?<!\S){re.escape(text)}(?!\S)", line) is not None


def assert_fits(output: str, columns: int) -> list[str]:
    lines = output.splitlines()
    assert max(map(len, lines)) <= columns and "…" not in output, output
    return lines


def assert_one_line_per_call(output: str, columns: int, facts: list[tuple[str, ...]]) -> None:
    """The calls table fits ``columns`` with nothing cut or folded: one line per call (after the header and
    its rule) holding that call's facts whole, its id first."""
    lines = assert_fits(output, columns)
    assert len(lines) == 2 + len(facts), output
    for span_id, *texts in facts:
        (line,) = [line for line in lines if whole(span_id, line)]
        for text in texts:
            assert whole(text, line), (text, line)


def assert_hard_to_fit(calls) -> None:
    """The calls hold what narrow tables struggle with: dated models, long error types, five-digit tokens."""
    assert {"gpt-4o-mini-2024-07-18", "text-embedding-3-small"} <= {call.model for call in calls}
    assert "InternalServerError" in {call.error_type for call in calls}
    assert max(call.input_tokens for call in calls) >= 10_000


def test_logs_at_80_columns_keeps_ids_models_latency_and_cost_whole(store):
    """The table a user sees in an 80-column terminal: rich used to cut ids, models, latencies and costs,
    then a dated model folded onto a second line."""
    dsn, calls = store
    assert_hard_to_fit(calls)
    code, output = run("logs", "--dsn", dsn, columns=80)
    assert code == 0, output
    facts = [(c.span_id, c.model, render.ms(c.duration_ms), render.usd(cost_of(c))) for c in calls]
    assert_one_line_per_call(output, 80, facts)


def ask(dsn: str, question):
    """The query layer's answer to ``question(client)`` on the store (the client closed after: chDB allows one
    store per process)."""
    client = connect(dsn)
    try:
        return question(client)
    finally:
        client.close()


def print_at(columns: int, *renderables) -> str:
    console = Console(width=columns, record=True, file=io.StringIO())
    for renderable in renderables:
        console.print(renderable)
    return console.export_text()


def call_facts(summaries: list[queries.CallSummary]) -> list[tuple[str, ...]]:
    return [(c.span_id, c.model, render.ms(c.duration_ms), render.usd(c.cost)) for c in summaries]


def test_demo_tables_at_80_columns_cut_or_fold_no_id_model_or_number(store):
    """What `llmtap demo` prints to an 80-column console: the latest calls, then calls and latency by model and
    by service (rich used to cut models to `gpt-4…`, costs to `$0.0…`, then folded dated models)."""
    dsn, _ = store
    everything = CallFilter()
    summaries, total, groups = ask(dsn, lambda client: (
        queries.search_calls(client, everything),
        queries.total_stats(client, everything),
        {by: queries.call_stats(client, everything, by=by) for by in ("model", "service")},
    ))  # fmt: skip
    assert_hard_to_fit(summaries)
    assert_one_line_per_call(print_at(80, render.calls_table(summaries)), 80, call_facts(summaries))
    lines = assert_fits(print_at(80, *(
        render.stats_tables(rows, total, by, "in this demo") for by, rows in groups.items()
    )), 80)  # fmt: skip
    for row in [row for rows in groups.values() for row in rows]:
        traffic, latency = [line for line in lines if line.startswith(row.key + " ")]
        numbers = (row.calls, row.errors, row.input_tokens, row.output_tokens)
        for text in [*map(render.count, numbers), f"{row.error_rate:.1%}", render.usd(row.cost)]:
            assert re.search(rf"(?<!\S){re.escape(text)}\*?(?!\S)", traffic), (text, traffic)
        assert all(whole(render.ms(value), latency) for value in vars(row.latency).values()), latency


def test_calls_table_at_70_columns_keeps_ids_whole(store):
    """Narrower still, the table leaves out more (tokens, seconds) rather than cut or fold ids and models."""
    dsn, _ = store
    summaries = ask(dsn, lambda client: queries.search_calls(client, CallFilter()))
    if len({call.timestamp.astimezone().date() for call in summaries}) > 1:
        pytest.skip(
            "the calls were recorded before midnight: their times carry the day, which 70 columns lack"
        )
    assert_one_line_per_call(print_at(70, render.calls_table(summaries)), 70, call_facts(summaries))


def test_follow_lines_at_80_columns_keep_the_whole_id(store):
    """`logs --follow` lines: what the table shows whole comes first and wraps rather than being cut."""
    dsn, _ = store
    summaries = ask(dsn, lambda client: queries.search_calls(client, CallFilter()))
    output = print_at(80, *(render.call_line(call, width=80) for call in summaries))
    assert max(map(len, output.splitlines())) <= 80
    for call in summaries:
        facts = (call.model, render.ms(call.duration_ms), render.usd(call.cost), call.status, call.span_id)
        assert all(whole(text, output) for text in facts), call


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

# The tables besides llm_calls that hold prompts and responses, or point at the spans that do.
CONTENT_TABLES = ("otel_traces", "otel_traces_trace_id_ts", "otel_logs")
CONTENT, CALLS = "content (prompts, responses)", "calls (numbers)"


def _kept(status: dict, horizon: str) -> dict[str, int | None]:
    """Days kept per table on one horizon, from `db status --json`."""
    return {t["table"]: t["days"] for t in status["retention"]["tables"] if t["horizon"] == horizon}


def _retention_rows(output: str) -> dict[str, str]:
    """`data -> kept` of the retention table the db commands print (a row wrapped over lines goes on blank)."""
    lines = output.split("Retention", 1)[1].splitlines()
    rows = [line.split("│")[1:3] for line in lines if line.startswith("│")]
    return {data.strip(): kept.strip() for data, kept in rows if data.strip()}


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
    assert _kept(status, "content") == dict.fromkeys(CONTENT_TABLES, 30), "raw spans, logs hold prompts too"
    code, output = run("db", "status", "--dsn", fresh)
    assert "applied  0003_llm_calls" in output and "llm_calls: 0 rows" in output
    assert _retention_rows(output) == {CONTENT: "30 days", CALLS: "400 days"}
    assert "otel_traces (raw spans)" in output.split("Retention", 1)[1]
    code, output = run("db", "retention", "--dsn", fresh, "--content", "2w", "--calls", "90")
    assert code == 0, output
    assert _retention_rows(output) == {CONTENT: "14 days", CALLS: "90 days"}
    (status,) = json_lines(run("db", "status", "--dsn", fresh, "--json")[1])
    assert _kept(status, "content") == dict.fromkeys(CONTENT_TABLES, 14)
    assert set(_kept(status, "calls").values()) == {90} and "otel_metrics_sum" in _kept(status, "calls")

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
