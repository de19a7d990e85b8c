"""Aggregate queries that read the rollups whenever they can answer, and the calls otherwise.

`llm_calls_1m`, `llm_calls_1h` and `llm_calls_1d` keep counts, token sums and latency digests per minute/hour/day,
project, service, model, provider, operation and error type (`llm_answers_1m`/`_1h` count answers and uncertain
answers), so a 30-day panel reads thousands of rows instead of millions of calls. They cannot filter by user, tag,
session or text. Each query therefore has two branches over the same columns, and the dashboard's variables pick
one inside ClickHouse: `$__conditionalAll(0, $user)` is `1=1` while the user filter is "All" and `0` once a user
is chosen. The branch whose switch is false reads no data (a constant-false filter selects no parts).

The rollup branch reads whole days of the range from the daily rollup, the other whole hours from the hourly one
and only the minutes at the range's ragged edges from the minute rollup, so it counts exactly the minutes a
minute-only query would. Over ranges longer than a day, series are bucketed by at least an hour
(`SERIES_BUCKET`). A latency percentile merges t-digests, about one centroid per call in an hourly digest, so its
series are bucketed by at least a day over a week or more (`DIGEST_BUCKET`): a point then merges daily digests
rather than hundreds of hourly ones. Rollup resolution is a minute: panels using these queries set a 1-minute
minimum interval.

Buckets start at whole multiples of their length since the epoch, in UTC; the rollups' hours and days are the
ClickHouse server's (`toStartOfHour`, `toStartOfDay`). So a series reads the hours only when its bucket is a whole
number of hours and the server's zone is a whole number of hours from UTC, and the days only when its bucket is a
whole number of days and the zone is UTC; otherwise it reads finer rows and stays right, only slower. The compose
stack's server runs in UTC; chDB (`llmtap serve`) takes the machine's zone. Totals do not depend on the zone.

With one user or one tag chosen (and no other filter the rollups cannot answer), by-value branches come between
the two (`VALUE_ROLLUPS`, tried in order, each switched on only where the ones before are off):
`llm_calls_by_value_1d` (migration 0011) keeps daily rows per user and per tag, for totals and for series of
whole-day buckets where the days fit (as above; latency-percentile charts over a week or more have them);
`llm_calls_by_value_1h` (0013) keeps hourly rows per tag, with uncertain answers, for series of whole hours. Each
reads the range's whole periods from its rollup and groups the calls of the ragged ends into rows of the same
columns. A user's hours are about as many rows as calls, so a series with one user chosen reads the calls, which
llm_calls keeps in user order too (its projection `by_user`, 0012). The uncertain-answers chart with one user or
tag chosen reads the value's answers, judged at insert (`llm_answers_by_value`, 0014), where the tag's hours do not
serve. The calls branch then reads nothing.

A costed query is one aggregate over the rows of all its branches, the calls grouped like a rollup's rows, priced
at once (`_costed_query`)."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from llmtap.clickhouse.queries import LATENCY_LEVELS, priced_days
from llmtap.grafana import sql


@dataclass(frozen=True)
class Rollups:
    """A minute, an hourly and optionally a daily rollup (or views over them) with the same columns but the time
    column's name (Minute, Hour, Day)."""

    minute: str
    hour: str
    day: str | None = None


