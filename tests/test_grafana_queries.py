"""Every panel, variable and alert query, expanded as Grafana and the ClickHouse plugin expand it, run on chDB over
the migrations and calls recorded by llmtap's instrumentation (see grafana_calls.py): each returns rows of the
shape its panel needs, the numbers agree with the stored calls, and each alert rule fires for exactly the
series the data was built to trip."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import pytest

pytest.importorskip("grafana_foundation_sdk")
pytest.importorskip("chdb")
pytest.importorskip("openai")

import grafana_calls as calls
from llmtap.clickhouse.connection import connect
from llmtap.clickhouse.migrations import discover, migrate
from llmtap.clickhouse.prices import load_bundled_prices
from llmtap.grafana import aggregate, alerts, build, links, sql, validate
from llmtap.grafana.interpolate import ALL, QueryContext, Variable, expand_alert_sql, expand_dashboard_sql

DOCUMENTS = {doc["uid"]: doc for doc in (build.dashboard_json(make()) for make in build.DASHBOARDS)}
QUERIES = [(uid, query) for uid, doc in DOCUMENTS.items() for query in validate.dashboard_queries(doc)]
ALERTING = alerts.provisioning()

# A selection that matches stored calls in every variable, so each filter narrows without emptying a panel.
FILTERED: dict[str, str | list[str]] = {
    "project": ["shop"],
    "service": ["checkout"],
    "model": ["gpt-4o-mini"],
    "user": ["user-1"],
    "tag": ["beta"],
    "session": "session-1",
    "status": ["0"],
    "search": "order",
}


@dataclass(frozen=True)
class Store:
    client: Any
    now: datetime
    redacted_trace: str
    redacted_span: str

    def context(self) -> QueryContext:
        return QueryContext(self.now - timedelta(hours=6), self.now, interval_seconds=60)

    def scalar(self, sql: str) -> Any:
        return self.client.query(sql).result_rows[0][0]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Any:
    client = connect("chdb://" + str(tmp_path_factory.mktemp("grafana") / "chdb"), create_database=True)
    try:
        migrate(client)
        load_bundled_prices(client)
        now = calls.now_utc()
        calls.load(client, calls.instrumented_requests(now) + calls.built_requests(now))
        trace_id, span_id = client.query(
            "SELECT TraceId, SpanId FROM llm_calls WHERE RedactionCount > 0"
        ).result_rows[0]
        yield Store(client, now, trace_id, span_id)
    finally:
        client.close()


def _selection(uid: str, name: str, store: Store) -> list[Variable]:
    """The variables of dashboard `uid` for selection `name`: "all", "filtered" (every variable), "one user" or
    "one tag" (the rest All)."""
    chosen = []
    for variable in DOCUMENTS[uid]["templating"]["list"]:
        var = variable["name"]
        if variable["type"] == "datasource":
            continue
        if var == "trace_id":
            chosen.append(Variable(var, store.redacted_trace))
        elif var == "span_id":
            chosen.append(Variable(var, store.redacted_span if name == "filtered" else ""))
        elif name == "filtered" or name == f"one {var}":
            chosen.append(Variable(var, FILTERED[var]))
        else:
            chosen.append(Variable(var, ALL if variable.get("includeAll") else ""))
    return chosen


def _one_chosen(uid: str, store: Store, variable: str, value: str) -> list[Variable]:
    """The variables of dashboard `uid` with `value` chosen for `variable` and the rest All."""
    return [
        Variable(chosen.name, [value]) if chosen.name == variable else chosen
        for chosen in _selection(uid, "all", store)
    ]


def _run(store: Store, uid: str, sql: str, selection: str) -> tuple[list[tuple[str, str]], list[tuple]]:
    expanded = expand_dashboard_sql(sql, _selection(uid, selection, store), store.context())
    return validate.describe(store.client, expanded), store.client.query(expanded).result_rows


def _panel(uid: str, title: str) -> dict:
    (panel,) = [p for p in DOCUMENTS[uid]["panels"] if p.get("title") == title]
    return panel


@pytest.mark.parametrize("selection", ["all", "filtered", "one user"])
@pytest.mark.parametrize(("uid", "query"), QUERIES, ids=[query.source for _, query in QUERIES])
def test_query_returns_rows_of_its_panels_shape(
    store: Store, uid: str, query: validate.Query, selection: str
) -> None:
    columns, rows = _run(store, uid, query.sql, selection)
    assert validate.shape_problems(query.shape, columns, query.units) == []
    assert rows, f"{query.source} [{selection}] returned nothing although calls match"
    numeric = [i for i, (_, column_type) in enumerate(columns) if validate.is_numeric(column_type)]
    for row in rows:
        for index in numeric:
            value = row[index]
            assert value is None or math.isfinite(value), f"{columns[index][0]} = {value}"
    if query.shape in ("numbers", "time_series"):
        assert any(row[i] is not None for row in rows for i in numeric)
    if query.shape == "time_series":
        times = [row[0] for row in rows]
        assert times == sorted(times), "time series rows must come in time order"


def _value(store: Store, uid: str, title: str, selection: str) -> Any:
    (target,) = _panel(uid, title)["targets"]
    _, rows = _run(store, uid, target["rawSql"], selection)
    return rows


def test_totals_agree_with_the_stored_calls(store: Store) -> None:
    window = "Timestamp >= now() - INTERVAL 6 HOUR - INTERVAL 1 MINUTE"  # the dataset spans 350 minutes
    stored = store.scalar(f"SELECT count() FROM llm_calls WHERE {window}")
    assert _value(store, "llmtap-overview", "Calls", "all") == [(stored,)]
    filtered = store.scalar(
        f"SELECT count() FROM llm_calls WHERE {window} AND Project = 'shop' AND ServiceName = 'checkout' "
        "AND Model = 'gpt-4o-mini' AND UserId = 'user-1' AND has(Tags, 'beta')"
    )
    assert 0 < _value(store, "llmtap-overview", "Calls", "filtered")[0][0] == filtered < stored
    # Rates: calls per second per 60 s bucket, summed back over the buckets, are the calls again.
    per_second = _value(store, "llmtap-overview", "Calls per second by model", "all")
    assert round(sum(rate for _, _, rate in per_second) * 60) == stored
    failures = _value(store, "llmtap-failures", "Failed calls", "all")[0][0]
    assert failures == store.scalar(f"SELECT countIf(IsError = 1) FROM llm_calls WHERE {window}") == 5
    assert len(_value(store, "llmtap-failures", "Latest failed calls", "all")) == failures


def test_hourly_buckets_read_the_hourly_rollup_and_agree_with_the_minutes(store: Store) -> None:
    """With hour buckets the rollup branch reads whole hours from llm_calls_1h and the ragged edges of the range
    from llm_calls_1m: per hour and model, the calls are the minute buckets' calls summed into their hours."""
    (target,) = _panel("llmtap-overview", "Calls per second by model")["targets"]
    variables = _selection("llmtap-overview", "all", store)
    hourly = QueryContext(store.now - timedelta(hours=6), store.now, interval_seconds=3600)
    by_hour: dict[tuple, float] = {}
    for time, model, per_second in store.client.query(
        expand_dashboard_sql(target["rawSql"], variables, hourly)
    ).result_rows:
        by_hour[(time, model)] = per_second * 3600
    by_minute: dict[tuple, float] = {}
    for time, model, per_second in _run(store, "llmtap-overview", target["rawSql"], "all")[1]:
        key = (time.replace(minute=0), model)
        by_minute[key] = by_minute.get(key, 0) + per_second * 60
    assert by_hour.keys() == by_minute.keys() and len({hour for hour, _ in by_hour}) >= 6
    assert all(round(by_hour[key]) == round(by_minute[key]) for key in by_hour)
    (p95,) = _panel("llmtap-overview", "p95 latency")["targets"]
    expanded = expand_dashboard_sql(p95["rawSql"], variables, hourly)
    assert "llm_calls_1h" in expanded and store.client.query(expanded).result_rows[0][0] > 0


