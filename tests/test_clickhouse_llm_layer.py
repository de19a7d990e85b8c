"""The LLM layer in chDB: llm_calls_mv, the rollup, prices and costed views, filters, aggregates, retention.

Calls come from the real openai SDK under llmtap's instrumentation, stored through the collector's row
conversion (see clickhouse_llm_calls.py); every expectation is recomputed in Python from the spans.
"""

from __future__ import annotations

import dataclasses
import io
import json
import re
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest
from clickhouse_llm_calls import Call, cost_of, expected_calls, insert_spans, quantile, record_spans
from llmtap.clickhouse import by_value, queries
from llmtap.clickhouse.connection import connect
from llmtap.clickhouse.export import chunks, export_calls
from llmtap.clickhouse.filters import CallFilter, FilterError, where_clause
from llmtap.clickhouse.follow import follow_calls
from llmtap.clickhouse.messages import preview
from llmtap.clickhouse.migrations import MIGRATIONS_DIR, MIGRATIONS_TABLE, RESORTED, migrate
from llmtap.clickhouse.prices import (
    BUNDLED_PRICES,
    ModelPrice,
    PriceFileError,
    list_prices,
    load_bundled_prices,
    load_prices,
    read_prices,
)
from llmtap.clickhouse.retention import CONTENT_COLUMNS, current_retention, set_retention
from llmtap.clickhouse.timeparse import parse_duration, parse_time

LEVELS = {"p50": 0.5, "p90": 0.9, "p95": 0.95, "p99": 0.99}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A migrated chDB store holding the recorded calls; the 500 error is stored with the old status spelling."""
    client = connect("chdb://" + str(tmp_path_factory.mktemp("llm") / "chdb"), create_database=True)
    migrate(client)
    load_bundled_prices(client)
    spans = record_spans()
    calls = expected_calls(spans)
    old_spelling = {c.span_id for c in calls if c.error_type == "InternalServerError"}
    assert old_spelling, "the workload has a 500 error to store with STATUS_CODE_ERROR"
    insert_spans(client, spans, old_status_spelling=old_spelling)
    yield client, calls, spans
    client.close()


@contextmanager
def _another_database(client, name: str) -> Iterator:
    """A client on a new database `name` in the store's chDB directory (one process holds it), dropped after."""
    other = connect(f"{client.uri}?database={name}", create_database=True)
    try:
        yield other
    finally:
        other.command(f"DROP DATABASE {name} SYNC")
        other.close()


def _by_span(client, sql: str) -> dict[str, tuple]:
    return {row[0]: row[1:] for row in client.query(sql).result_rows}


# ---------------------------------------------------------------- llm_calls_mv


def test_every_llm_span_becomes_one_typed_row(store):
    client, calls, spans = store
    assert len(spans) > len(calls)  # the health-check and agent spans are not calls
    rows = _by_span(
        client,
        "SELECT SpanId, TraceId, Project, ServiceName, Operation, Model, IsError, ErrorType, InputTokens, "
        "OutputTokens, CachedTokens, ReasoningTokens, IsStream, UserId, SessionId, Tags, Attributes, Metadata, "
        "InputMessages, OutputMessages, FinishReasons, Duration, DurationMs, Provider FROM llm_calls",
    )
    assert set(rows) == {c.span_id for c in calls}
    for call in calls:
        row = rows[call.span_id]
        assert row[:11] == (
            call.trace_id, call.project, call.service, call.operation, call.model, int(call.is_error),
            call.error_type, call.input_tokens, call.output_tokens, call.cached_tokens, call.reasoning_tokens,
        ), call  # fmt: skip
        assert row[11:17] == (
            int(call.is_stream),
            call.user_id,
            call.session_id,
            list(call.tags),
            call.attributes,
            call.metadata,
        )
        assert row[17:20] == (call.input_messages, call.output_messages, list(call.finish_reasons))
        assert row[20] == call.duration_ns and row[21] == call.duration_ms
        assert row[22] == "openai"


def test_both_exporter_spellings_of_error_count_as_errors(store):
    client, calls, _ = store
    statuses = dict(
        client.query(
            "SELECT StatusCode, count() FROM llm_calls WHERE IsError GROUP BY StatusCode"
        ).result_rows
    )
    assert statuses == {"Error": 1, "STATUS_CODE_ERROR": 1}
    assert sum(statuses.values()) == sum(c.is_error for c in calls)


def test_stream_time_to_first_chunk_is_in_milliseconds(store):
    client, calls, spans = store
    ttfc = {
        f"{s.context.span_id:016x}": s.attributes.get("gen_ai.response.time_to_first_chunk") for s in spans
    }
    rows = _by_span(client, "SELECT SpanId, TimeToFirstChunkMs FROM llm_calls")
    for call in calls:
        expected = ttfc[call.span_id]
        assert rows[call.span_id][0] == (None if expected is None else pytest.approx(expected * 1000))
    assert any(ttfc[c.span_id] is not None for c in calls if c.is_stream)


# ---------------------------------------------------------------- prices and cost


def test_costed_view_prices_each_call_and_leaves_unknown_models_unpriced(store):
    client, calls, _ = store
    rows = _by_span(client, "SELECT SpanId, Cost, PriceModel FROM llm_calls_costed")
    for call in calls:
        cost, price_model = rows[call.span_id]
        expected = cost_of(call)
        assert cost == (None if expected is None else pytest.approx(expected, rel=1e-12)), call.model
        assert (price_model == "") == (expected is None)
    assert rows[next(c.span_id for c in calls if c.model == "house-model-7b")][0] is None


def test_a_price_fix_recosts_history_and_user_prices_win(store):
    client, calls, _ = store
    gpt4o = [c for c in calls if c.model == "gpt-4o"]
    fixed = ModelPrice("gpt-4o", date(2024, 10, 2), 100.0, 50.0, 200.0, "user")  # same date as ours: it wins
    try:
        load_prices(client, [fixed], source="user")
        total = client.query("SELECT sum(Cost) FROM llm_calls_costed WHERE Model = 'gpt-4o'").result_rows[0][
            0
        ]
        assert total == pytest.approx(sum(cost_of(c, [fixed]) for c in gpt4o))
        for rollup in ("llm_calls_1m_costed", "llm_calls_1h_costed", "llm_calls_1d_costed"):
            recosted = client.query(f"SELECT sum(Cost) FROM {rollup} WHERE Model = 'gpt-4o'").result_rows[0][
                0
            ]
            assert recosted == pytest.approx(total), rollup
        assert [p.source for p in list_prices(client, "gpt-4o")].count("user") == 1
    finally:
        load_prices(client, [], source="user")
    total = client.query("SELECT sum(Cost) FROM llm_calls_costed WHERE Model = 'gpt-4o'").result_rows[0][0]
    assert total == pytest.approx(sum(cost_of(c) for c in gpt4o))