CALL_ROLLUPS = Rollups("llm_calls_1m", "llm_calls_1h", "llm_calls_1d")
ANSWER_ROLLUPS = Rollups("llm_answers_1m", "llm_answers_1h")  # answers and uncertain answers (migration 0007)
# The variables the rollups' dimensions can answer (status is IsError, one of them).
ROLLUP_FILTERS = ("project", "service", "model", "status")
# The variables whose chosen values the by-value tables (migrations 0011, 0013, 0014) keep rows for -> the rows of
# a choice.
VALUE_FILTERS = {
    "user": "Dimension = 'user' AND Value IN (${user:singlequote})",
    "tag": "Dimension = 'tag' AND Value IN (${tag:singlequote})",
}
# The columns of the by-value rollups' rows that measures and groupings read, in the order both sides of their
# union list them.
_VALUE_ROW_DIMENSIONS = ("Project", "ServiceName", "Model", "Provider", "Operation", "IsError", "ErrorType")
# The daily by-value rollup's measure columns -> the same aggregate over the calls.
_VALUE_ROW_MEASURES = {
    "Calls": "count()",
    "Errors": "sum(IsError)",
    "InputTokens": "sum(InputTokens)",
    "OutputTokens": "sum(OutputTokens)",
    "DurationMsSum": "sum(DurationMs)",
    "DurationMsMin": "min(DurationMs)",
    "DurationMsMax": "max(DurationMs)",
    "DurationMsQuantiles": "quantileTDigestState(DurationMs)",
}

# The columns of the rows a costed query prices (every branch's, see `_costed_query`) -> the same over the calls.
_COSTED_ROWS = {**_VALUE_ROW_MEASURES, "CachedTokens": "sum(CachedTokens)"}


@dataclass(frozen=True)
class ValueRollup:
    """A by-value rollup: rows per chosen value of the variables `kept` and per `period` (Day or Hour, also the
    name of its time column), whose `measures` columns hold the aggregates of the calls given with them.
    `complete` when they are every column llm_calls_1h has, so every call measure reads them (otherwise only
    those `per_value`); `answers` when it counts uncertain answers too."""

    table: str
    period: str
    kept: tuple[str, ...]
    measures: dict[str, str]
    complete: bool = False
    answers: bool = False

    def serves(self, measures: Sequence[tuple[Measure, str]], rollups: Rollups | None) -> bool:
        if rollups is not None and not (self.answers and rollups == ANSWER_ROLLUPS):
            return False
        return self.complete or all(measure.per_value for measure, _ in measures)


# Tried in this order: a day's rows hold more calls than an hour's.
VALUE_ROLLUPS = (
    ValueRollup("llm_calls_by_value_1d", "Day", ("user", "tag"), _VALUE_ROW_MEASURES),
    ValueRollup(
        "llm_calls_by_value_1h", "Hour", ("tag",),
        {
            **_VALUE_ROW_MEASURES,
            "StreamCalls": "sum(IsStream)",
            "TimeToFirstChunkMsQuantiles":
                "quantileTDigestIfState(ifNull(TimeToFirstChunkMs, 0), isNotNull(TimeToFirstChunkMs))",
        },
        complete=True,
        answers=True,
    ),
)  # fmt: skip
# Each answer under its user and each of its tags, sorted by value (migration 0014).
VALUE_ANSWERS = "llm_answers_by_value"
# What a query of the answer rollups reads, as the hourly by-value rows' columns (the answers are the calls of the
# answer operations) -> the same over the calls.
_ANSWER_MEASURES = {
    "Answers": ("Calls", "count()"),
    "Uncertain": ("Uncertain", f"countIf({sql.is_uncertain()})"),
}
_START = "Start"  # the rollup rows' hour or minute, under one name in the union of both


def _rollup_applies(filters: Sequence[str]) -> str:
    """True while every selected filter is one the rollups answer."""
    return " AND ".join(_every(name) for name in filters if name not in ROLLUP_FILTERS) or "1"


def _whole(start: str, minutes: int) -> str:
    """Every minute of the `minutes` from `start` on lies in the dashboard's range (as `$__timeFilter` bounds
    it)."""
    return f"{start} >= $__fromTime AND {start} + INTERVAL {minutes - 1} MINUTE <= $__toTime"


def _whole_hour(hour: str) -> str:
    return _whole(hour, 60)


def _whole_day(day: str) -> str:
    return _whole(day, 24 * 60)