def test_rates_are_per_second_of_the_bucket_the_query_uses(store: Store) -> None:
    """Over more than a day a series' buckets are whole hours though Grafana asks for 10 minutes: its rates divide
    by the hour, so per-second rates times 3600 add up to the calls again."""
    (target,) = _panel("llmtap-overview", "Calls per second by model")["targets"]
    three_days = QueryContext(
        store.now - timedelta(days=3), store.now + timedelta(minutes=1), interval_seconds=600
    )
    rows = store.client.query(
        expand_dashboard_sql(target["rawSql"], _selection("llmtap-overview", "all", store), three_days)
    ).result_rows
    assert all(time.minute == 0 for time, _, _ in rows), "hourly buckets"
    assert round(sum(rate for _, _, rate in rows) * 3600) == store.scalar("SELECT count() FROM llm_calls")


def test_totals_over_days_read_the_daily_rollup_and_count_every_call(store: Store) -> None:
    """A range of whole days around the stored calls: totals come from llm_calls_1d (the edges hold nothing)."""
    variables = _selection("llmtap-models", "all", store)
    days = QueryContext(store.now - timedelta(days=3), store.now + timedelta(days=2), interval_seconds=3600)
    (models,) = _panel("llmtap-models", "Models")["targets"]
    expanded = expand_dashboard_sql(models["rawSql"], variables, days)
    assert "FROM llm_calls_1d\n" in expanded
    rows = store.client.query(expanded).result_rows
    per_model = dict(store.client.query("SELECT Model, count() FROM llm_calls GROUP BY Model").result_rows)
    assert {row[0]: row[2] for row in rows} == per_model
    (p95,) = _panel("llmtap-overview", "p95 latency")["targets"]
    p95_value = store.client.query(expand_dashboard_sql(p95["rawSql"], variables, days)).result_rows[0][0]
    assert p95_value == pytest.approx(
        store.scalar("SELECT quantile(0.95)(DurationMs) FROM llm_calls"), rel=0.25
    )