def test_bundled_prices_cover_the_fake_servers_models_and_dated_snapshots():
    prices = read_prices(BUNDLED_PRICES)
    from clickhouse_llm_calls import price_of
    from llmtap.fake_openai.models import MODELS

    today = datetime.now(timezone.utc).date()
    for model, _ in MODELS:
        assert price_of(model, today, prices) is not None, model
    assert price_of("gpt-4o-2024-08-06", today, prices).model == "gpt-4o"
    assert price_of("gpt-4o-2024-05-13", today, prices).input_per_million == 5.0  # listed on its own
    assert price_of("gpt-4o", date(2024, 6, 1), prices).input_per_million == 5.0  # before the price cut


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Model,ValidFrom\ngpt,2025-01-01\n", "header must be"),
        (
            "Model,ValidFrom,InputPerMillion,CachedInputPerMillion,OutputPerMillion\ngpt,2025-13-01,1,,2\n",
            ":2: ValidFrom",
        ),
        (
            "Model,ValidFrom,InputPerMillion,CachedInputPerMillion,OutputPerMillion\ngpt,2025-01-01,one,,2\n",
            "not a number",
        ),
        (
            "Model,ValidFrom,InputPerMillion,CachedInputPerMillion,OutputPerMillion\ngpt,2025-01-01,-1,,2\n",
            "non-negative",
        ),
        (
            "Model,ValidFrom,InputPerMillion,CachedInputPerMillion,OutputPerMillion\ngpt,2025-01-01,1,,2\ngpt,2025-01-01,1,,2\n",
            "twice",
        ),
        (
            "Model,ValidFrom,InputPerMillion,CachedInputPerMillion,OutputPerMillion\n,2025-01-01,1,,2\n",
            "empty Model",
        ),
        (
            "Model,ValidFrom,InputPerMillion,CachedInputPerMillion,OutputPerMillion\ngpt,2025-01-01,1\n",
            "expected 5 fields",
        ),
        ("# only a comment\n", "no header"),
    ],
)
def test_bad_price_files_are_refused_with_the_line(tmp_path, text, message):
    path = tmp_path / "prices.csv"
    path.write_text(text)
    with pytest.raises(PriceFileError, match=message):
        read_prices(path)