def newest(limit: int, *extra: str, filters: Sequence[str] = sql.CALL_FILTERS) -> str:
    """A condition on Timestamp that keeps at least the newest `limit` calls matching `filters` and `extra`, for
    tables that show the latest calls: without it, ORDER BY Timestamp DESC LIMIT reads every call of the range.

    The bound is the latest whole minute of the range from which on the minute rollup counts `limit` calls, looked
    for only from the latest whole hour on where the hourly rollup counts as many (so it reads a few hundred
    rollup rows, not a month of minutes); the range's start when it holds fewer. While a filter the rollups
    cannot answer is set (a user, a tag, a text), the bound is instead the time of the `limit`-th newest matching
    call, read from llm_calls' filter columns alone: the table then reads whole rows, content and all, of those
    calls only, not of every match in the range (9 s for a busy user over 30 days on 10M calls). One user's
    calls are read in user order (migration 0012); with one tag chosen, that call is looked for only from the
    latest hour on where the tag's hourly rows count `limit` calls. `extra` conditions must only use the
    rollups' dimensions."""
    hour = _latest_with(limit, CALL_ROLLUPS.hour, "Hour", "1 HOUR", "$__fromTime", extra, filters)
    minute = _latest_with(limit, CALL_ROLLUPS.minute, "Minute", "1 MINUTE", hour, extra, filters)
    since = [_latest_tagged_hour(limit, extra, filters)] if "tag" in filters else []
    return f"Timestamp >= {minute}\n  AND Timestamp >= {_limit_th_newest(limit, [*extra, *since], filters)}"


def _limit_th_newest(limit: int, extra: Sequence[str], filters: Sequence[str]) -> str:
    """The time of the `limit`-th newest call in range matching `filters` and `extra` (the epoch when fewer
    match), read only while the rollups cannot answer the filters: otherwise its condition is constant false
    and nothing is read."""
    return f"""(
    SELECT min(Timestamp) FROM (
      SELECT Timestamp FROM {sql.CALLS}
      {sql.where(f"NOT ({_rollup_applies(filters)})", *extra, filters=filters)}
      ORDER BY Timestamp DESC
      LIMIT {limit}
    )
  )"""


def _latest_tagged_hour(limit: int, extra: Sequence[str], filters: Sequence[str]) -> str:
    """`Timestamp >=` the latest hour from which on the hourly by-value rows of the one chosen tag count `limit`
    calls matching `extra` (the range's start when they count fewer, or no tag alone is chosen)."""
    hourly = VALUE_ROLLUPS[-1]
    applies = _by_value_applies(filters, hourly.kept)
    chosen = f"$__conditionalAll({VALUE_FILTERS['tag']}, $tag)"
    answered = [name for name in filters if name in ROLLUP_FILTERS]
    where = [applies, chosen, *(sql.conditional(name) for name in answered), *extra]
    return "Timestamp >= " + _latest_with(limit, hourly.table, "Hour", "1 HOUR", "$__fromTime", where, ())


def _latest_with(
    limit: int, table: str, start: str, step: str, since: str, extra: Sequence[str], filters: Sequence[str]
) -> str:
    """The latest `start` of `table` (a rollup) at or after `since` from which on its whole periods in the range
    count `limit` matching calls, else `since`."""
    answered = [name for name in filters if name in ROLLUP_FILTERS]
    conditions = [f"{start} >= {since}", f"{start} + INTERVAL {step} <= $__toTime", _rollup_applies(filters)]
    where = "\n      AND ".join([*conditions, *(sql.conditional(name) for name in answered), *extra])
    return f"""ifNull((
    SELECT {start} FROM (
      SELECT {start}, sum(sum(Calls)) OVER (ORDER BY {start} DESC) AS Newer
      FROM {table}
      WHERE {where}
      GROUP BY {start}
    )
    WHERE Newer >= {limit}
    ORDER BY {start} DESC
    LIMIT 1
  ), {since})"""