@contextmanager
def _scenario_days_back(store: Store, database: str, *days: int) -> Iterator[Store]:
    """The scenario's calls as if run `days` back (each), in a database of their own; its `now` is the first."""
    path = store.client.uri.removeprefix("chdb://")
    client = connect(f"chdb://{path}?database={database}", create_database=True)
    try:
        migrate(client)
        load_bundled_prices(client)
        moments = [store.now - timedelta(days=back) for back in days]
        calls.load(client, [request for moment in moments for request in calls.built_requests(moment)])
        yield Store(client, moments[0], "", "")
    finally:
        client.command(f"DROP DATABASE {database} SYNC")
        client.close()


@pytest.fixture(scope="module")
def days_ago(store: Store) -> Iterator[Store]:
    """The same calls three days back: whole UTC days of a longer range hold them."""
    with _scenario_days_back(store, "three_days_ago", 3) as earlier:
        yield earlier


def test_series_over_days_read_the_daily_rollup_and_count_every_call(days_ago: Store) -> None:
    """Day buckets: calls per UTC day and model are those stored (from llm_calls_1d where the server's days are
    UTC days); percentile series over a week or more have a point per day, between the day's quartiles."""
    client, variables = days_ago.client, _selection("llmtap-overview", "all", days_ago)
    start = days_ago.now - timedelta(days=10, seconds=30)  # a ragged start, days before the calls
    daily = QueryContext(start, days_ago.now + timedelta(days=2), interval_seconds=86400)
    (target,) = _panel("llmtap-overview", "Calls per second by model")["targets"]
    got = {
        (time, model): round(per_second * 86400)
        for time, model, per_second in client.query(
            expand_dashboard_sql(target["rawSql"], variables, daily)
        ).result_rows
    }
    expected = client.query(
        "SELECT toStartOfDay(Timestamp, 'UTC'), Model, count() FROM llm_calls GROUP BY ALL"
    ).result_rows
    assert got == {(time.replace(tzinfo=None), model): count for time, model, count in expected}
    hourly = QueryContext(start, days_ago.now + timedelta(days=2), interval_seconds=3600)
    (percentiles,) = _panel("llmtap-overview", "Latency percentiles")["targets"]
    rows = client.query(expand_dashboard_sql(percentiles["rawSql"], variables, hourly)).result_rows
    quartiles = {
        day.replace(tzinfo=None): (low, high)
        for day, low, high in client.query(
            "SELECT toStartOfDay(Timestamp, 'UTC'), quantileExact(0.25)(DurationMs), "
            "quantileExact(0.75)(DurationMs) FROM llm_calls GROUP BY 1"
        ).result_rows
    }
    assert [row[0] for row in rows] == sorted(quartiles), "one point per day, though Grafana asked for hours"
    for time, p50, p95, p99 in rows:
        low, high = quartiles[time]
        assert low <= p50 <= high and p50 <= p95 <= p99, "a day's median lies between its quartiles"
    six_days = QueryContext(days_ago.now - timedelta(days=6), days_ago.now, interval_seconds=600)
    rows = client.query(expand_dashboard_sql(percentiles["rawSql"], variables, six_days)).result_rows
    assert len(rows) >= 5 and all(row[0].minute == 0 for row in rows), "under a week: whole hours"


@pytest.fixture(scope="module")
def two_days(store: Store) -> Iterator[Store]:
    """The scenario's calls twice, two and four days back."""
    with _scenario_days_back(store, "two_days", 2, 4) as earlier:
        yield earlier


@pytest.mark.parametrize(
    ("variable", "value", "condition"),
    [("user", "user-3", "UserId = 'user-3'"), ("tag", "beta", "has(Tags, 'beta')")],
)
def test_one_user_or_tag_over_days_takes_whole_days_from_the_by_value_rollup(
    two_days: Store, variable: str, value: str, condition: str
) -> None:
    """One user or tag chosen over ten days, ending among the later calls: the whole days come from
    llm_calls_by_value_1d, the ragged ends from the calls, and per model they add up to what llm_calls holds."""
    client = two_days.client
    start, end = two_days.now - timedelta(days=10, seconds=30), two_days.now - timedelta(minutes=100)
    variables = _one_chosen("llmtap-models", two_days, variable, value)
    (models,) = _panel("llmtap-models", "Models")["targets"]
    expanded = expand_dashboard_sql(
        models["rawSql"], variables, QueryContext(start, end, interval_seconds=3600)
    )
    rows = {row[0]: row[2:] for row in client.query(expanded).result_rows}
    expected = client.query(
        "SELECT Model, count(), countIf(IsError = 1) / count(), min(DurationMs), avg(DurationMs), "
        "quantileExact(0.25)(DurationMs), max(DurationMs), sum(InputTokens), sum(OutputTokens), sum(Cost) "
        f"FROM llm_calls_costed WHERE Timestamp >= toDateTime({int(start.timestamp())}) "
        f"AND Timestamp <= toDateTime({int(end.timestamp())}) AND {condition} GROUP BY Model"
    ).result_rows
    assert set(rows) == {row[0] for row in expected}
    for model, count, error_rate, low, mean, quartile, high, tokens_in, tokens_out, cost in expected:
        got = rows[model]
        assert (got[0], got[1], got[2], got[6], got[7], got[8]) == (
            count,
            error_rate,
            low,
            high,
            tokens_in,
            tokens_out,
        )
        assert got[3] == pytest.approx(mean) and got[9] == pytest.approx(cost)
        assert quartile <= got[5] <= got[6] * (1 + 1e-6), "p95 between the lower quartile and the maximum"
    # Whole days came from the rollup: without its rows only the calls of the ragged end's day are left.
    rollup = "FROM llm_calls_by_value_1d\n"
    assert expanded.count(rollup) == 1
    without = expanded.replace(rollup, "FROM (SELECT * FROM llm_calls_by_value_1d WHERE 0)\n")
    left = sum(row[2] for row in client.query(without).result_rows)
    in_last_day = two_days.scalar(
        f"SELECT count() FROM llm_calls WHERE Timestamp >= toStartOfDay(toDateTime({int(end.timestamp())})) "
        f"AND Timestamp <= toDateTime({int(end.timestamp())}) AND {condition}"
    )
    assert 0 < left == in_last_day < sum(row[1] for row in expected)