def test_price_file_empty_cached_price_means_no_discount(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text(
        "# c\nModel,ValidFrom,InputPerMillion,CachedInputPerMillion,OutputPerMillion\nm,2025-01-01,2,,8\n"
    )
    assert read_prices(path) == [ModelPrice("m", date(2025, 1, 1), 2.0, 2.0, 8.0)]


# ---------------------------------------------------------------- rollup


def test_rollup_matches_the_calls(store):
    client, calls, _ = store
    rows = client.query(
        "SELECT ServiceName, Model, sum(Calls), sum(Errors), sum(StreamCalls), sum(InputTokens), sum(OutputTokens), "
        "sum(CachedTokens), sum(ReasoningTokens), sum(DurationMsSum), min(DurationMsMin), max(DurationMsMax), "
        "quantileTDigestMerge(0.5)(DurationMsQuantiles), sum(Cost) FROM llm_calls_1m_costed GROUP BY ServiceName, Model"
    ).result_rows
    groups: dict[tuple[str, str], list[Call]] = defaultdict(list)
    for call in calls:
        groups[(call.service, call.model)].append(call)
    assert {(r[0], r[1]) for r in rows} == set(groups)
    for (
        service,
        model,
        n,
        errors,
        streams,
        tin,
        tout,
        cached,
        reasoning,
        total_ms,
        low,
        high,
        p50,
        cost,
    ) in rows:
        group = groups[(service, model)]
        durations = [c.duration_ms for c in group]
        assert (n, errors, streams) == (
            len(group),
            sum(c.is_error for c in group),
            sum(c.is_stream for c in group),
        )
        assert (tin, tout, cached, reasoning) == tuple(
            sum(getattr(c, f) for c in group)
            for f in ("input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens")
        )
        assert total_ms == pytest.approx(sum(durations))
        assert (low, high) == (min(durations), max(durations))
        assert low * (1 - 1e-6) <= p50 <= high * (1 + 1e-6)  # t-digest centroids are Float32
        costs = [cost_of(c) for c in group]
        assert cost == (
            None if all(x is None for x in costs) else pytest.approx(sum(x for x in costs if x is not None))
        )


@pytest.mark.parametrize(
    "step", [timedelta(hours=1), timedelta(minutes=5)], ids=["hourly rollup", "minute rollup"]
)
def test_timeseries_from_rollups_and_from_calls_agree(store, step):
    client, calls, _ = store
    since = min(c.timestamp for c in calls) - timedelta(minutes=5)
    from_rollup = queries.call_timeseries(client, CallFilter(since=since), step=step, by="model")
    from_calls = queries.call_timeseries(
        client, CallFilter(since=since, min_duration_ms=0), step=step, by="model"
    )
    assert [(p.bucket, p.key, p.calls, p.errors, p.input_tokens, p.output_tokens) for p in from_rollup] == [
        (p.bucket, p.key, p.calls, p.errors, p.input_tokens, p.output_tokens) for p in from_calls
    ]
    assert sum(p.calls for p in from_rollup) == len(calls)
    for a, b in zip(from_rollup, from_calls, strict=True):
        assert a.cost == (None if b.cost is None else pytest.approx(b.cost))


def test_hourly_and_daily_rollups_equal_the_minute_rollup_and_backfill(store):
    client, calls, spans = store
    totals = "SELECT sum(Calls), sum(Errors), sum(InputTokens), sum(OutputTokens), sum(CachedTokens) FROM {}"
    minutes = client.query(totals.format("llm_calls_1m")).result_rows
    assert client.query(totals.format("llm_calls_1h")).result_rows == minutes
    assert client.query(totals.format("llm_calls_1d")).result_rows == minutes
    answers = "SELECT sum(Answers), sum(Uncertain) FROM {}"
    expected_answers = sum(c.operation in ("chat", "text_completion") for c in calls)
    for rollup in ("llm_answers_1m", "llm_answers_1h"):
        assert client.query(answers.format(rollup)).result_rows[0][0] == expected_answers
    # A store that had calls before migrations 0006-0014 gets them folded into the new tables once.
    with _another_database(client, "before_hourly") as older:
        migrate(older, target=5)
        insert_spans(older, spans)
        migrate(older)
        migrate(older)
        assert older.query(totals.format("llm_calls_1h")).result_rows[0][0] == len(calls)
        assert older.query(totals.format("llm_calls_1d")).result_rows[0][0] == len(calls)
        by_value_sums = (
            "SELECT Dimension, Value, sum(Calls), sum(InputTokens), round(sum(DurationMsSum), 3), "
            "arrayMap(x -> round(x, 3), quantilesTDigestMerge(0.5, 0.99)(DurationMsQuantiles)) FROM llm_calls_by_value_1d "
            "GROUP BY Dimension, Value ORDER BY Dimension, Value"
        )
        assert older.query(by_value_sums).result_rows == client.query(by_value_sums).result_rows
        for derived in (
            "SELECT Dimension, Value, Hour, sum(Calls), sum(InputTokens), sum(Uncertain), "
            "round(sum(DurationMsSum), 3) FROM llm_calls_by_value_1h GROUP BY ALL ORDER BY ALL",
            "SELECT Dimension, Value, Model, count(), sum(Uncertain) FROM llm_answers_by_value "
            "GROUP BY ALL ORDER BY ALL",
        ):
            assert older.query(derived).result_rows == client.query(derived).result_rows != []
        for rollup in ("llm_answers_1m", "llm_answers_1h"):
            assert (
                older.query(answers.format(rollup)).result_rows
                == client.query(answers.format(rollup)).result_rows
            )


def test_each_answer_is_judged_once_and_counted_once_across_the_upgrade_to_judged_rows(store):
    """Migration 0016: one view searches the response text (the three that count uncertain answers read its
    rows). A store upgraded to it between two inserts holds, row for row, what a store made after it holds, and
    counts each answer once in each of the three tables."""
    client, calls, spans = store
    searching = (
        "SELECT name FROM system.tables WHERE database = currentDatabase() AND engine = 'MaterializedView' "
        "AND create_table_query LIKE '%multiSearchAny%' ORDER BY name"
    )
    assert client.query(searching).result_rows == [("llm_calls_judged_mv",)]
    answers = [c for c in calls if c.operation in ("chat", "text_completion", "generate_content")]
    unsure = [c for c in answers if "island" in c.output_messages.lower()]
    assert 0 < len(unsure) < len(answers)

    def tags(group: list) -> int:
        return sum(len(set(c.tags)) for c in group)

    expected = {  # each call inserted twice
        "SELECT sum(Answers), sum(Uncertain) FROM llm_answers_1m": [(2 * len(answers), 2 * len(unsure))],
        "SELECT sum(Calls), sum(Uncertain) FROM llm_calls_by_value_1h": [(2 * tags(calls), 2 * tags(unsure))],
        "SELECT Dimension, count(), sum(Uncertain) FROM llm_answers_by_value GROUP BY Dimension ORDER BY Dimension": [
            ("tag", 2 * tags(answers), 2 * tags(unsure)),
            ("user", 2 * len(answers), 2 * len(unsure)),
        ],
    }
    every_row = [  # each table's rows per key, states merged (the parts differ between the two stores)
        "SELECT Minute, Project, ServiceName, Model, Operation, IsError, sum(Answers), sum(Uncertain) "
        "FROM llm_answers_1m GROUP BY ALL ORDER BY ALL",
        "SELECT Hour, Project, ServiceName, Model, Operation, IsError, sum(Answers), sum(Uncertain) "
        "FROM llm_answers_1h GROUP BY ALL ORDER BY ALL",
        "SELECT Hour, Project, Dimension, Value, ServiceName, Model, Provider, Operation, IsError, ErrorType, "
        "sum(Calls), sum(Errors), sum(StreamCalls), sum(InputTokens), sum(OutputTokens), sum(CachedTokens), "
        "sum(ReasoningTokens), round(sum(DurationMsSum), 3), min(DurationMsMin), max(DurationMsMax), "
        "arrayMap(x -> round(x, 3), quantilesTDigestMerge(0.5, 0.9)(DurationMsQuantiles)), "
        "arrayMap(x -> round(ifNotFinite(x, -1), 3), quantilesTDigestIfMerge(0.5)(TimeToFirstChunkMsQuantiles)), "
        "sum(Uncertain) "
        "FROM llm_calls_by_value_1h GROUP BY ALL ORDER BY ALL",
        "SELECT * FROM llm_answers_by_value ORDER BY ALL",
    ]
    with _another_database(client, "before_judged") as older, _another_database(client, "judged") as newer:
        migrate(older, target=15)
        migrate(newer)
        for each in (older, newer):
            each.command("INSERT INTO llm_uncertain_phrases VALUES ('island')")
            insert_spans(each, spans)  # in `older`, counted by the three views as they were
        migrate(older)
        assert older.query(searching).result_rows == [("llm_calls_judged_mv",)]
        for each in (older, newer):
            insert_spans(each, spans)
        for sql, rows in expected.items():
            assert older.query(sql).result_rows == rows, sql
        for sql in every_row:
            assert older.query(sql).result_rows == newer.query(sql).result_rows != [], sql


@pytest.mark.parametrize(
    ("table", "projection", "column"),
    [
        ("llm_calls_1m", "by_minute", "Minute"),
        ("llm_calls_1h", "by_hour", "Hour"),
        ("llm_answers_1m", "by_minute", "Minute"),
    ],
)
def test_rollup_time_projections_hold_the_rollups_rows(store, table, projection, column):
    """Migration 0010's time-ordered copies: a query read through one returns what the table itself holds (per
    key sums, since a background merge may fold rows between the two reads; ordered by time, so the projection is
    the better read even on a store this small)."""
    client, _, _ = store
    counts = "Answers, Uncertain" if table.startswith("llm_answers") else "Calls, InputTokens"
    sql = f"SELECT {column}, Project, ServiceName, Model, {counts} FROM {table} ORDER BY {column}"

    def per_key(rows) -> dict:
        sums: dict = {}
        for *key, first, second in rows:
            old = sums.get(tuple(key), (0, 0))
            sums[tuple(key)] = (old[0] + first, old[1] + second)
        return sums

    direct = per_key(client.query(sql, settings={"optimize_use_projections": 0}).result_rows)
    assert direct
    settings = {"force_optimize_projection_name": projection}
    assert per_key(client.query(sql, settings=settings).result_rows) == direct


@pytest.fixture(scope="module")
def copied(store) -> Iterator:
    """The calls copied 2,000 times, a second earlier each and every tenth copy under the same users (the others
    under new ones), in a database of their own: (client, copies of each call per user). Then a busy user's calls,
    or the failures, lie in every granule of llm_calls but a few of its projections', as in a large store (on a
    store as small as `store` either read is one granule, and ClickHouse keeps to the table)."""
    client, _, spans = store
    copies, kept = 2000, 200
    with _another_database(client, "copied") as other:
        migrate(other)
        insert_spans(other, spans)
        other.command(
            "INSERT INTO llm_calls SELECT c.* REPLACE (Timestamp - toIntervalSecond(n.number) AS Timestamp, "
            f"if(n.number % {copies // kept} = 0, UserId, concat(UserId, '-', toString(n.number % 10))) AS UserId) "
            f"FROM llm_calls AS c CROSS JOIN numbers(1, {copies}) AS n"
        )
        other.command("OPTIMIZE TABLE llm_calls FINAL")
        yield other, copies, kept


def _through(client, projection: str, sql: str, parameters: dict) -> list:
    """`sql`'s rows read through `projection`, after checking that the table itself gives the same."""
    rows = client.query(sql, parameters=parameters, settings={"force_optimize_projection_name": projection})
    direct = client.query(sql, parameters=parameters, settings={"optimize_use_projections": 0})
    assert rows.result_rows == direct.result_rows
    return rows.result_rows


def test_one_users_calls_are_read_in_user_order(store, copied):
    """Migration 0012's copy of the calls' numbers sorted by user: a query about one user that needs only its
    columns reads it, and gets what Python counts from the spans."""
    _, calls, _ = store
    client, _, kept = copied
    user = Counter(call.user_id for call in calls if call.user_id).most_common(1)[0][0]
    sql = (
        "SELECT Model, ServiceName, count(), countIf(IsError = 1), sum(InputTokens), sum(OutputTokens), "
        "round(sum(Duration) / 1e6, 3), argMax(ErrorType, Timestamp) FROM llm_calls "
        "WHERE UserId = {user:String} GROUP BY Model, ServiceName ORDER BY Model, ServiceName"
    )
    expected = []
    mine = sorted((call for call in calls if call.user_id == user), key=lambda call: call.start_ns)
    for model, service in sorted({(call.model, call.service) for call in mine}):
        group = [call for call in mine if (call.model, call.service) == (model, service)]
        expected.append((
            model, service, (kept + 1) * len(group), (kept + 1) * sum(call.is_error for call in group),
            (kept + 1) * sum(call.input_tokens for call in group),
            (kept + 1) * sum(call.output_tokens for call in group),
            round((kept + 1) * sum(call.duration_ns for call in group) / 1e6, 3), group[-1].error_type,
        ))  # fmt: skip
    assert _through(client, "by_user", sql, {"user": user}) == expected


def test_failures_are_read_apart_from_the_other_calls(store, copied):
    """Migration 0015's copy of the failures' columns sorted by status: the failures dashboard's error-type
    breakdown with a tag chosen reads it, and counts what Python counts from the spans."""
    _, calls, _ = store
    client, copies, _ = copied
    failed = [call for call in calls if call.is_error]
    tag = Counter(tag for call in failed for tag in set(call.tags)).most_common(1)[0][0]
    sql = (
        "SELECT ErrorType, count(), arraySort(groupUniqArray(ServiceName)), argMax(StatusMessage, Timestamp) "
        "FROM llm_calls WHERE IsError = 1 AND hasAny(Tags, [{tag:String}]) GROUP BY ErrorType ORDER BY ErrorType"
    )
    rows = _through(client, "by_failure", sql, {"tag": tag})
    tagged = [call for call in failed if tag in call.tags]
    assert [row[:3] for row in rows] == [
        (kind, (copies + 1) * len(group), sorted({call.service for call in group}))
        for kind in sorted({call.error_type for call in tagged})
        for group in [[call for call in tagged if call.error_type == kind]]
    ]


def _settle_mutations(client, database: str) -> None:
    """Wait for the database's mutations (ALTER … MATERIALIZE, MODIFY TTL run as ones) and fail on a failed one."""
    deadline = time.monotonic() + 60
    query = f"SELECT table, command, latest_fail_reason FROM system.mutations WHERE database = '{database}' AND NOT is_done"
    while pending := client.query(query).result_rows:
        assert not [row for row in pending if row[2]], pending
        assert time.monotonic() < deadline, f"mutations still running: {pending}"
        time.sleep(0.2)


def test_a_store_from_before_the_projections_gets_them_for_its_old_parts(store):
    client, _, spans = store
    tables = "('llm_calls_1m', 'llm_calls_1h', 'llm_answers_1m', 'llm_calls')"
    with _another_database(client, "before_projections") as older:
        migrate(older, target=9)
        insert_spans(older, spans)
        migrate(older)
        _settle_mutations(older, "before_projections")
        parts = f"database = 'before_projections' AND table IN {tables} AND active"
        without = older.query(
            f"SELECT table, name FROM system.parts WHERE {parts} AND (table, name) NOT IN "
            f"(SELECT table, parent_name FROM system.projection_parts WHERE {parts})"
        ).result_rows
        assert (
            without == [] and older.query(f"SELECT count() FROM system.parts WHERE {parts}").result_rows[0][0]
        )


_OLD_ORDER = "ORDER BY (Project, ServiceName, Model, Timestamp)"
_NEW_ORDER = "ORDER BY (Project, toStartOfHour(Timestamp), ServiceName, Model, Timestamp)"


def _sorted_the_earlier_way(client, spans, directory: Path, days: int = 0) -> None:
    """Make `client`'s database a store of `spans` as the earlier 0003 made it (llm_calls in the old order, the
    old text's checksum recorded), with copies of the calls on each of the `days` days before, and a retention
    of 300 days for calls and 200 for content (set before the copies: on 150 partitions it takes minutes)."""
    for path in MIGRATIONS_DIR.glob("*.sql"):
        sql = path.read_text()
        if path.name.startswith("0003_"):
            assert _NEW_ORDER in sql
            sql = sql.replace(_NEW_ORDER, _OLD_ORDER)
        (directory / path.name).write_text(sql)
    migrate(client, directory=directory)
    client.insert(MIGRATIONS_TABLE, [[3, "llm_calls", next(iter(RESORTED[3][1])), datetime.now(timezone.utc)]],
                  column_names=["Version", "Name", "Checksum", "AppliedAt"])  # fmt: skip
    set_retention(client, content_days=200, calls_days=300)
    insert_spans(client, spans)
    if days:
        client.command(
            "INSERT INTO llm_calls SELECT c.* REPLACE (Timestamp - toIntervalDay(n.number + 1) AS Timestamp, "
            f"concat(SpanId, '-', toString(n.number)) AS SpanId) FROM llm_calls AS c CROSS JOIN numbers({days}) AS n",
            settings={"max_partitions_per_insert_block": 0},
        )


def test_a_store_sorted_the_earlier_way_is_resorted_keeping_rows_retention_and_rollups(
    store, tmp_path, monkeypatch
):
    client, _, spans = store
    calls = "SELECT * FROM llm_calls ORDER BY TraceId, SpanId"
    rollups = {  # each call once: by value, under its user
        table: f"SELECT Model, sum(Calls), sum(InputTokens) FROM {table} WHERE {where} GROUP BY Model ORDER BY Model"
        for table, where in (("llm_calls_1m", 1), ("llm_calls_1h", 1), ("llm_calls_1d", 1),
                             ("llm_calls_by_value_1d", "Dimension = 'user'"))
    }  # fmt: skip
    definition = "SELECT sorting_key, create_table_query FROM system.tables WHERE database = 'sorted_before' AND name = 'llm_calls'"
    with _another_database(client, "sorted_before") as older:
        _sorted_the_earlier_way(older, spans, tmp_path, days=150)  # more partitions than one INSERT may write
        ((old_key, old_create),) = older.query(definition).result_rows
        assert old_key == "Project, ServiceName, Model, Timestamp"
        older.command(
            "CREATE TABLE llm_calls_resort (x UInt8) ENGINE = Memory"
        )  # a copy cut off before the swap
        # A writer adds three calls to the old table while it is copied, just before the swap.
        late = (
            "INSERT INTO otel_traces SELECT * REPLACE (concat(SpanId, 'w') AS SpanId) FROM "
            "(SELECT * FROM otel_traces WHERE SpanId IN (SELECT SpanId FROM llm_calls) ORDER BY SpanId LIMIT 3)"
        )
        before = {name: older.query(sql).result_rows for name, sql in {"calls": calls, **rollups}.items()}
        command = older.command

        def write_before_swap(sql, *args, **kwargs):
            if sql.startswith("EXCHANGE TABLES"):
                command(late)
            return command(sql, *args, **kwargs)

        monkeypatch.setattr(older, "command", write_before_swap)
        report = migrate(older)
        monkeypatch.undo()

        assert report.resorted == ["llm_calls"] and not report.changed_since_applied and not report.applied
        assert "re-sorted llm_calls" in report.summary()
        ((new_key, new_create),) = older.query(definition).result_rows
        assert new_key == "Project, toStartOfHour(Timestamp), ServiceName, Model, Timestamp"
        assert new_create == old_create.replace(
            _OLD_ORDER, _NEW_ORDER
        )  # TTLs, codecs, indexes, settings kept
        after = older.query(calls).result_rows
        assert [row for row in after if not row[2].endswith("w")] == before["calls"]
        assert len(after) == len(before["calls"]) + 3
        for table, sql in rollups.items():  # the three late calls counted once, when they were written
            assert sum(r[1] for r in older.query(sql).result_rows) == sum(r[1] for r in before[table]) + 3, (
                table
            )
        kept = current_retention(older)
        assert (kept.calls_days, kept.content_days) == (300, 200)
        leftovers = "SELECT name FROM system.tables WHERE database = 'sorted_before' AND name LIKE 'llm_calls_resort%'"
        assert older.query(leftovers).result_rows == []
        again = migrate(older)
        assert not again.resorted and not again.changed_since_applied

        # The materialized views feed the new table: a new call lands once in it and once in each rollup.
        insert_spans(older, spans[:1])
        assert older.query("SELECT count() FROM llm_calls").result_rows[0][0] == len(after) + 1
        for table, sql in rollups.items():
            assert sum(r[1] for r in older.query(sql).result_rows) == sum(r[1] for r in before[table]) + 4, (
                table
            )


def test_a_resort_cut_off_after_the_swap_copies_the_late_rows_without_counting_them_again(store, tmp_path):
    client, _, spans = store
    rollups = "SELECT sum(Calls) FROM llm_calls_1m"
    with _another_database(client, "resort_cut_off") as older:
        _sorted_the_earlier_way(older, spans, tmp_path)
        counted = older.query(rollups).result_rows[0][0]
        # The re-sort's steps up to the swap, then a writer that still holds the old table adds three calls.
        create = older.query(
            "SELECT create_table_query FROM system.tables WHERE database = 'resort_cut_off' AND name = 'llm_calls'"
        ).result_rows[0][0]
        older.command(create.replace("CREATE TABLE resort_cut_off.llm_calls ", "CREATE TABLE llm_calls_resort ", 1)
                      .replace(_OLD_ORDER, _NEW_ORDER))  # fmt: skip
        older.command("INSERT INTO llm_calls_resort SELECT * FROM llm_calls")
        older.command("EXCHANGE TABLES llm_calls AND llm_calls_resort")
        older.command(
            "INSERT INTO llm_calls_resort SELECT * REPLACE (concat(SpanId, '-late') AS SpanId) "
            "FROM llm_calls_resort ORDER BY SpanId LIMIT 3"
        )

        report = migrate(older)

        assert report.resorted == ["llm_calls"] and not report.changed_since_applied
        late = older.query("SELECT count() FROM llm_calls WHERE endsWith(SpanId, '-late')").result_rows[0][0]
        total = older.query("SELECT count() FROM llm_calls").result_rows[0][0]
        assert (late, total) == (3, len(expected_calls(spans)) + 3)
        assert older.query(rollups).result_rows[0][0] == counted  # attached, not inserted: no view fired
        again = migrate(older)
        assert not again.resorted and not again.changed_since_applied


def test_a_changed_migration_that_is_no_known_earlier_text_is_only_reported(store, tmp_path):
    client, _, spans = store
    key = "SELECT sorting_key FROM system.tables WHERE database = 'changed_elsewise' AND name = 'llm_calls'"
    with _another_database(client, "changed_elsewise") as older:
        _sorted_the_earlier_way(older, spans, tmp_path)
        older.insert(MIGRATIONS_TABLE, [[3, "llm_calls", "some other text", datetime.now(timezone.utc)]],
                     column_names=["Version", "Name", "Checksum", "AppliedAt"])  # fmt: skip
        report = migrate(older)
        assert [m.version for m in report.changed_since_applied] == [3] and not report.resorted
        assert older.query(key).result_rows[0][0] == "Project, ServiceName, Model, Timestamp"


def test_timeseries_rejects_fractional_steps(store):
    client, _, _ = store
    with pytest.raises(ValueError, match="whole number of seconds"):
        queries.call_timeseries(client, CallFilter(), step=timedelta(milliseconds=1500))


# ---------------------------------------------------------------- filters


def _filters(calls: list[Call]) -> list[tuple[str, CallFilter, object]]:
    middle = sorted(c.timestamp for c in calls)[len(calls) // 2]
    trace = calls[0].trace_id
    return [
        ("all", CallFilter(), lambda c: True),
        ("project", CallFilter(project=("team-b",)), lambda c: c.project == "team-b"),
        ("service", CallFilter(service=("chat-api",)), lambda c: c.service == "chat-api"),
        ("models", CallFilter(model=("gpt-4o", "o4-mini")), lambda c: c.model in ("gpt-4o", "o4-mini")),
        ("operation", CallFilter(operation=("embeddings",)), lambda c: c.operation == "embeddings"),
        ("errors", CallFilter(status="error"), lambda c: c.is_error),
        ("ok", CallFilter(status="ok"), lambda c: not c.is_error),
        ("error type", CallFilter(error_type=("RateLimitError",)), lambda c: c.error_type == "RateLimitError"),
        ("user", CallFilter(user=("u1",)), lambda c: c.user_id == "u1"),
        ("session", CallFilter(session=("s9",)), lambda c: c.session_id == "s9"),
        ("one tag", CallFilter(tags=("prod",)), lambda c: "prod" in c.tags),
        ("all tags", CallFilter(tags=("prod", "beta")), lambda c: {"prod", "beta"} <= set(c.tags)),
        ("attr value", CallFilter(attributes={"feature": "chat"}), lambda c: c.attributes.get("feature") == "chat"),
        ("attr key", CallFilter(attributes={"job": None}), lambda c: "job" in c.attributes),
        ("metadata", CallFilter(metadata={"ticket": "T-1"}), lambda c: c.metadata.get("ticket") == "T-1"),
        ("text", CallFilter(text="clickhouse"), lambda c: "clickhouse" in (c.input_messages + c.output_messages).lower()),
        ("since", CallFilter(since=middle), lambda c: c.timestamp >= middle),
        ("until", CallFilter(until=middle), lambda c: c.timestamp < middle),
        ("slow", CallFilter(min_duration_ms=10.0), lambda c: c.duration_ms >= 10.0),
        ("trace", CallFilter(trace_id=trace), lambda c: c.trace_id == trace),
        ("combined", CallFilter(service=("chat-api",), status="ok", tags=("prod",)),
         lambda c: c.service == "chat-api" and not c.is_error and "prod" in c.tags),
        ("injection", CallFilter(model=("x' OR 1=1 --",)), lambda c: False),
    ]  # fmt: skip


def test_every_filter_selects_what_python_selects(store):
    client, calls, _ = store
    for name, flt, keep in _filters(calls):
        expected = {c.span_id for c in calls if keep(c)}
        found = {c.span_id for c in queries.search_calls(client, flt, limit=1000)}
        assert found == expected, name
        assert queries.total_stats(client, flt).calls == len(expected), name
    assert client.query("SELECT count() FROM llm_calls").result_rows[0][0] == len(calls)  # still there


def test_filter_sql_holds_no_user_text():
    flt = CallFilter(model=("evil'model",), attributes={"k'ey": "va'lue"}, text="drop table", tags=("t'ag",))
    sql, params = where_clause(flt)
    assert "evil" not in sql and "k'ey" not in sql and "drop" not in sql and "t'ag" not in sql
    assert params["model"] == ["evil'model"] and params["text"] == "drop table"


@pytest.mark.parametrize(
    ("fields", "option"),
    [
        (
            {
                "since": datetime(2026, 1, 2, tzinfo=timezone.utc),
                "until": datetime(2026, 1, 1, tzinfo=timezone.utc),
            },
            "--since",
        ),
        ({"status": "broken"}, "--status"),
        ({"model": ("",)}, "--model"),
        ({"tags": ("ok", "")}, "--tags"),
        ({"attributes": {"": "x"}}, "--attr"),
        ({"text": "  "}, "--search"),
        ({"min_duration_ms": -1.0}, "--slower-than"),
    ],
)
def test_meaningless_filters_are_refused(fields, option):
    with pytest.raises(FilterError) as info:
        CallFilter(**fields)
    assert info.value.option == option


def test_rollup_where_refuses_columns_it_does_not_have():
    with pytest.raises(ValueError, match="needs llm_calls"):
        where_clause(CallFilter(user=("u1",)), rollup="Minute")


# ---------------------------------------------------------------- single calls


def test_search_is_newest_first_with_a_prompt_preview(store):
    client, calls, _ = store
    found = queries.search_calls(client, CallFilter(), limit=5)
    newest = sorted(calls, key=lambda c: (c.start_ns, c.span_id), reverse=True)[:5]
    assert [c.span_id for c in found] == [c.span_id for c in newest]
    (first,) = queries.search_calls(client, CallFilter(text="What is ClickHouse"), limit=1)
    assert first.prompt_preview == "What is ClickHouse?"
    assert first.status == "ok"
    error = queries.search_calls(client, CallFilter(error_type=("RateLimitError",)))[0]
    assert error.status == "RateLimitError" and error.is_error


def _last_message_text(messages: str) -> str:
    """llmtap.clickhouse.messages.preview in Python: the last message's text parts (or bare content), else the
    JSON itself, on one line."""
    try:
        last = json.loads(messages)[-1]
        parts = last.get("parts", [last])
        text = "\n".join(p["content"] for p in parts if isinstance(p.get("content"), str) and p["content"])
    except (ValueError, LookupError, TypeError, AttributeError):
        text = ""
    return " ".join((text or messages).split())


_TOOL_CALL = json.dumps(
    [{"role": "assistant", "parts": [{"type": "tool_call", "name": "lookup", "arguments": {}}]}]
)


@pytest.mark.parametrize(
    ("messages", "expected"),
    [
        (json.dumps([{"role": "user", "parts": [{"type": "text", "content": "older turn"}]},
                     {"role": "user", "parts": [{"type": "text", "content": "  a\n\n\tb  "},
                                                {"type": "text", "content": "c"}]}]), "a b c"),
        (json.dumps([{"role": "user", "content": "bare   content"}]), "bare content"),
        (_TOOL_CALL, _TOOL_CALL[:40]),
        ("not JSON at all", "not JSON at all"),
        ("", ""),
    ],
)  # fmt: skip
def test_message_preview_sql(store, messages, expected):
    """llmtap.clickhouse.messages.preview itself: the last message's text parts (or bare content) on one
    trimmed line, else the stored text as it is, cut to the length."""
    client, _, _ = store
    got = client.query(f"SELECT {preview('{m:String}', 40)}", parameters={"m": messages}).result_rows[0][0]
    assert got == expected


def test_prompt_previews_are_the_last_messages_text_on_one_line(store):
    """The logs' previews (and the explorer's: the same expression) for every stored call, cut to 40 characters."""
    client, calls, _ = store
    found = {
        c.span_id: c.prompt_preview
        for c in queries.search_calls(client, CallFilter(), limit=len(calls), preview_chars=40)
    }
    multi_turn = [c for c in calls if c.input_messages.count('"role"') > 1]
    assert multi_turn, "the workload has a conversation, whose preview is its latest turn"
    for call in calls:
        assert found[call.span_id] == _last_message_text(call.input_messages)[:40].strip(), call.span_id


def test_get_calls_by_span_or_trace_id(store):
    client, calls, _ = store
    call = next(c for c in calls if c.metadata)
    (detail,) = queries.get_calls(client, call.span_id)
    assert (detail.span_id, detail.metadata, detail.tags, detail.attributes) == (
        call.span_id, call.metadata, list(call.tags), call.attributes,
    )  # fmt: skip
    assert detail.input_messages == call.input_messages and detail.cost == pytest.approx(cost_of(call))
    assert abs(detail.timestamp - call.timestamp) < timedelta(microseconds=2)
    assert [d.span_id for d in queries.get_calls(client, call.trace_id)] == [call.span_id]
    assert queries.get_calls(client, "0" * 16) == []
    with pytest.raises(ValueError, match="is not a span id"):
        queries.get_calls(client, "not-an-id")


# ---------------------------------------------------------------- aggregates


def _key(call: Call, by: str) -> str:
    return {
        "model": call.model, "service": call.service, "project": call.project, "provider": "openai",
        "operation": call.operation, "user": call.user_id, "day": call.timestamp.date().isoformat(),
    }[by]  # fmt: skip


@pytest.mark.parametrize("by", list(queries.GROUPINGS))
def test_stats_by_every_grouping_match_python(store, by):
    client, calls, _ = store
    rows = {row.key: row for row in queries.call_stats(client, CallFilter(), by=by)}
    groups: dict[str, list[Call]] = defaultdict(list)
    for call in calls:
        groups[_key(call, by)].append(call)
    assert set(rows) == set(groups)
    digests = client if by_value.selection(CallFilter(), by) else None
    assert (digests is not None) == (by == "user")  # a ranking of users comes from the by-value rollup
    for key, group in groups.items():
        _assert_stats(rows[key], group, digests=digests)
    _assert_stats(queries.total_stats(client, CallFilter()), calls)


def _assert_stats(row: queries.StatsRow, group: list[Call], *, digests=None) -> None:
    """`row` holds `group`'s aggregates; its percentiles are exact, or with `digests` (a client) those of a
    t-digest of the durations, as the by-value rollup keeps them."""
    durations = [c.duration_ms for c in group]
    assert row.calls == len(group)
    assert row.errors == sum(c.is_error for c in group)
    assert row.error_rate == pytest.approx(row.errors / len(group))
    assert (row.input_tokens, row.output_tokens, row.cached_tokens, row.reasoning_tokens) == tuple(
        sum(getattr(c, f) for c in group)
        for f in ("input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens")
    )
    assert (row.latency.min, row.latency.max) == (min(durations), max(durations))
    assert row.latency.avg == pytest.approx(sum(durations) / len(durations))
    if digests is None:
        expected = [quantile(durations, level) for level in LEVELS.values()]
    else:
        expected = digests.query(
            f"SELECT quantilesTDigest({', '.join(map(str, LEVELS.values()))})(arrayJoin({{d:Array(Float64)}}))",
            parameters={"d": durations},
        ).result_rows[0][0]
    for (name, _), value in zip(LEVELS.items(), expected, strict=True):
        assert getattr(row.latency, name) == pytest.approx(value, rel=1e-6), name
    costs = [cost_of(c) for c in group]
    priced = [x for x in costs if x is not None]
    assert row.cost == (pytest.approx(sum(priced)) if priced else None)
    assert row.unpriced_calls == len(costs) - len(priced)


def _by_value_questions(calls: list[Call]) -> list[tuple[CallFilter, str | None, object]]:
    """(filter, grouping, which calls) of the questions the by-value rollup answers."""
    user = calls[0].user_id
    attribute = next((k, v) for c in calls for k, v in sorted(c.attributes.items()))
    return [
        (CallFilter(), "user", lambda c: True),
        (CallFilter(user=(user, "nobody")), None, lambda c: c.user_id == user),
        (CallFilter(user=(user,), status="ok"), "model", lambda c: c.user_id == user and not c.is_error),
        (CallFilter(tags=("prod",), service=("chat-api",)), "service",
         lambda c: "prod" in c.tags and c.service == "chat-api"),
        (CallFilter(attributes=dict([attribute])), "model", lambda c: c.attributes.get(attribute[0]) == attribute[1]),
        (CallFilter(attributes={attribute[0]: None}), None, lambda c: attribute[0] in c.attributes),
    ]  # fmt: skip


def test_user_tag_and_attribute_stats_take_whole_days_from_the_by_value_rollup(store):
    """Over a range of several days, the whole days come from llm_calls_by_value_1d and only the partial first
    and last day from llm_calls: the answers match Python, and stay the same once the whole days' calls are gone
    from llm_calls."""
    client, calls, spans = store
    with _another_database(client, "by_value") as other:
        migrate(other)
        load_bundled_prices(other)
        insert_spans(other, spans)
        other.command(
            "INSERT INTO llm_calls SELECT c.* REPLACE (Timestamp - toIntervalDay(n.number + 1) AS Timestamp, "
            "concat(SpanId, '-', toString(n.number)) AS SpanId) FROM llm_calls AS c CROSS JOIN numbers(3) AS n"
        )
        day_ns = 86_400 * 10**9
        past = [
            dataclasses.replace(c, start_ns=c.start_ns - (n + 1) * day_ns, span_id=f"{c.span_id}-{n}")
            for c in calls
            for n in range(3)
        ]
        since = min(c.timestamp for c in past) - timedelta(minutes=1)

        def answers_match_python() -> None:
            for flt, by, keep in _by_value_questions(calls):
                flt = dataclasses.replace(flt, since=since)
                assert by_value.selection(flt, by), flt
                rows = queries.call_stats(other, flt, by=by) if by else [queries.total_stats(other, flt)]
                groups: dict[str, list[Call]] = defaultdict(list)
                for call in calls + past:
                    if keep(call) and call.timestamp >= since:
                        groups[_key(call, by) if by else "total"].append(call)
                assert {row.key for row in rows} == set(groups), (flt, by)
                for row in rows:
                    _assert_stats(row, groups[row.key], digests=other)
                if by:  # the busiest groups, found before any latency digest is merged
                    busiest = queries.call_stats(other, flt, by=by, limit=2)
                    assert [(r.key, r.calls) for r in busiest] == [(r.key, r.calls) for r in rows[:2]]
                    for row in busiest:
                        _assert_stats(row, groups[row.key], digests=other)

        answers_match_python()
        # The busiest users are ranked from the per-day projection of the rollup (migration 0011).
        month = CallFilter(since=since)
        ranking, parameters = by_value.busiest(by_value.selection(month, "user"), month, "user", "UserId", 3)
        ranked = other.query(
            ranking, parameters=parameters, settings={"force_optimize_projection_name": "per_day"}
        ).result_rows
        per_user = [(r.key, r.calls) for r in queries.call_stats(other, month, by="user")]
        assert [key for (key,) in ranked] == [key for key, _ in per_user[:3]]
        whole_days = other.query(
            "SELECT DISTINCT _partition_id FROM llm_calls WHERE toStartOfDay(Timestamp) > {since:DateTime64(6)} "
            "AND toStartOfDay(Timestamp) < toStartOfDay(now())",
            parameters={"since": since},
        ).result_rows
        assert len(whole_days) == 2
        for (partition,) in whole_days:
            other.command(f"ALTER TABLE llm_calls DROP PARTITION ID '{partition}'")
        assert other.query("SELECT count() FROM llm_calls").result_rows[0][0] == 2 * len(calls)
        answers_match_python()
        # A short range holds no whole day: llm_calls answers, with exact percentiles.
        assert (
            by_value.selection(
                CallFilter(user=("u1",), since=datetime.now(timezone.utc) - timedelta(hours=23)), None
            )
            is None
        )


def test_by_value_rollup_counts_each_call_once_under_each_value(store):
    client, calls, _ = store
    expected: dict[tuple[str, str], list[Call]] = defaultdict(list)
    for call in calls:
        expected[("user", call.user_id)].append(call)
        for tag in set(call.tags):
            expected[("tag", tag)].append(call)
        for key, value in call.attributes.items():
            expected[(f"attr.{key}", value)].append(call)
    rows = client.query(
        "SELECT Dimension, Value, sum(Calls), sum(Errors), sum(InputTokens), sum(OutputTokens), sum(CachedTokens), "
        "sum(ReasoningTokens), sum(DurationMsSum), min(DurationMsMin), max(DurationMsMax) "
        "FROM llm_calls_by_value_1d GROUP BY Dimension, Value"
    ).result_rows
    assert {(r[0], r[1]) for r in rows} == set(expected)
    for dimension, value, n, errors, *tokens, total_ms, low, high in rows:
        group = expected[(dimension, value)]
        durations = [c.duration_ms for c in group]
        assert (n, errors) == (len(group), sum(c.is_error for c in group))
        assert tokens == [
            sum(getattr(c, f) for c in group)
            for f in ("input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens")
        ]
        assert (total_ms, low, high) == (pytest.approx(sum(durations)), min(durations), max(durations))


def test_stats_limit_and_order(store):
    client, _, _ = store
    rows = queries.call_stats(client, CallFilter(), by="model", limit=2)
    assert len(rows) == 2 and rows[0].calls >= rows[1].calls
    days = queries.call_stats(client, CallFilter(), by="day")
    assert [r.key for r in days] == sorted(r.key for r in days)
    with pytest.raises(ValueError, match="cannot group by"):
        queries.call_stats(client, CallFilter(), by="planet")


def test_latency_by_model(store):
    client, calls, _ = store
    table = queries.latency_by_model(client, CallFilter(service=("chat-api",)))
    for model, count, latency in table:
        durations = [c.duration_ms for c in calls if c.model == model and c.service == "chat-api"]
        assert count == len(durations)
        assert (latency.min, latency.max) == (min(durations), max(durations))
        assert latency.p90 == pytest.approx(quantile(durations, 0.9))
    assert [row[2].p90 for row in table] == sorted((row[2].p90 for row in table), reverse=True)


def test_distinct_values(store):
    client, calls, _ = store
    assert set(queries.distinct_values(client, "service")) == {c.service for c in calls}


# ---------------------------------------------------------------- follow


def test_follow_yields_only_new_calls_including_late_arrivals(store):
    client, calls, _ = store
    clock = [max(c.timestamp for c in calls) + timedelta(seconds=1)]
    polls = follow_calls(
        client, CallFilter(service=("chat-api",)), already_seen=queries.search_calls(client, CallFilter(), limit=3),
        sleep=lambda _: None, clock=lambda: clock[0],
    )  # fmt: skip
    first = next(polls)
    newest_three = {c.span_id for c in queries.search_calls(client, CallFilter(), limit=3)}
    assert {c.span_id for c in first} == {c.span_id for c in calls if c.service == "chat-api"} - newest_three
    assert next(polls) == []
    # A call that started before the ones already shown but is stored only now (a long stream) still shows.
    late_id, earliest = "00000000000abcde", min(calls, key=lambda c: c.start_ns)
    client.command(
        "INSERT INTO otel_traces SELECT * REPLACE ({late:String} AS SpanId) "
        "FROM (SELECT * FROM otel_traces WHERE SpanId = {s:String})",
        parameters={"late": late_id, "s": earliest.span_id},
    )
    try:
        assert [c.span_id for c in next(polls)] == [late_id]
    finally:
        client.command("DELETE FROM llm_calls WHERE SpanId = {s:String}", parameters={"s": late_id})
    with pytest.raises(ValueError, match="drop --until"):
        next(follow_calls(client, CallFilter(until=clock[0])))


# ---------------------------------------------------------------- retention

# Where prompts and responses are stored besides llm_calls' content columns: the raw spans (attributes, events),
# the log records (GenAI log events carry the messages), and the spans' trace-id lookup, which points at them.
CONTENT_TABLES = ("otel_traces", "otel_traces_trace_id_ts", "otel_logs")
# Settings, not data: kept whole.
SETTINGS_TABLES = ("model_prices", "llm_uncertain_phrases", MIGRATIONS_TABLE)


def _kept_days(client) -> dict[str, int | None]:
    """Days each stored table keeps its rows, and llm_calls.<column> its content columns, as ClickHouse shows
    their TTLs (None: no TTL, kept forever)."""
    days: dict[str, int | None] = {}
    for name, engine, create in client.query(
        "SELECT name, engine_full, create_table_query FROM system.tables "
        "WHERE database = currentDatabase() AND engine LIKE '%MergeTree'"
    ).result_rows:
        ttl = re.search(r"\bTTL\b.*?toIntervalDay\((\d+)\)", engine)
        days[name] = int(ttl.group(1)) if ttl else None
        if name == "llm_calls":
            for column in CONTENT_COLUMNS:
                declaration = create.split(f"`{column}` ", 1)[1].split("`", 1)[0]
                ttl = re.search(r"\bTTL\b.*?toIntervalDay\((\d+)\)", declaration)
                days[f"llm_calls.{column}"] = int(ttl.group(1)) if ttl else None
    return days


def _by_horizon(days: dict[str, int | None]) -> tuple[dict[str, int | None], dict[str, int | None]]:
    """(content, numbers): the tables and columns holding prompts and responses, and those holding numbers."""
    content = {name: d for name, d in days.items() if name in CONTENT_TABLES or name.startswith("llm_calls.")}
    numbers = {name: d for name, d in days.items() if name not in content and name not in SETTINGS_TABLES}
    return content, numbers


def test_a_fresh_store_keeps_content_for_the_content_retention_only(store):
    client, _, _ = store
    content, numbers = _by_horizon(_kept_days(client))
    assert len(content) == len(CONTENT_TABLES) + len(CONTENT_COLUMNS), content
    assert content == dict.fromkeys(content, 30), "every table holding prompts expires after 30 days (README)"
    assert {"llm_calls", "llm_calls_1m", "otel_metrics_sum", "otel_metrics_histogram"} <= set(numbers)
    assert numbers == dict.fromkeys(numbers, 400), "numbers are kept for the calls retention"


def test_an_older_store_gets_its_own_content_retention_on_every_content_table(store):
    """A store made before every table had a TTL, whose owner ran `db retention --content 60d` then (it set
    llm_calls' content columns and otel_traces): the tables without a TTL get the store's 60 days, not 30."""
    client, _, _ = store
    with _another_database(client, "unbounded_before") as older:
        migrate(older)
        for table, days in _kept_days(older).items():
            if table.startswith("otel_") and days is not None:
                older.command(f"ALTER TABLE {table} REMOVE TTL")
        older.command(
            "ALTER TABLE llm_calls "
            + ", ".join(
                f"MODIFY COLUMN {column} String TTL toDateTime(Timestamp) + INTERVAL 60 DAY CODEC(ZSTD(3))"
                for column in CONTENT_COLUMNS
            )
        )
        older.command("ALTER TABLE otel_traces MODIFY TTL toDateTime(Timestamp) + INTERVAL 60 DAY")
        older.command("INSERT INTO otel_logs (Timestamp, Body) VALUES (now(), 'a GenAI event')")
        report = migrate(older)
        content, numbers = _by_horizon(_kept_days(older))
        assert content == dict.fromkeys(content, 60)
        assert numbers == dict.fromkeys(numbers, 400)
        # The summary names what held rows: the logs; the empty tables got their TTL without a word.
        assert "otel_logs 60 days" in report.summary() and "otel_traces " not in report.summary()
        assert "otel_metrics" not in report.summary()
        assert "otel_logs" not in migrate(older).summary(), "set once"


def test_retention_reads_and_changes_ttls(tmp_path_factory, store):
    client, _, _ = store
    path = client.uri.removeprefix("chdb://")
    other = connect(f"chdb://{path}?database=retention_test", create_database=True)
    try:
        migrate(other)
        assert current_retention(other).calls_days == 400 and current_retention(other).content_days == 30
        changed = set_retention(other, content_days=7, calls_days=90)
        content, numbers = _by_horizon(_kept_days(other))
        assert content == dict.fromkeys(content, 7) and numbers == dict.fromkeys(numbers, 90)
        assert (changed.content_days, changed.calls_days) == (7, 90)
        with pytest.raises(ValueError, match="cannot be longer"):
            set_retention(other, content_days=120)
        with pytest.raises(ValueError, match="at least 1 day"):
            set_retention(other, calls_days=0)
        # Content older than its TTL is gone; the numbers stay.
        now = datetime.now(timezone.utc)
        old, recent = now - timedelta(days=20), now - timedelta(days=1)
        other.insert(
            "otel_traces",
            [[ts, f"{i:032x}", f"{i:016x}", {"gen_ai.operation.name": "chat", "gen_ai.input.messages": "secret",
              "gen_ai.usage.input_tokens": "7"}] for i, ts in enumerate((old, recent), 1)],
            column_names=["Timestamp", "TraceId", "SpanId", "SpanAttributes"],
        )  # fmt: skip
        other.command("OPTIMIZE TABLE llm_calls FINAL")
        rows = other.query(
            "SELECT SpanId, InputMessages, InputTokens FROM llm_calls ORDER BY SpanId"
        ).result_rows
        assert rows == [(f"{1:016x}", "", 7), (f"{2:016x}", "secret", 7)]
        assert other.query("SELECT SpanId FROM otel_traces").result_rows == [(f"{2:016x}",)]  # raw span gone
        # Now the rollups hold rows and their time-ordered projections (migration 0010): a TTL change
        # re-materializes the TTL in both, and must not fail.
        set_retention(other, calls_days=60)
        assert _by_horizon(_kept_days(other)) == (dict.fromkeys(content, 7), dict.fromkeys(numbers, 60))
        _settle_mutations(other, "retention_test")
        assert other.query("SELECT sum(Calls) FROM llm_calls_1h").result_rows == [(2,)]
    finally:
        other.command("DROP DATABASE retention_test SYNC")
        other.close()


# ---------------------------------------------------------------- time parsing


def test_times_and_durations():
    now = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)
    assert parse_time("1h", now=now) == now - timedelta(hours=1)
    assert parse_time("7d", now=now) == now - timedelta(days=7)
    assert parse_time("now", now=now) == now
    assert parse_time("2026-11-01", now=now) == datetime(2026, 11, 1, tzinfo=timezone.utc)
    assert parse_time("2026-11-01T09:30:00+02:00", now=now) == datetime(
        2026, 11, 1, 7, 30, tzinfo=timezone.utc
    )
    assert parse_time("2026-11-01T09:30Z", now=now) == datetime(2026, 11, 1, 9, 30, tzinfo=timezone.utc)
    assert parse_duration("250ms") == timedelta(milliseconds=250)
    assert parse_duration("2w") == timedelta(weeks=2)
    for bad in ("yesterday", "1y", "", "-1h", "12:00"):
        with pytest.raises(ValueError, match="expected"):
            parse_time(bad, now=now)


def test_newest_calls_are_found_through_widening_windows(store):
    client, _, _ = store
    path = client.uri.removeprefix("chdb://")
    spread = connect(f"chdb://{path}?database=spread_calls", create_database=True)
    try:
        migrate(spread)
        now = datetime.now(timezone.utc)
        ages = {"a": timedelta(minutes=30), "b": timedelta(hours=3), "c": timedelta(days=10)}
        spread.insert(
            "otel_traces",
            [
                [now - age, name * 32, name * 16, {"gen_ai.operation.name": "chat"}]
                for name, age in ages.items()
            ],
            column_names=["Timestamp", "TraceId", "SpanId", "SpanAttributes"],
        )

        def newest(limit: int, **fields) -> list[str]:
            return [c.span_id[0] for c in queries.search_calls(spread, CallFilter(**fields), limit=limit)]

        assert newest(1) == ["a"]
        assert newest(2) == ["a", "b"]
        assert newest(5) == ["a", "b", "c"]
        assert newest(1, until=now - timedelta(hours=2)) == ["b"]
        assert newest(5, since=now - timedelta(hours=5)) == ["a", "b"]
        assert newest(5, since=now - timedelta(days=30), until=now - timedelta(days=1)) == ["c"]
        # Exports run one sorted chunk at a time (whole hours), oldest first, whatever the chunk size.
        pieces = chunks(spread, CallFilter(), rows=1)
        assert [count for _, count in pieces] == [1, 1, 1]
        assert pieces[0][0].since < pieces[0][0].until <= pieces[1][0].since
        out = io.BytesIO()
        result = export_calls(spread, CallFilter(), "jsonl", out, pieces=pieces)
        assert [json.loads(line)["SpanId"][0] for line in out.getvalue().splitlines()] == ["c", "b", "a"]
        assert result.rows == 3 and result.bytes == len(out.getvalue())
        assert [count for _, count in chunks(spread, CallFilter(since=now - timedelta(hours=5)))] == [2]
    finally:
        spread.command("DROP DATABASE spread_calls SYNC")
        spread.close()