@dataclass(frozen=True)
class Measure:
    """One aggregate, written over llm_calls rows and, when the rollup holds what it needs, over its rows;
    `digest` when the rollup form merges latency digests (costly per row, see the module docstring);
    `per_value` when the by-value rollup's rows hold what the rollup form reads too."""

    raw: str
    rollup: str | None = None
    digest: bool = False
    per_value: bool = True


CALLS = Measure("count()", "sum(Calls)")
ERRORS = Measure("countIf(IsError = 1)", "sum(Errors)")
ERROR_RATIO = Measure(
    f"if(count() = 0, 0, {sql.error_ratio()})", "if(sum(Calls) = 0, 0, sum(Errors) / sum(Calls))"
)
INPUT_TOKENS = Measure("sum(InputTokens)", "sum(InputTokens)")
OUTPUT_TOKENS = Measure("sum(OutputTokens)", "sum(OutputTokens)")
TOKENS = Measure("sum(InputTokens + OutputTokens)", "sum(InputTokens + OutputTokens)")
COST = Measure("sum(Cost)", "sum(Cost)")  # on costed rows (`costed=True`)
MIN_LATENCY = Measure("min(DurationMs)", "min(DurationMsMin)")
AVG_LATENCY = Measure("avg(DurationMs)", "sum(DurationMsSum) / sum(Calls)")
MAX_LATENCY = Measure("max(DurationMs)", "max(DurationMsMax)")


def _finite(expression: str) -> str:
    """NULL instead of NaN when a bucket holds nothing to take a quantile of (Grafana then draws a gap)."""
    return f"ifNotFinite({expression}, NULL)"


# Every percentile a panel shows (the levels `llmtap stats` reports): each one is read from a single
# `quantiles(...)` over all of them, and ClickHouse computes identical aggregates once, so p50, p95 and p99 of one
# panel merge the latency digests once, not thrice.
QUANTILES = LATENCY_LEVELS


def _level(quantile: float) -> str:
    if quantile not in QUANTILES:
        raise ValueError(f"percentile {quantile} is not one of {QUANTILES}")
    return f"[{QUANTILES.index(quantile) + 1}]"


def _quantiles(function: str) -> str:
    return f"{function}({', '.join(str(q) for q in QUANTILES)})"


def latency(quantile: float) -> Measure:
    return Measure(
        _finite(f"{_quantiles('quantiles')}(DurationMs){_level(quantile)}"),
        _finite(f"{_quantiles('quantilesTDigestMerge')}(DurationMsQuantiles){_level(quantile)}"),
        digest=True,
    )


def time_to_first_chunk(quantile: float) -> Measure:
    """Over streamed calls only (the rollup keeps an -If digest of exactly those)."""
    return Measure(
        _finite(
            f"{_quantiles('quantilesIf')}(TimeToFirstChunkMs, IsStream = 1 AND TimeToFirstChunkMs IS NOT NULL)"
            + _level(quantile)
        ),
        _finite(f"{_quantiles('quantilesTDigestIfMerge')}(TimeToFirstChunkMsQuantiles){_level(quantile)}"),
        digest=True,
        per_value=False,
    )


_GRAFANA_BUCKET = "$__interval_s"
_RANGE = "$__toTime - $__fromTime"
_WHOLE_HOURS = "intDiv($__interval_s + 3599, 3600) * 3600"  # Grafana's bucket rounded up to whole hours
# The bucket, in seconds, of a time series: Grafana's, rounded up to whole hours over ranges longer than a day, so
# such a series reads the hourly rollup rather than days of minutes (Grafana asks for 10-minute buckets over a
# week, 30-minute ones over a month on a wide panel).
SERIES_BUCKET = f"if({_RANGE} > 86400, {_WHOLE_HOURS}, {_GRAFANA_BUCKET})"
# The same for digest measures, and rounded up to whole days over a week or more (Grafana's "Last 7 days" is
# exactly a week), so a month's series merges its daily digests.
DIGEST_BUCKET = (
    f"multiIf({_RANGE} >= 7 * 86400, intDiv($__interval_s + 86399, 86400) * 86400,"
    f" {_RANGE} > 86400, {_WHOLE_HOURS}, {_GRAFANA_BUCKET})"
)
DIGEST_BUCKET_NOTE = (
    "Over ranges longer than a day each point spans at least an hour, over a week at least a day."
)