def test_one_user_over_a_week_charts_daily_percentiles_from_the_by_value_rollup(two_days: Store) -> None:
    """Over a week or more a percentile chart has a point per day: with one user chosen, a UTC server reads the
    whole days from llm_calls_by_value_1d (without its rows only the ragged end's day is left) and each point lies
    within its day's calls."""
    client = two_days.client
    start, end = two_days.now - timedelta(days=10, seconds=30), two_days.now - timedelta(minutes=100)
    variables = _one_chosen("llmtap-overview", two_days, "user", "user-3")
    (percentiles,) = _panel("llmtap-overview", "Latency percentiles")["targets"]
    expanded = expand_dashboard_sql(
        percentiles["rawSql"], variables, QueryContext(start, end, interval_seconds=3600)
    )
    rows = client.query(expanded).result_rows
    days = {
        day.replace(tzinfo=None): (low, high)
        for day, low, high in client.query(
            "SELECT toStartOfDay(Timestamp, 'UTC'), min(DurationMs), max(DurationMs) FROM llm_calls "
            f"WHERE Timestamp >= toDateTime({int(start.timestamp())}) AND Timestamp <= toDateTime({int(end.timestamp())}) "
            "AND UserId = 'user-3' GROUP BY 1"
        ).result_rows
    }
    assert [row[0] for row in rows] == sorted(days) and len(days) >= 2
    for time, p50, p95, p99 in rows:
        low, high = days[time]
        assert low * (1 - 1e-6) <= p50 <= p95 <= p99 <= high * (1 + 1e-6)
    if two_days.scalar("SELECT timeZoneOffset(now())") == 0:
        rollup = "FROM llm_calls_by_value_1d\n"
        assert expanded.count(rollup) == 1
        without = expanded.replace(rollup, "FROM (SELECT * FROM llm_calls_by_value_1d WHERE 0)\n")
        last_day = max(days)
        assert [row[0] for row in client.query(without).result_rows] == [last_day]


@pytest.mark.parametrize(
    ("title", "measure", "answers"),
    [
        ("Calls per second by model", "count() / 3600", False),
        ("Cost per hour by model", "sum(Cost)", False),
        ("Uncertain answers by model", f"avg({sql.is_uncertain()})", True),
    ],
)
def test_one_tag_charts_hours_from_the_hourly_by_value_rollup(
    two_days: Store, title: str, measure: str, answers: bool
) -> None:
    """One tag chosen, hourly buckets over days that start and end mid-hour: the whole hours come from
    llm_calls_by_value_1h (without its rows only the calls of the ragged first and last hour are left), and per
    hour and model the calls, the cost and the uncertain answers' share are what llm_calls holds."""
    client = two_days.client
    start, end = two_days.now - timedelta(days=2, hours=2, seconds=30), two_days.now - timedelta(minutes=100)
    variables = _one_chosen("llmtap-overview", two_days, "tag", "beta")
    (target,) = _panel("llmtap-overview", title)["targets"]
    expanded = expand_dashboard_sql(
        target["rawSql"], variables, QueryContext(start, end, interval_seconds=3600)
    )
    got = {(time, model): value for time, model, value in client.query(expanded).result_rows}
    window = (
        f"Timestamp >= toDateTime({int(start.timestamp())}) AND Timestamp <= toDateTime({int(end.timestamp())}) "
        "AND has(Tags, 'beta')" + (f" AND {sql.ANSWER_OPERATIONS}" if answers else "")
    )
    hour = "toStartOfInterval(toDateTime(Timestamp), INTERVAL 3600 second)"
    expected = client.query(
        f"SELECT {hour} AS time, Model, {measure} FROM llm_calls_costed WHERE {window} GROUP BY time, Model"
    ).result_rows
    assert len(expected) >= 4 and got.keys() == {(time, model) for time, model, _ in expected}
    for time, model, value in expected:
        assert got[(time, model)] == pytest.approx(value), (time, model)
    if answers:
        assert any(value for _, _, value in expected), "the tag's answers include uncertain ones"
    if two_days.scalar("SELECT timeZoneOffset(now()) % 3600") == 0:
        rollup = "FROM llm_calls_by_value_1h\n"
        without = expanded.replace(rollup, "FROM (SELECT * FROM llm_calls_by_value_1h WHERE 0)\n")
        edges = (
            f"toStartOfHour(Timestamp) = toStartOfHour(toDateTime({int(start.timestamp())})) "
            f"OR toStartOfHour(Timestamp) = toStartOfHour(toDateTime({int(end.timestamp())}))"
        )
        left = {(time, model) for time, model, _ in client.query(without).result_rows}
        at_edges = client.query(
            f"SELECT DISTINCT {hour}, Model FROM llm_calls WHERE {window} AND ({edges})"
        ).result_rows
        assert rollup in expanded and left == set(at_edges) and len(left) < len(expected)


