"""Query latency of the LLM layer (llm_calls, rollups) versus the same questions asked of raw otel_traces.

Generates realistic calls inside ClickHouse itself (INSERT INTO otel_traces SELECT … FROM numbers(), so the
materialized views fire exactly as on ingest): 30 days, skewed services/models/users, log-normal-ish latencies,
~2% errors (some with the old exporter's STATUS_CODE_ERROR), streams, cached and reasoning tokens, tags,
custom attributes, and prompt/response content (1 in 40 answers uncertain). Then it prints, for each stats and dashboard-shaped query, the
median latency on the LLM layer and on raw otel_traces, the on-disk size per million calls, and the latency of
every panel of the generated Grafana dashboards, with 'All' selected, with the busiest user chosen and with one
tag chosen.

    python bench/queries.py            # 10 million calls (~25 minutes on a shared 2-core machine, ~6 GB)
    python bench/queries.py --quick    # 50 thousand calls, one timed run per query: a CI smoke run
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import NamedTuple

from _common import machine_info, markdown_table
from llmtap.clickhouse import queries, retention
from llmtap.clickhouse.connection import connect
from llmtap.clickhouse.filters import CallFilter
from llmtap.clickhouse.migrations import migrate
from llmtap.clickhouse.prices import load_bundled_prices

DAYS = 30
ROLLUPS = tuple(table for table, _ in retention.ROLLUPS)
CHUNK = 500_000
SERVICES = [
    "chat-api",
    "support-bot",
    "search",
    "agent-runner",
    "batch-summarizer",
    "email-drafter",
    "code-review",
    "ingest",
]
MODELS = [
    ("gpt-4o-mini", "gpt-4o-mini-2024-07-18"), ("gpt-4.1-mini", "gpt-4.1-mini-2025-04-14"), ("gpt-4o", "gpt-4o-2024-08-06"),
    ("text-embedding-3-small", "text-embedding-3-small"), ("gpt-5-mini", "gpt-5-mini-2025-08-07"), ("o4-mini", "o4-mini-2025-04-16"),
    ("gpt-4.1", "gpt-4.1-2025-04-14"), ("gpt-5", "gpt-5-2025-08-07"), ("o3", "o3-2025-04-16"), ("ft:gpt-4o-mini:acme", "ft:gpt-4o-mini:acme"),
]  # fmt: skip
WORDS = [
    "the",
    "a",
    "customer",
    "order",
    "refund",
    "invoice",
    "account",
    "password",
    "reset",
    "shipping",
    "delay",
    "product",
    "review",
    "summary",
    "report",
    "meeting",
    "schedule",
    "ticket",
    "priority",
    "bug",
    "fix",
    "release",
    "deploy",
    "latency",
    "error",
    "timeout",
    "database",
    "query",
    "index",
    "table",
    "chart",
    "model",
    "token",
    "prompt",
    "answer",
    "question",
    "explain",
    "translate",
    "draft",
    "email",
    "reply",
    "polite",
    "brief",
    "detailed",
    "list",
    "steps",
    "example",
    "code",
    "python",
    "function",
    "class",
    "test",
    "failing",
    "build",
    "pipeline",
    "cluster",
    "node",
    "memory",
    "disk",
    "network",
    "cache",
    "retry",
    "limit",
    "quota",
    "plan",
    "upgrade",
    "billing",
    "payment",
    "card",
    "declined",
    "address",
    "update",
    "profile",
    "search",
    "results",
    "relevant",
    "document",
    "page",
    "section",
]
SYSTEM_PROMPTS = [
    "You are a helpful support assistant. Answer briefly and politely.",
    "You summarise documents for busy engineers. Use bullet points.",
    "You are a code reviewer. Point out bugs and risky changes.",
    "Draft professional emails in the tone of the user.",
]


def _pick(array: list[str], hash_expr: str, skew: float = 2.0) -> str:
    """A skewed pick (the first elements most often): index = floor(u^skew * n), u uniform from a hash."""
    literal = "[" + ", ".join(f"'{value}'" for value in array) + "]"
    return f"arrayElement({literal}, 1 + toUInt32(floor(pow(({hash_expr} % 100000) / 100000.0, {skew}) * {len(array)})))"


def _corpus(words: int = 20_000) -> str:
    """A fixed random text of vocabulary words, as a SQL string literal: prompts and answers are slices of it."""
    import random

    chooser = random.Random(42)
    return "'" + " ".join(chooser.choice(WORDS) for _ in range(words)) + "'"


def _text(length: str, seed: int) -> str:
    """Three slices of the corpus at hashed offsets, ``length`` characters in all: cheap to generate, and with
    three seams per text ZSTD cannot store a whole prompt as one back-reference."""
    third = f"intDiv({length}, 3)"
    slices = [
        f"substring(corpus, 1 + cityHash64(number, {seed}, {i}) % (length(corpus) - 2000), {third})"
        for i in range(3)
    ]
    return f"concat({', '.join(slices)})"


def generation_sql(total: int) -> str:
    """INSERT … SELECT of one chunk of calls ({first:UInt64}, {count:UInt64} bound), spread over DAYS days."""
    models = "[" + ", ".join(f"('{r}', '{p}')" for r, p in MODELS) + "]"
    model_index = "1 + toUInt32(floor(pow((cityHash64(number, 2) % 100000) / 100000.0, 2.2) * 10))"
    return f"""
    INSERT INTO otel_traces (Timestamp, TraceId, SpanId, ParentSpanId, SpanName, SpanKind, ServiceName,
        ResourceAttributes, ScopeName, ScopeVersion, SpanAttributes, Duration, StatusCode, StatusMessage)
    SELECT
        fromUnixTimestamp64Nano(toInt64({{start_ns:Int64}} + number * {{step_ns:Int64}} + cityHash64(number, 0) % {{step_ns:Int64}})),
        concat(lower(hex(cityHash64(number, 'trace'))), lower(hex(cityHash64(number, 'trace-low')))),
        lower(hex(cityHash64(number, 'span'))),
        '',
        concat(operation, ' ', request_model),
        'Client',
        service,
        map('service.name', service, 'service.namespace', project, 'telemetry.sdk.language', 'python',
            'telemetry.sdk.name', 'opentelemetry', 'deployment.environment', 'production'),
        'llmtap.instrumentation',
        '0.1.0',
        mapFilter((k, v) -> v != '', map(
            'gen_ai.operation.name', operation,
            'gen_ai.provider.name', 'openai',
            'gen_ai.request.model', request_model,
            'gen_ai.response.model', if(is_error, '', response_model),
            'gen_ai.response.id', if(is_error, '', concat('chatcmpl-', lower(hex(cityHash64(number, 'id'))))),
            'gen_ai.response.finish_reasons', if(is_error, '', if(cityHash64(number, 11) % 20 = 0, '["length"]', '["stop"]')),
            'gen_ai.usage.input_tokens', if(is_error, '', toString(input_tokens)),
            'gen_ai.usage.output_tokens', if(is_error, '', toString(output_tokens)),
            'gen_ai.usage.cache_read.input_tokens', if(is_error, '', toString(cached_tokens)),
            'gen_ai.usage.reasoning.output_tokens', if(is_error OR NOT startsWith(request_model, 'o'), '', toString(intDiv(output_tokens, 2))),
            'gen_ai.request.stream', if(is_stream, 'true', 'false'),
            'gen_ai.response.time_to_first_chunk', if(is_stream AND NOT is_error, toString(duration_ns * 0.2 / 1e9), ''),
            'server.address', 'api.openai.com',
            'server.port', '443',
            'error.type', if(is_error, {_pick(["RateLimitError", "APITimeoutError", "InternalServerError", "BadRequestError"], "cityHash64(number, 12)", 1.5)}, ''),
            'user.id', concat('user-', toString(toUInt32(pow((cityHash64(number, 3) % 100000) / 100000.0, 3) * 5000))),
            'session.id', concat('sess-', toString(intDiv(number, 7) % 400000)),
            'llmtap.tags', if(cityHash64(number, 13) % 10 = 0, '["prod","beta"]', '["prod"]'),
            'llmtap.attr.feature', {_pick(["answer", "summarise", "classify", "draft", "search", "translate"], "cityHash64(number, 14)", 1.5)},
            'llmtap.attr.tenant', concat('tenant-', toString(cityHash64(number, 15) % 300)),
            'llmtap.prompt.hash', lower(hex(cityHash64(number % 50000, 'prompt'))),
            'gen_ai.system_instructions', concat('[{{"type":"text","content":"', arrayElement({json.dumps(SYSTEM_PROMPTS).replace('"', "'")}, 1 + cityHash64(number, 16) % {len(SYSTEM_PROMPTS)}), '"}}]'),
            'gen_ai.input.messages', concat('[{{"role":"user","parts":[{{"type":"text","content":"', {_text("120 + cityHash64(number, 17) % 900", 1)}, '"}}]}}]'),
            'gen_ai.output.messages', if(is_error, '', concat('[{{"role":"assistant","parts":[{{"type":"text","content":"', if(cityHash64(number, 20) % 40 = 0, 'I am not sure, but ', ''), {_text("60 + cityHash64(number, 18) % 600", 2)}, '"}}],"finish_reason":"stop"}}]'))
        )),
        duration_ns,
        if(is_error, if(cityHash64(number, 19) % 10 = 0, 'STATUS_CODE_ERROR', 'Error'), 'Unset'),
        if(is_error, 'request failed', '')
    FROM (
        SELECT
            number,
            {_pick(SERVICES, "cityHash64(number, 1)", 1.8)} AS service,
            arrayElement(['support', 'platform', 'growth'], 1 + cityHash64(service) % 3) AS project,
            arrayElement({models}, {model_index}) AS model_pair,
            model_pair.1 AS request_model,
            model_pair.2 AS response_model,
            if(startsWith(request_model, 'text-embedding'), 'embeddings', 'chat') AS operation,
            cityHash64(number, 5) % 100 < 2 AS is_error,
            operation = 'chat' AND cityHash64(number, 6) % 10 < 3 AS is_stream,
            toUInt64(40 + pow((cityHash64(number, 7) % 100000) / 100000.0, 2) * 4000) AS input_tokens,
            if(operation = 'embeddings', 0, toUInt64(5 + pow((cityHash64(number, 8) % 100000) / 100000.0, 2) * 1200)) AS output_tokens,
            if(cityHash64(number, 9) % 3 = 0, intDiv(input_tokens, 128) * 128, 0) AS cached_tokens,
            toUInt64(1e6 * (120 + pow((cityHash64(number, 10) % 100000) / 100000.0, 4) * 25000 + output_tokens * 6)) AS duration_ns
        FROM numbers({{first:UInt64}}, {{count:UInt64}})
    ) AS calls, (SELECT {_corpus()} AS corpus) AS text
    SETTINGS max_insert_threads = 2
    """


def generate(client, total: int) -> float:
    """Insert ``total`` calls spread over the last DAYS days; returns seconds taken."""
    end = datetime.now(timezone.utc)
    start_ns = int((end - timedelta(days=DAYS)).timestamp() * 1e9)
    step_ns = int(DAYS * 86_400 * 1e9 // total)
    sql = generation_sql(total)
    began = time.perf_counter()
    for first in range(0, total, CHUNK):
        count = min(CHUNK, total - first)
        client.command(
            sql, parameters={"start_ns": start_ns, "step_ns": step_ns, "first": first, "count": count}
        )
        done = first + count
        rate = done / (time.perf_counter() - began)
        print(f"\r  generated {done:,}/{total:,} calls ({rate:,.0f}/s)", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return time.perf_counter() - began


# ---------------------------------------------------------------- timing


class Timing(NamedTuple):
    """Median milliseconds of a query: wall clock, and CPU time of this process (chDB runs in it, so that is the
    query's own CPU, whatever other jobs load the machine)."""

    wall: float
    cpu: float


def timed(run: Callable[[], object], repeat: int, *, warm_up: bool = True) -> Timing:
    """Medians of ``repeat`` runs (after one warm-up run unless told otherwise)."""
    if warm_up:
        run()
    walls, cpus = [], []
    for _ in range(repeat):
        began, began_cpu = time.perf_counter(), time.process_time()
        run()
        walls.append((time.perf_counter() - began) * 1000)
        cpus.append((time.process_time() - began_cpu) * 1000)
    return Timing(statistics.median(walls), statistics.median(cpus))


_RAW_GENAI = "SpanAttributes['gen_ai.operation.name'] IN ('chat', 'embeddings', 'text_completion')"
_RAW_MODEL = "if(SpanAttributes['gen_ai.response.model'] != '', SpanAttributes['gen_ai.response.model'], SpanAttributes['gen_ai.request.model'])"
_RAW_ERROR = "StatusCode IN ('Error', 'STATUS_CODE_ERROR')"
_RAW_MS = "Duration / 1e6"


def _newest_bound(limit: int, since: str) -> str:
    """The latest minute from which on at least ``limit`` calls were stored, as the dashboards' latest-calls
    tables bound their reads (llmtap.grafana.aggregate.newest): the latest hour with that many calls after it from
    the hourly rollup, then the minute inside it from the minute rollup. No calls lie in the future here, so the
    current, partial hour and minute may count."""
    for rollup, column in (("llm_calls_1h", "Hour"), ("llm_calls_1m", "Minute")):
        since = (
            f"ifNull((SELECT {column} FROM (SELECT {column}, sum(sum(Calls)) OVER (ORDER BY {column} DESC) AS Newer"
            f" FROM {rollup} WHERE {column} >= {since} GROUP BY {column}) WHERE Newer >= {limit}"
            f" ORDER BY {column} DESC LIMIT 1), {since})"
        )
    return since


def _by_value(rollup: str, raw: str) -> str:
    """Whole days of the range from the by-value rollup, the rest from llm_calls, as the query layer reads them
    (llmtap.clickhouse.by_value): `rollup` and `raw` are SELECTs over each, without their time conditions, which
    go in place of {days} and {edges}."""
    since, until = "fromUnixTimestamp64Nano({since:Int64})", "fromUnixTimestamp64Nano({until:Int64})"
    first_day = f"toStartOfDay({since}) + toIntervalDay(toStartOfDay({since}) < {since})"
    days_end = f"toStartOfDay({until})"
    days = f"Day >= {first_day} AND Day < {days_end}"
    edges = f"Timestamp >= {since} AND Timestamp < {until} AND (Timestamp < {first_day} OR Timestamp >= {days_end})"
    return rollup.replace("{days}", days) + " UNION ALL " + raw.replace("{edges}", edges)


def comparisons(now: datetime) -> list[tuple[str, str, str]]:
    """(question, SQL on the LLM layer, the same question on raw otel_traces); {since:Int64} is bound."""
    since = "fromUnixTimestamp64Nano({since:Int64})"
    return [
        ("calls+errors per hour by model, 30d (hourly rollup)",
         f"SELECT Hour AS t, Model, sum(Calls), sum(Errors) FROM llm_calls_1h WHERE Hour >= toStartOfHour({since}) GROUP BY t, Model ORDER BY t",
         f"SELECT toStartOfHour(Timestamp) AS t, {_RAW_MODEL} AS m, count(), countIf({_RAW_ERROR}) FROM otel_traces WHERE Timestamp >= {since} AND {_RAW_GENAI} GROUP BY t, m ORDER BY t"),
        # The dashboards chart percentiles per day over a week or more, per hour over shorter ranges of more than a
        # day (llmtap.grafana.aggregate.DIGEST_BUCKET).
        ("p50/p95 latency per day by model, 30d (daily rollup)",
         f"SELECT Day AS t, Model, quantilesTDigestMerge(0.5, 0.95)(DurationMsQuantiles) FROM llm_calls_1d WHERE Day >= toStartOfDay({since}) GROUP BY t, Model ORDER BY t",
         f"SELECT toStartOfDay(Timestamp) AS t, {_RAW_MODEL} AS m, quantilesTDigest(0.5, 0.95)({_RAW_MS}) FROM otel_traces WHERE Timestamp >= {since} AND {_RAW_GENAI} GROUP BY t, m ORDER BY t"),
        ("p50/p95 latency per hour by model, 6d (hourly rollup)",
         f"SELECT Hour AS t, Model, quantilesTDigestMerge(0.5, 0.95)(DurationMsQuantiles) FROM llm_calls_1h WHERE Hour >= toStartOfHour({since}) GROUP BY t, Model ORDER BY t",
         f"SELECT toStartOfHour(Timestamp) AS t, {_RAW_MODEL} AS m, quantilesTDigest(0.5, 0.95)({_RAW_MS}) FROM otel_traces WHERE Timestamp >= {since} AND {_RAW_GENAI} GROUP BY t, m ORDER BY t"),
        ("tokens and cost by model, 30d (hourly rollup + prices)",
         f"SELECT Model, sum(InputTokens), sum(OutputTokens), sum(Cost) FROM llm_calls_1h_costed WHERE Hour >= toStartOfHour({since}) GROUP BY Model",
         f"SELECT {_RAW_MODEL} AS m, sum(toUInt64OrZero(SpanAttributes['gen_ai.usage.input_tokens'])), sum(toUInt64OrZero(SpanAttributes['gen_ai.usage.output_tokens'])) FROM otel_traces WHERE Timestamp >= {since} AND {_RAW_GENAI} GROUP BY m"),
        ("error rate by service, 30d (hourly rollup)",
         f"SELECT ServiceName, sum(Errors) / sum(Calls) FROM llm_calls_1h WHERE Hour >= toStartOfHour({since}) GROUP BY ServiceName",
         f"SELECT ServiceName, countIf({_RAW_ERROR}) / count() FROM otel_traces WHERE Timestamp >= {since} AND {_RAW_GENAI} GROUP BY ServiceName"),
        ("calls per minute, one service, 24h (minute rollup)",
         f"SELECT Minute, sum(Calls) FROM llm_calls_1m WHERE Minute >= {since} AND ServiceName = 'search' GROUP BY Minute ORDER BY Minute",
         f"SELECT toStartOfMinute(Timestamp) AS t, count() FROM otel_traces WHERE Timestamp >= {since} AND ServiceName = 'search' AND {_RAW_GENAI} GROUP BY t ORDER BY t"),
        ("top 10 users by tokens, 30d (by-value rollup, edges from llm_calls)",
         "SELECT Key, sum(N), sum(T) AS t FROM (" + _by_value(
             "SELECT Value AS Key, sum(Calls) AS N, sum(InputTokens) + sum(OutputTokens) AS T FROM llm_calls_by_value_1d WHERE Dimension = 'user' AND {days} GROUP BY Key",
             "SELECT UserId, count(), sum(InputTokens + OutputTokens) FROM llm_calls WHERE {edges} GROUP BY UserId",
         ) + ") GROUP BY Key ORDER BY t DESC LIMIT 10",
         f"SELECT SpanAttributes['user.id'] AS u, count(), sum(toUInt64OrZero(SpanAttributes['gen_ai.usage.input_tokens']) + toUInt64OrZero(SpanAttributes['gen_ai.usage.output_tokens'])) AS t FROM otel_traces WHERE Timestamp >= {since} AND {_RAW_GENAI} GROUP BY u ORDER BY t DESC LIMIT 10"),
        ("latest 50 calls, 30d (llm_calls from a rollup-derived bound)",
         f"SELECT Timestamp, ServiceName, Model, DurationMs, InputTokens, OutputTokens, IsError FROM llm_calls WHERE Timestamp >= {_newest_bound(50, since)} ORDER BY Timestamp DESC LIMIT 50",
         f"SELECT Timestamp, ServiceName, {_RAW_MODEL}, {_RAW_MS}, SpanAttributes['gen_ai.usage.input_tokens'], SpanAttributes['gen_ai.usage.output_tokens'], {_RAW_ERROR} FROM otel_traces WHERE Timestamp >= {since} AND {_RAW_GENAI} ORDER BY Timestamp DESC LIMIT 50"),
        ("calls of one tenant (custom attribute), 30d (by-value rollup, edges from llm_calls)",
         "SELECT sum(N), sum(Ms) / sum(N) FROM (" + _by_value(
             "SELECT sum(Calls) AS N, sum(DurationMsSum) AS Ms FROM llm_calls_by_value_1d WHERE Dimension = 'attr.tenant' AND Value = 'tenant-42' AND {days}",
             "SELECT count(), sum(DurationMs) FROM llm_calls WHERE Attributes['tenant'] = 'tenant-42' AND {edges}",
         ) + ")",
         f"SELECT count(), avg({_RAW_MS}) FROM otel_traces WHERE Timestamp >= {since} AND {_RAW_GENAI} AND SpanAttributes['llmtap.attr.tenant'] = 'tenant-42'"),
    ]  # fmt: skip


def layer_queries(now: datetime) -> list[tuple[str, Callable[[object], object]]]:
    """The query layer's own functions, as `llmtap stats`/`logs` and serve's API call them."""
    month, day = CallFilter(since=now - timedelta(days=DAYS)), CallFilter(since=now - timedelta(days=1))
    return [
        ("stats --by model, 30d", lambda c: queries.call_stats(c, month, by="model")),
        ("stats --by service, 30d", lambda c: queries.call_stats(c, month, by="service")),
        ("stats --by user, 30d (top 50)", lambda c: queries.call_stats(c, month, by="user", limit=50)),
        ("stats --attr tenant=tenant-42, 30d", lambda c: queries.total_stats(c, dataclasses.replace(month, attributes={"tenant": "tenant-42"}))),
        ("stats --by model --user user-7, 30d", lambda c: queries.call_stats(c, dataclasses.replace(month, user=("user-7",)), by="model")),
        ("stats --by day, 30d", lambda c: queries.call_stats(c, month, by="day")),
        ("stats --by model, 24h", lambda c: queries.call_stats(c, day, by="model")),
        ("stats --latency (by model), 30d", lambda c: queries.latency_by_model(c, month)),
        ("time series, hourly by model, 30d (hourly rollup)", lambda c: queries.call_timeseries(c, month, step=timedelta(hours=1), by="model")),
        ("time series, per minute by model, 24h (minute rollup)", lambda c: queries.call_timeseries(c, day, step=timedelta(minutes=1), by="model")),
        ("logs (latest 50)", lambda c: queries.search_calls(c, CallFilter(until=now), limit=50)),
        ("logs --user user-7 (latest 50)", lambda c: queries.search_calls(c, CallFilter(user=("user-7",), until=now), limit=50)),
        ("logs --search 'refund invoice', 24h", lambda c: queries.search_calls(c, CallFilter(since=day.since, text="refund invoice"), limit=50)),
    ]  # fmt: skip


# (label, days, Grafana's interval in seconds) of the panel timings: the interval Grafana picks for a half-width
# panel (~900 px, so ~900 data points) on a 1080p screen, rounded as Grafana rounds it (1m at least: the panels'
# minimum interval).
PANEL_RANGES = (("24h", 1, 60), ("7d", 7, 600), (f"{DAYS}d", DAYS, 3600))


def dashboard_panels(
    client, now: datetime, repeat: int, choice: tuple[str, str] | None = None
) -> list[tuple[str, list[Timing]]]:
    """Median ms of every panel query of the generated dashboards over each of PANEL_RANGES, with 'All' selected,
    or with one value of one variable chosen (`choice`, the rest All) on the dashboards that have it."""
    try:
        from llmtap.grafana.interpolate import QueryContext, Variable, expand_dashboard_sql
        from llmtap.grafana.validate import dashboard_queries, selections
    except ImportError as exc:  # the grafana extra needs Python 3.11+
        print(f"(dashboard panels skipped: {exc})", file=sys.stderr)
        return []
    folder = Path(__file__).resolve().parent.parent / "grafana" / "dashboards"
    results = []
    for path in sorted(folder.glob("*.json")):
        document = json.loads(path.read_text())
        variables = selections(document)["all"]
        if choice:
            name, value = choice
            if name not in {variable.name for variable in variables}:
                continue
            variables = [Variable(name, [value]) if v.name == name else v for v in variables]
        for query in dashboard_queries(document):
            if query.shape in ("variable", "trace"):
                continue
            times = []
            for _, days, interval in PANEL_RANGES:
                sql = expand_dashboard_sql(
                    query.sql, variables, QueryContext(now - timedelta(days=days), now, interval)
                )
                times.append(timed(lambda sql=sql: client.query(sql), repeat))
            results.append((query.source, times))
    return results


def print_panels(panels: list[tuple[str, list[Timing]]], selected: str) -> None:
    slow = [p for p in panels if max(t.wall for t in p[1]) >= 300]
    slow_cpu = [p for p in panels if max(t.cpu for t in p[1]) >= 300]
    print(f"\n## Grafana panels ({len(panels)} queries, {selected}), median ms\n")
    labels = [label for label, _, _ in PANEL_RANGES]
    print(
        markdown_table(
            ["panel", *labels, *(f"{label} CPU" for label in labels)],
            [
                [source, *(f"{t.wall:,.0f}" for t in times), *(f"{t.cpu:,.0f}" for t in times)]
                for source, times in panels
            ],
        )
    )
    print(f"\npanels at or over 300 ms: {len(slow)} wall clock, {len(slow_cpu)} CPU time")


def disk_usage(client, total: int) -> list[list[object]]:
    parts = dict(
        (table, size)
        for table, size in client.query(
            "SELECT table, sum(bytes_on_disk) FROM system.parts WHERE database = currentDatabase() AND active GROUP BY table"
        ).result_rows
    )
    content = client.query(
        "SELECT sum(column_data_compressed_bytes) FROM system.parts_columns WHERE database = currentDatabase() "
        "AND table = 'llm_calls' AND active "
        "AND column IN ('InputMessages', 'OutputMessages', 'SystemInstructions', 'ToolDefinitions')"
    ).result_rows[0][0]
    per_million = 1e6 / total / 1e6  # bytes -> MB per million calls
    names = ("otel_traces", "llm_calls", *ROLLUPS)
    rows = [[name, f"{parts.get(name, 0) * per_million:,.1f}"] for name in names]
    if content:  # per-column sizes exist for wide parts only (not for the small "compact" parts of tiny runs)
        rows.append(
            [
                "llm_calls without content columns",
                f"{(parts.get('llm_calls', 0) - content) * per_million:,.1f}",
            ]
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=10_000_000, help="how many calls to generate")
    parser.add_argument(
        "--quick", action="store_true", help="50,000 calls, one timed run per query (CI smoke)"
    )
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per query (median reported)")
    parser.add_argument(
        "--store", help="chDB directory to use (default: a temporary one, deleted afterwards)"
    )
    args = parser.parse_args()
    total = 50_000 if args.quick else args.calls
    repeat = 1 if args.quick else args.repeat
    with tempfile.TemporaryDirectory(prefix="llmtap-bench-") as scratch:
        dsn = f"chdb://{args.store or scratch + '/store'}"
        client = connect(dsn, create_database=True)
        migrate(client)
        load_bundled_prices(client)
        existing = client.query("SELECT count() FROM llm_calls").result_rows[0][0]
        seconds = 0.0 if existing >= total else generate(client, total)
        total = client.query("SELECT count() FROM llm_calls").result_rows[0][0]
        for rollup in ROLLUPS:  # as the background merges would, given time
            client.command(f"OPTIMIZE TABLE {rollup} FINAL")
        # The end of the stored calls (a reused --store was generated up to its own "now").
        latest = client.query("SELECT max(Timestamp) FROM llm_calls").result_rows[0][0]
        now = latest.replace(tzinfo=timezone.utc) + timedelta(seconds=1)
        print(f"# llmtap query benchmark: {total:,} calls over {DAYS} days\n")
        print(", ".join(f"{k}: {v}" for k, v in machine_info().items()))
        if seconds:
            print(
                f"generated (INSERT … SELECT into otel_traces, views included) at {total / seconds:,.0f} calls/s\n"
            )
        for rollup in ROLLUPS:
            rows_ = client.query(f"SELECT count() FROM {rollup}").result_rows[0][0]
            print(f"{rollup}: {rows_:,} rows ({total / max(rows_, 1):,.1f} calls per row)")
        print()

        rows = []
        for name, layer_sql, raw_sql in comparisons(now):
            days = 1 if "24h" in name else 6 if "6d" in name else DAYS
            bound = {
                "since": int((now - timedelta(days=days)).timestamp() * 1e9),
                "until": int(now.timestamp() * 1e9),
            }
            layer = timed(lambda q=layer_sql, p=bound: client.query(q, parameters=p), repeat)
            # Raw scans take seconds on big stores: one run, its data already cached by nothing but itself.
            raw = timed(lambda q=raw_sql, p=bound: client.query(q, parameters=p), 1, warm_up=False)
            rows.append(
                [
                    name,
                    f"{layer.wall:,.0f}",
                    f"{layer.cpu:,.0f}",
                    f"{raw.wall:,.0f}",
                    f"{raw.wall / layer.wall:,.0f}x",
                ]
            )
        print("## Dashboard-shaped queries: LLM layer vs raw otel_traces (median ms)\n")
        print(markdown_table(["query", "llm layer", "llm layer CPU", "otel_traces", "speed-up"], rows))

        print("\n## Query layer (llmtap stats / logs, serve API), median ms\n")
        layer_rows = []
        for name, function in layer_queries(now):
            timing = timed(lambda f=function: f(client), repeat)
            layer_rows.append([name, f"{timing.wall:,.0f}", f"{timing.cpu:,.0f}"])
        print(markdown_table(["query", "ms", "CPU ms"], layer_rows))

        # The busiest user (6% of the calls in the full run) and a tag on 10% of them: the heaviest choices.
        busiest = client.query(
            "SELECT Value FROM llm_calls_by_value_1d WHERE Dimension = 'user' AND Value != '' "
            "GROUP BY Value ORDER BY sum(Calls) DESC LIMIT 1"
        ).result_rows[0][0]
        for choice in (None, ("user", busiest), ("tag", "beta")):
            panels = dashboard_panels(client, now, repeat, choice)
            if panels:
                print_panels(panels, f"{choice[0]} {choice[1]} chosen" if choice else "'All' selected")

        print("\n## On-disk size, MB per million calls\n")
        print(markdown_table(["table", "MB per 1M calls"], disk_usage(client, total)))
        client.close()


if __name__ == "__main__":
    main()