def _bucket_start(column: str, bucket: str) -> str:
    return f"toStartOfInterval(toDateTime({column}), INTERVAL {bucket} second)"


def _scaled(measure: Measure, template: str) -> Measure:
    rollup = template.format(measure.rollup) if measure.rollup else None
    return dataclasses.replace(measure, raw=template.format(measure.raw), rollup=rollup)


def rate(measure: Measure) -> Measure:
    """Per second over the query's bucket (`query` puts it in place of Grafana's `$__interval_s`), so values do
    not change with the zoom level."""
    return _scaled(measure, "{} / " + _GRAFANA_BUCKET)


def per_hour(measure: Measure) -> Measure:
    """Per hour over the interval bucket (spend reads better as USD/h than USD/s)."""
    return _scaled(measure, "{} * 3600 / " + _GRAFANA_BUCKET)


def query(
    measures: Sequence[tuple[Measure, str]],
    *,
    over_time: bool = False,
    by: Sequence[str] = (),
    costed: bool = False,
    rollups: Rollups | None = None,
    extra: Sequence[str] = (),
    having: str | None = None,
    order_by: str | None = None,
    limit: int | None = None,
    filters: Sequence[str] = sql.CALL_FILTERS,
) -> str:
    """Calls aggregated per time bucket (`over_time`: `SERIES_BUCKET`, or `DIGEST_BUCKET` for digest measures)
    and per `by` expressions (`expr AS name` or a column), narrowed by the dashboard variables `filters`: from
    `rollups` (by default the calls' rollups), the by-value tables or the calls, whichever the chosen values let
    answer (see the module docstring); with Cost when `costed`. `extra` conditions must only use columns both
    tables have (the rollup's dimensions)."""
    keys = ["time"] if over_time else []
    keys += [item.rsplit(" AS ", 1)[-1] for item in by]
    order_by = order_by or ", ".join(keys) or None
    tail = (f"\nORDER BY {order_by}" if order_by else "") + (f"\nLIMIT {limit}" if limit else "")
    bucket = None
    if over_time:
        bucket = DIGEST_BUCKET if any(measure.digest for measure, _ in measures) else SERIES_BUCKET
    if any(measure.rollup is None for measure, _ in measures):  # only the calls can answer
        raw_table, raw_where = sql.COSTED if costed else sql.CALLS, sql.where(*extra, filters=filters)
        return (
            _aggregate(measures, "Timestamp", bucket, by, keys, raw_table, raw_where, having, switch=None)
            + tail
        )
    applies = _rollup_applies(filters)
    sources = [(_rollup_rows(rollups or CALL_ROLLUPS, [*extra, applies], filters, bucket), applies)]
    taken = applies  # what the branches so far answer
    always = set()  # the value filters an earlier by-value branch answers whatever the range
    for level in VALUE_ROLLUPS:
        chosen = _by_value_applies(filters, level.kept) if level.serves(measures, rollups) else "0"
        if chosen == "0" or (bucket is None and always >= set(level.kept)):
            continue
        always |= set(level.kept) if bucket is None else set()
        fits = _periods_fit(bucket, level.period)
        condition = chosen if fits == "1" else f"{chosen} AND {fits}"
        switch = f"NOT ({taken}) AND ({condition})"
        answers = rollups == ANSWER_ROLLUPS
        # The answer rollups hold the answer operations alone.
        level_extra = [
            *extra,
            *([sql.ANSWER_OPERATIONS] if answers and sql.ANSWER_OPERATIONS not in extra else []),
            switch,
        ]
        sources.append((_by_value_rows(level, costed, answers, level_extra, filters), switch))
        taken = f"({taken}) OR ({condition})"
    if rollups == ANSWER_ROLLUPS and (chosen := _by_value_applies(filters, tuple(VALUE_FILTERS))) != "0":
        switch = f"NOT ({taken}) AND ({chosen})"
        sources.append((_value_answers([*extra, switch], filters), switch))
        taken = f"({taken}) OR ({chosen})"
    raw_switch = f"NOT ({taken})"
    if costed:
        return (
            _costed_query(measures, bucket, by, keys, having, sources, [*extra, raw_switch], filters) + tail
        )
    branches = [
        _aggregate(measures, _START, bucket, by, keys, f"(\n{rows}\n)", "", having, switch=switch)
        for rows, switch in sources
    ]
    raw_where = sql.where(*extra, raw_switch, filters=filters)
    branches.append(
        _aggregate(measures, "Timestamp", bucket, by, keys, sql.CALLS, raw_where, having, switch=raw_switch)
    )
    return "SELECT * FROM (\n" + "\nUNION ALL\n".join(branches) + f"\n){tail}"