@pytest.mark.parametrize(
    ("variable", "value", "condition", "back"),
    [
        ("user", "user-3", "UserId = 'user-3'", timedelta(days=3)),  # hourly buckets
        (
            "tag",
            "beta",
            "has(Tags, 'beta')",
            timedelta(hours=5),
        ),  # minute buckets: the tag's hours do not serve
    ],
)
def test_one_values_uncertain_answers_come_from_its_answers_table(
    two_days: Store, variable: str, value: str, condition: str, back: timedelta
) -> None:
    """With one user or tag chosen the uncertain-answers chart reads llm_answers_by_value (each answer judged at
    insert; without its rows the chart is empty), and per bucket and model its share is what the responses
    say."""
    client = two_days.client
    start, end = two_days.now - back - timedelta(seconds=30), two_days.now - timedelta(minutes=100)
    interval = 3600 if back > timedelta(days=1) else 60
    variables = _one_chosen("llmtap-overview", two_days, variable, value)
    (target,) = _panel("llmtap-overview", "Uncertain answers by model")["targets"]
    expanded = expand_dashboard_sql(
        target["rawSql"], variables, QueryContext(start, end, interval_seconds=interval)
    )
    bucket = f"toStartOfInterval(toDateTime(Timestamp), INTERVAL {interval} second)"
    expected = client.query(
        f"SELECT {bucket} AS time, Model, avg({sql.is_uncertain()}) FROM llm_calls "
        f"WHERE Timestamp >= toDateTime({int(start.timestamp())}) AND Timestamp <= toDateTime({int(end.timestamp())}) "
        f"AND {condition} AND {sql.ANSWER_OPERATIONS} GROUP BY time, Model ORDER BY time, Model"
    ).result_rows
    got = client.query(expanded).result_rows
    assert len(expected) >= 4 and any(share for _, _, share in expected)
    assert [row[:2] for row in got] == [row[:2] for row in expected]
    assert [row[2] for row in got] == pytest.approx([row[2] for row in expected])
    table = f"FROM {aggregate.VALUE_ANSWERS}\n"
    assert expanded.count(table) == 1
    without = expanded.replace(table, f"FROM (SELECT * FROM {aggregate.VALUE_ANSWERS} WHERE 0)\n")
    assert client.query(without).result_rows == []


def test_totals_over_a_ragged_range_count_exactly_the_minutes_inside_it(store: Store) -> None:
    """A range starting mid-minute among the stored calls and ending days later: minutes at the ragged start, whole
    hours, then whole days are summed, and each model's count is that of the calls whose minute starts in range."""
    middle = store.scalar("SELECT toDateTime(quantile(0.5)(Timestamp)) FROM llm_calls").replace(
        tzinfo=timezone.utc
    )
    start = middle + timedelta(seconds=30)
    ragged = QueryContext(start, store.now + timedelta(days=2), interval_seconds=3600)
    (models,) = _panel("llmtap-models", "Models")["targets"]
    expanded = expand_dashboard_sql(models["rawSql"], _selection("llmtap-models", "all", store), ragged)
    assert "llm_calls_1m" in expanded and "llm_calls_1h" in expanded and "llm_calls_1d" in expanded
    got = {row[0]: row[2] for row in store.client.query(expanded).result_rows}
    expected = dict(
        store.client.query(
            "SELECT Model, count() FROM llm_calls WHERE toStartOfMinute(Timestamp) >= toDateTime({s:UInt32}) "
            "GROUP BY Model",
            parameters={"s": int(start.timestamp())},
        ).result_rows
    )
    assert got == expected and 0 < sum(expected.values()) < store.scalar("SELECT count() FROM llm_calls")


@pytest.mark.parametrize("limit", [1, 7, 60, 100_000])
@pytest.mark.parametrize("selection", ["all", "filtered", "one user", "one tag"])
def test_newest_bound_keeps_every_one_of_the_newest_calls(store: Store, limit: int, selection: str) -> None:
    """The rollup-derived lower bound never cuts off one of the newest `limit` matching calls."""
    latest = f"SELECT SpanId FROM llm_calls\n{{}}\nORDER BY Timestamp DESC, SpanId LIMIT {limit}"
    failed = "IsError = 1"
    for extra in ((), (failed,)):
        bounded = latest.format(sql.where(*extra, aggregate.newest(limit, *extra)))
        unbounded = latest.format(sql.where(*extra))
        assert (
            _run(store, "llmtap-overview", bounded, selection)[1]
            == _run(store, "llmtap-overview", unbounded, selection)[1]
        )
    every = store.scalar("SELECT count() FROM llm_calls")
    cut = expand_dashboard_sql(
        f"SELECT count() FROM llm_calls WHERE {aggregate.newest(7)}",
        _selection("llmtap-overview", "all", store),
        store.context(),
    )
    assert 7 <= store.scalar(cut) < every  # the bound does narrow the read
    # With a user and a tag chosen the rollups cannot answer, and the bound is the newest matching call itself.
    filtered = _selection("llmtap-overview", "filtered", store)
    matching, newest = (
        store.scalar(
            expand_dashboard_sql(
                f"SELECT count() FROM llm_calls {sql.where(*bound)}", filtered, store.context()
            )
        )
        for bound in ((), (aggregate.newest(1),))
    )
    assert newest == 1 < matching


def test_explorer_rows_match_every_filter(store: Store) -> None:
    rows = _value(store, "llmtap-explorer", "Calls", "filtered")
    assert rows
    for _time, service, model, status, *_, user, session, tags, prompt, response, trace_id, span_id in rows:
        assert (service, model, status, user, session) == (
            "checkout",
            "gpt-4o-mini",
            "ok",
            "user-1",
            "session-1",
        )
        assert "beta" in tags and "order" in prompt.lower() and response
        assert len(trace_id) == 32 and len(span_id) == 16


@pytest.mark.parametrize("status", ["0", "1"])
def test_explorer_totals_by_status_come_from_the_rollups(store: Store, status: str) -> None:
    """Status is a rollup dimension: with only it chosen, the explorer's totals read the rollups and still count
    exactly the calls of that status."""
    variables = [
        Variable(v["name"], [status] if v["name"] == "status" else ALL if v.get("includeAll") else "")
        for v in DOCUMENTS["llmtap-explorer"]["templating"]["list"]
        if v["type"] != "datasource"
    ]
    (target,) = _panel("llmtap-explorer", "Matching calls")["targets"]
    context = store.context()
    expanded = expand_dashboard_sql(target["rawSql"], variables, context)
    # The rollups count whole minutes: the calls whose minute starts inside the range, as $__timeFilter(Minute).
    window = " AND ".join(
        f"toStartOfMinute(Timestamp) {op} toDateTime({int(moment.timestamp())})"
        for op, moment in ((">=", context.time_from), ("<=", context.time_to))
    )
    expected = store.scalar(f"SELECT count() FROM llm_calls WHERE {window} AND IsError = {status}")
    assert store.client.query(expanded).result_rows == [(expected,)] and expected > 0


@pytest.mark.parametrize("typed", ["x\\' OR 1=1 --", "'", "\\", 'It\\\'s "quoted" %27'])
def test_typed_text_is_searched_for_literally(store: Store, typed: str) -> None:
    (target,) = _panel("llmtap-explorer", "Calls")["targets"]
    variables = [
        Variable(v["name"], typed if v["name"] in ("search", "session") else ALL)
        for v in DOCUMENTS["llmtap-explorer"]["templating"]["list"]
        if v["type"] != "datasource"
    ]
    sql = expand_dashboard_sql(target["rawSql"], variables, store.context())
    assert store.client.query(sql).result_rows == []  # runs, and matches no call instead of every call


@pytest.mark.parametrize(
    ("content", "uncertain"),
    [
        ("I’m not sure which plan you have.", 1),  # json.dumps escapes the curly apostrophe as \u2019
        ("Honestly, I DON'T KNOW.", 1),
        ("The refund takes three days.", 0),
    ],
)
def test_uncertain_answers_are_found_in_the_response_text(store: Store, content: str, uncertain: int) -> None:
    messages = json.dumps([{"role": "assistant", "parts": [{"type": "text", "content": content}]}])
    literal = "'" + messages.replace("\\", "\\\\").replace("'", "\\'") + "'"
    assert store.scalar(f"SELECT {sql.is_uncertain(literal)}") == uncertain


def _parts(content: str, **extra: str) -> str:
    return json.dumps([{"role": "assistant", "parts": [{"type": "text", "content": content, **extra}]}])


# (raw OutputMessages, uncertain): JSON as other writers spell it, and a phrase outside the response text.
SPELLINGS = [
    (_parts("I’m not sure which plan you have."), 1),  # json.dumps: \u2019 for the curly apostrophe
    (_parts("I'm not sure.").replace("'", "\\u0027"), 1),  # Gson: \u0027 for the straight one
    (_parts("Honestly, I DON'T KNOW."), 1),
    (_parts("¿¿ Quizá mañana."), 1),  # a phrase with no ASCII letters (added below), written as \u00bf
    (json.dumps([{"role": "assistant", "content": "It is unclear."}]), 1),  # a bare content, no parts
    ("I do not know, it is plain text.", 1),  # not JSON: searched as it is
    (_parts("The refund takes three days.", note="i'm not sure"), 0),  # the phrase outside the text
    (_parts("The refund takes three days."), 0),
]