def _costed_query(
    measures: Sequence[tuple[Measure, str]],
    bucket: str | None,
    by: Sequence[str],
    keys: Sequence[str],
    having: str | None,
    sources: Sequence[tuple[str, str]],
    raw_extra: Sequence[str],
    filters: Sequence[str],
) -> str:
    """A costed query as one aggregate over the rows of every branch, priced at once: each price lookup costs its
    planning (40-50 ms on 10M calls) even in a branch that reads nothing, and the calls' own lookup joined every
    call. The calls are grouped like a rollup's rows, per bucket (a total: per day) and day, so their percentiles
    are t-digest ones, as the rollups'."""
    if not all(measure.per_value for measure, _ in measures):
        raise ValueError("a costed query's measures must read only the columns of _COSTED_ROWS")
    # Latency digests only where a measure merges them: ClickHouse computes them for the calls' rows even when
    # no measure reads them (0.6 s of CPU for a busy user's month).
    digests = any(measure.digest for measure, _ in measures)
    costed = {
        column: raw for column, raw in _COSTED_ROWS.items() if digests or column != "DurationMsQuantiles"
    }
    # Of the dimensions, the model (to price by) and those the groupings and measures name: the fewer, the fewer
    # rows the calls make (a busy user's month: 68k rows per bucket, day and every dimension, 7k per model).
    named = " ".join([*by, *(measure.rollup or "" for measure, _ in measures), having or ""])
    dimensions = [
        name for name in _VALUE_ROW_DIMENSIONS if name == "Model" or re.search(rf"\b{name}\b", named)
    ]
    columns = ", ".join([*dimensions, *costed])
    rows = [
        f"SELECT {_START}, toDate({_START}) AS Date, {columns} FROM (\n{source}\n)" for source, _ in sources
    ]
    start = _bucket_start("Timestamp", bucket) if bucket else "toStartOfDay(Timestamp)"
    where = sql.where(*raw_extra, filters=filters)
    rows.append(_calls_rows(start, costed, where, ("toDate(Timestamp) AS Date", *dimensions)))
    priced = priced_days("\nUNION ALL\n".join(rows), "t.InputTokens", "t.CachedTokens", "t.OutputTokens")
    table = f"(\nSELECT *, DayCost AS Cost FROM ({priced})\n)"
    return _aggregate(measures, _START, bucket, by, keys, table, "", having, switch=None)


def _calls_rows(
    start: str, measures: Mapping[str, str], where: str, dimensions: Sequence[str] = _VALUE_ROW_DIMENSIONS
) -> str:
    """The calls matching `where` as rollup rows: per `start` (an expression of Timestamp) and `dimensions`
    (columns or `expr AS name`), `measures` (column -> aggregate)."""
    grouped = ", ".join(f"{raw} AS {column}" for column, raw in measures.items())
    keys = ", ".join(item.rsplit(" AS ", 1)[-1] for item in dimensions)
    return (
        f"SELECT {start} AS {_START}, {', '.join(dimensions)}, {grouped}\nFROM {sql.CALLS}\n{where}"
        f"\nGROUP BY {_START}, {keys}"
    )