def test_each_answer_is_judged_at_insert_as_the_dashboards_judge_it(store: Store) -> None:
    """Migration 0016 judges each answer once at insert with the dashboards' expression (`sql.is_uncertain`), so
    the rollups and the charts read from llm_calls agree, however the response's writer escaped its JSON."""
    judging = next(m.path for m in discover() if m.name == "llm_calls_judged").read_text()
    assert sql.is_uncertain() in judging, "the view judges with the dashboards' expression"
    other = connect(f"{store.client.uri}?database=spellings", create_database=True)
    try:
        migrate(other)
        other.command("INSERT INTO llm_uncertain_phrases VALUES ('¿¿')")
        other.insert(
            "llm_calls",
            [[store.now, f"user-{i}", "chat", raw] for i, (raw, _) in enumerate(SPELLINGS)],
            column_names=["Timestamp", "UserId", "Operation", "OutputMessages"],
        )
        judged = other.query(
            "SELECT Value, Uncertain FROM llm_answers_by_value WHERE Dimension = 'user' ORDER BY Value"
        ).result_rows
        at_query_time = other.query(
            f"SELECT UserId, {sql.is_uncertain()} FROM llm_calls ORDER BY UserId"
        ).result_rows
        expected = [(f"user-{i}", uncertain) for i, (_, uncertain) in enumerate(SPELLINGS)]
        assert judged == at_query_time == expected
        assert other.query("SELECT sum(Answers), sum(Uncertain) FROM llm_answers_1m").result_rows == [
            (len(SPELLINGS), sum(u for _, u in SPELLINGS))
        ]
    finally:
        other.command("DROP DATABASE spellings SYNC")
        other.close()


def test_answer_rollups_count_the_uncertain_answers_the_dashboards_find(store: Store) -> None:
    per_call = store.client.query(
        f"SELECT count(), countIf({sql.is_uncertain()}) FROM llm_calls WHERE {sql.ANSWER_OPERATIONS}"
    ).result_rows[0]
    assert per_call[1] > 0
    for rollup in (aggregate.ANSWER_ROLLUPS.minute, aggregate.ANSWER_ROLLUPS.hour):
        assert (
            store.client.query(f"SELECT sum(Answers), sum(Uncertain) FROM {rollup}").result_rows[0]
            == per_call
        )
    # Per user and tag (llm_answers_by_value, a row per answer and value), and per tag and hour.
    answers = f"count(), countIf({sql.is_uncertain()}) FROM llm_calls"
    per_value = store.client.query(
        f"SELECT * FROM (SELECT 'user', UserId, {answers} WHERE {sql.ANSWER_OPERATIONS} GROUP BY UserId "
        f"UNION ALL SELECT 'tag', Tag, {answers} ARRAY JOIN arrayDistinct(Tags) AS Tag "
        f"WHERE {sql.ANSWER_OPERATIONS} GROUP BY Tag) ORDER BY 1, 2"
    ).result_rows
    assert (
        per_value
        == store.client.query(
            f"SELECT Dimension, Value, count(), sum(Uncertain) FROM {aggregate.VALUE_ANSWERS} "
            "GROUP BY Dimension, Value ORDER BY Dimension, Value"
        ).result_rows
    )
    assert ("tag", "beta") in {row[:2] for row in per_value if row[3]}
    assert [row[3] for row in per_value if row[0] == "tag"] == [
        row[1]
        for row in store.client.query(
            "SELECT Value, sum(Uncertain) FROM llm_calls_by_value_1h WHERE Dimension = 'tag' GROUP BY Value "
            "ORDER BY Value"
        ).result_rows
    ]


def test_variables_list_the_values_in_range(store: Store) -> None:
    def values(name: str, selection: str) -> set[str]:
        variable = next(v for v in DOCUMENTS["llmtap-overview"]["templating"]["list"] if v["name"] == name)
        return {row[0] for row in _run(store, "llmtap-overview", variable["query"], selection)[1]}

    assert values("project", "all") == {"shop", "helpdesk"}
    assert values("service", "all") == {"checkout", "search", "support-bot"}
    assert values("service", "filtered") == {"checkout", "search"}  # narrowed by the project (shop)
    assert values("tag", "all") == {"beta", "web", "chat"}
    assert values("model", "filtered") == {"gpt-4o-mini", "gpt-4o", "text-embedding-3-small"}


def test_call_dashboard_shows_the_whole_call(store: Store) -> None:
    summary = dict((field, value) for _, field, value in _value(store, "llmtap-call", "Call", "filtered"))
    assert summary["Service"] == "checkout" and summary["Redactions"] == "1" and summary["Status"] == "ok"
    prompt = _value(store, "llmtap-call", "Prompt", "filtered")
    text = " ".join(content for *_, content in prompt)
    assert "[REDACTED:EMAIL]" in text and "jane.doe@example.com" not in text
    assert [role for _, _, role, _ in prompt] == ["system", "user"]
    response = _value(store, "llmtap-call", "Response", "filtered")
    assert response and response[0][2] == "assistant" and response[0][3]
    attributes = {
        (kind, key): value for _, kind, key, value in _value(store, "llmtap-call", "Attributes", "filtered")
    }
    assert attributes[("attribute", "plan")] in ("pro", "free")
    spans = _value(store, "llmtap-call", "Trace", "filtered")
    assert len(spans) == 2  # the application's request span and the LLM span under it
    by_id = {span[1]: span for span in spans}
    llm = by_id[store.redacted_span]
    assert llm[2] in by_id and by_id[llm[2]][4].startswith("handle checkout")


def test_the_trace_link_opens_a_working_trace_query(store: Store) -> None:
    (link,) = [
        link
        for link in validate.column_overrides(_panel("llmtap-explorer", "Calls"), "links")["TraceId"]
        if link["url"].startswith("/explore?")
    ]
    panes = json.loads(unquote(parse_qs(urlparse(link["url"]).query)["panes"][0]))
    sql = panes["trace"]["queries"][0]["rawSql"].replace("${__data.fields.TraceId}", store.redacted_trace)
    columns = validate.describe(store.client, sql)
    assert validate.shape_problems("trace", columns) == []
    assert len(store.client.query(sql).result_rows) == 2
    assert links.trace_query_sql().count("${__data.fields.TraceId}") == 2


# --- alert rules -------------------------------------------------------------------------------------------------

EXPECTED_FIRING = {
    "llmtap-p95-latency": {("shop", "checkout", "gpt-4o")},
    "llmtap-error-rate": {("helpdesk", "support-bot")},
    "llmtap-redactions": {("shop", "checkout", "gpt-4o-mini")},
    "llmtap-traffic-stopped": {("shop", "search")},
    "llmtap-uncertain-answers": {("helpdesk", "support-bot", "gpt-4o-mini")},
}


def _firing(rule: alerts.Rule, columns: Sequence[tuple[str, str]], rows: Sequence[tuple]) -> set[tuple]:
    """The label sets whose value passes the rule's threshold (what Grafana's threshold expression does)."""
    (value_index,) = [i for i, (_, t) in enumerate(columns) if validate.is_numeric(t)]
    passes = (lambda v: v > rule.threshold) if rule.comparison == "gt" else (lambda v: v < rule.threshold)
    return {
        tuple(v for i, v in enumerate(row) if i != value_index) for row in rows if passes(row[value_index])
    }


@pytest.mark.parametrize("rule", alerts.RULES, ids=[rule.uid for rule in alerts.RULES])
def test_alert_fires_for_exactly_the_tripped_series(store: Store, rule: alerts.Rule) -> None:
    ctx = QueryContext(store.now - timedelta(seconds=rule.window_seconds), store.now, interval_seconds=1)
    sql = expand_alert_sql(rule.sql, ctx)
    columns = validate.describe(store.client, sql)
    assert validate.shape_problems("alert", columns) == []
    rows = store.client.query(sql).result_rows
    assert _firing(rule, columns, rows) == EXPECTED_FIRING[rule.uid]
    quiet = {tuple(v for v in row if isinstance(v, str)) for row in rows} - EXPECTED_FIRING[rule.uid]
    if rule.uid != "llmtap-redactions":  # that query returns only redacted series
        assert quiet, "the rule should also see healthy series and leave them alone"


def test_alert_queries_in_the_provisioning_file_are_the_rules(store: Store) -> None:
    assert [q.sql for q in validate.alert_queries(ALERTING)] == [rule.sql for rule in alerts.RULES]


# --- the build refuses broken SQL ----------------------------------------------------------------------------------


def test_validation_reports_broken_sql_and_wrong_shapes(store: Store) -> None:
    document = json.loads(json.dumps(DOCUMENTS["llmtap-overview"]))
    panels = {p["title"]: p for p in document["panels"]}
    panels["Calls"]["targets"][0]["rawSql"] = (
        "SELECT count() FROM llm_calls WHERE $__timeFilter(Timestamp) AND Nope = 1"
    )
    panels["Latency percentiles"]["targets"][0]["rawSql"] = (
        "SELECT Model, count() FROM llm_calls GROUP BY Model"
    )
    panels["Error rate"]["targets"][0]["rawSql"] = "SELECT $undefined_variable"
    problems = [str(p) for p in validate.check(store.client, [document], {"groups": []}, now=store.now)]
    assert any(p.startswith("llmtap-overview / Calls [all]") and "Nope" in p for p in problems)
    assert any(p.startswith("llmtap-overview / Latency percentiles") and "not a time" in p for p in problems)
    assert any(p.startswith("llmtap-overview / Error rate") and "undefined variable" in p for p in problems)

    models = json.loads(json.dumps(DOCUMENTS["llmtap-models"]))
    (table,) = [p for p in models["panels"] if p.get("title") == "Models"]
    table["fieldConfig"]["overrides"] = [
        o for o in table["fieldConfig"]["overrides"] if o["matcher"]["options"] != "Cost"
    ]
    alerting = json.loads(json.dumps(ALERTING))
    alerting["groups"][0]["rules"][0]["data"][0]["model"]["rawSql"] = (
        "SELECT ServiceName, Model, 1 AS a, 2 AS b FROM llm_calls"
    )
    problems = [str(p) for p in validate.check(store.client, [models], alerting, now=store.now)]
    assert problems == [
        "llmtap-models / Models [all]: numeric column(s) without a unit: Cost",
        "llmtap-models / Models [specific]: numeric column(s) without a unit: Cost",
        "llmtap-models / Models [one tag]: numeric column(s) without a unit: Cost",
        "alert llmtap-p95-latency [alert]: needs exactly one numeric column, has ['a', 'b']",
    ]
    assert validate.check(store.client, list(DOCUMENTS.values()), ALERTING, now=store.now) == []