def _value_answers(extra: Sequence[str], filters: Sequence[str]) -> str:
    """The answers of the chosen user or tag (llm_answers_by_value, migration 0014, a row per answer and value) as
    rows of the answer rollups' columns."""
    answered = [name for name in filters if name in ROLLUP_FILTERS]
    where = sql.where(*extra, f"({_chosen_value(filters, tuple(VALUE_FILTERS))})", filters=answered)
    return (
        f"SELECT Timestamp AS {_START}, Project, ServiceName, Model, Operation, IsError, 1 AS Answers, Uncertain"
        f"\nFROM {VALUE_ANSWERS}\n{where}"
    )


def _chosen_value(filters: Sequence[str], kept: Sequence[str]) -> str:
    """The rows of a by-value table (Dimension, Value) that hold the chosen value of `filters` `kept`."""
    return " OR ".join(
        f"(NOT ({_every(name)}) AND $__conditionalAll({condition}, ${name}))"
        for name, condition in VALUE_FILTERS.items()
        if name in filters and name in kept
    )


def _by_value_applies(filters: Sequence[str], kept: Sequence[str]) -> str:
    """True while exactly one of the value filters has a choice, one that a by-value rollup keeps rows for
    (`kept`; a tag filter: one tag, since a call with two chosen tags has a row under each), and every other
    filter set is one the rollups answer; "0" when `filters` has no value filter `kept`."""
    values = [name for name in filters if name in VALUE_FILTERS and name in kept]
    if not values:
        return "0"
    chosen = " + ".join(f"(NOT ({_every(name)}))" for name in values)
    conditions = [f"({chosen}) = 1"]
    conditions += [_every(name) for name in filters if name not in ROLLUP_FILTERS and name not in values]
    if "tag" in values:
        conditions.append(f"({_every('tag')} OR length([${{tag:singlequote}}]) = 1)")
    return " AND ".join(conditions)


def _every(variable: str) -> str:
    """True while the variable is All (or empty): it selects no calls out."""
    return f"$__conditionalAll(0, ${variable})"


def _by_value_rows(
    level: ValueRollup, costed: bool, answers: bool, extra: Sequence[str], filters: Sequence[str]
) -> str:
    """Rows of the calls of the chosen value per period (Start) of `level`, with their cached tokens when
    `costed` (to be priced) and answers when `answers`: the range's whole periods from the rollup, its ragged
    edges as the same rows grouped from the calls (exactly those in the range). Whole periods as `_whole` has
    them: every minute in the range. `extra` holds the branch's switch, so that both parts read nothing while
    it is off."""
    start = f"toStartOf{level.period}"
    first = f"{start}($__fromTime) + toInterval{level.period}({start}($__fromTime) < $__fromTime)"
    end = f"{start}($__toTime + INTERVAL 1 MINUTE)"
    # column -> (its source in the rollup's rows, the same aggregate over the calls)
    measures = {column: (column, raw) for column, raw in level.measures.items()}
    measures |= {"CachedTokens": ("CachedTokens", "sum(CachedTokens)")} if costed else {}
    measures |= _ANSWER_MEASURES if answers else {}
    answered = [name for name in filters if name in ROLLUP_FILTERS]
    periods = sql.where(
        *extra, f"{level.period} >= {first}", f"{level.period} < {end}", f"({_chosen_value(filters, level.kept)})",
        filters=answered, time_column=None,
    )  # fmt: skip
    edges = sql.where(*extra, f"(Timestamp < {first} OR Timestamp >= {end})", filters=filters)
    stored = ", ".join(
        source if source == column else f"{source} AS {column}" for column, (source, _) in measures.items()
    )
    return (
        f"SELECT {level.period} AS {_START}, {', '.join(_VALUE_ROW_DIMENSIONS)}, {stored}\nFROM {level.table}"
        f"\n{periods}\nUNION ALL\n"
        + _calls_rows(f"{start}(Timestamp)", {column: raw for column, (_, raw) in measures.items()}, edges)
    )


def _periods_fit(bucket: str | None, period: str) -> str:
    """True when rows of the server's days or hours (`period`) serve buckets of `bucket` seconds (a total:
    always): whole days in a UTC server, whole hours in a zone a whole number of hours from UTC. Only a zone with
    summer time over a range that holds a whole summer (London, say) passes the days' test wrongly."""
    if bucket is None:
        return "1"
    if period == "Hour":
        return f"{bucket} % 3600 = 0 AND timeZoneOffset($__fromTime) % 3600 = 0 AND timeZoneOffset($__toTime) % 3600 = 0"
    return f"{bucket} % 86400 = 0 AND timeZoneOffset($__fromTime) = 0 AND timeZoneOffset($__toTime) = 0"


def _rollup_rows(rollups: Rollups, extra: Sequence[str], filters: Sequence[str], bucket: str | None) -> str:
    """The rollup rows of the time range: whole days from the daily rollup, the other whole hours from the hourly
    rollup, the remaining minutes from the minute rollup. A time series' buckets start at UTC multiples of their
    length, the rollups' hours and days at the server's, so hours serve it only when its buckets are whole hours
    and the server's zone is whole hours from UTC, days only when its buckets are whole days and the zone is
    UTC."""
    answered = [name for name in filters if name in ROLLUP_FILTERS]
    # Constants (a per-row condition would keep ClickHouse from pruning by it), judged at the range's two ends.
    hours_fit = _periods_fit(bucket, "Hour")
    days_fit = "0" if rollups.day is None else _periods_fit(bucket, "Day")

    levels = [
        ("Minute", rollups.minute, f"NOT ({hours_fit} AND {_whole_hour('toStartOfHour(Minute)')})"),
        ("Hour", rollups.hour, f"{hours_fit} AND {_whole_hour('Hour')} AND NOT ({days_fit} AND {_whole_day('toStartOfDay(Hour)')})"),
    ]  # fmt: skip
    if rollups.day is not None:
        levels.append(("Day", rollups.day, f"{days_fit} AND {_whole_day('Day')}"))
    return "\nUNION ALL\n".join(
        f"SELECT {column} AS {_START}, * EXCEPT ({column}) FROM {table}\n"
        + sql.where(*extra, condition, filters=answered, time_column=column)
        for column, table, condition in levels
    )


def _aggregate(
    measures: Sequence[tuple[Measure, str]],
    time_column: str,
    bucket: str | None,
    by: Sequence[str],
    keys: Sequence[str],
    table: str,
    where: str,
    having: str | None,
    *,
    switch: str | None,
) -> str:
    """One aggregating SELECT over the rollup rows (`time_column` Start) or the calls (Timestamp), per `bucket`
    seconds when over time; `switch` turns it off."""
    rollup = time_column == _START
    columns = [f"{_bucket_start(time_column, bucket)} AS time"] if bucket else []
    columns += list(by)
    for measure, alias in measures:
        expression = measure.rollup if rollup else measure.raw
        if bucket:  # rates are per second of the bucket actually used
            expression = expression.replace(_GRAFANA_BUCKET, f"({bucket})")
        columns.append(f"{expression} AS {alias}")
    group = f"\nGROUP BY {', '.join(keys)}" if keys else ""
    # The switch in HAVING too: without GROUP BY an aggregate returns one row even when nothing was read.
    conditions = [condition for condition in (switch, having) if condition]
    having_clause = "\nHAVING " + " AND ".join(f"({c})" for c in conditions) if conditions else ""
    from_where = f"\nFROM {table}" + (f"\n{where}" if where else "")
    return "SELECT\n  " + ",\n  ".join(columns) + f"{from_where}{group}{having_clause}"
