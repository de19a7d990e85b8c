"""Stats about one user, tag or custom attribute value from the daily by-value rollup, where it can answer.

llm_calls is sorted for reading the newest calls, so "top users this month" or "what did tenant-42 use" read a
month of calls. ``llm_calls_by_value_1d`` (migration 0011) keeps each day's counts, token sums and latency digest
per user, tag and attribute value. A query takes the whole days of its range from it and only the ragged edges
(the partial first and last day, in the server's time zone like the rollup's days) from llm_calls, so it counts
exactly the calls a scan of llm_calls counts. Its latency percentiles merge t-digests, as the dashboards' do,
instead of the exact quantiles of a scan.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from llmtap.clickhouse.filters import CallFilter, utc, where_clause

TABLE = "llm_calls_by_value_1d"
# Stats groupings the rollup keeps a column for -> that column (a user is the Value of Dimension 'user').
KEYS = {
    "user": "Value",
    "model": "Model",
    "service": "ServiceName",
    "project": "Project",
    "provider": "Provider",
    "operation": "Operation",
}
_SINCE = "fromUnixTimestamp64Nano({since_ns:Int64})"
_UNTIL = "fromUnixTimestamp64Nano({until_ns:Int64})"


@dataclass(frozen=True)
class ValueSelection:
    """Rollup rows of one dimension ('user', 'tag', 'attr.<key>'): those of `values`, or all when empty."""

    dimension: str
    values: tuple[str, ...] = ()


def selection(flt: CallFilter, by: str | None) -> ValueSelection | None:
    """The rollup rows that hold exactly the calls of `flt` grouped `by` (None: one total), or None when only
    llm_calls can answer: a filter the rollup has no column for, two value filters at once (their calls'
    intersection), or several tags (a call holding two of them has a row under each). None too for a range
    shorter than a day, which holds no whole day: its scan is as cheap, and its percentiles are exact."""
    if by is not None and by not in KEYS:
        return None
    if flt.since and utc(flt.until or datetime.now(timezone.utc)) - utc(flt.since) < timedelta(days=1):
        return None
    if flt.session or flt.trace_id or flt.metadata or flt.text or flt.min_duration_ms is not None:
        return None
    chosen = [ValueSelection("user", flt.user)] if flt.user else []
    if flt.tags:
        chosen.append(ValueSelection("tag", flt.tags))
    chosen += [
        ValueSelection(f"attr.{key}", () if value is None else (value,))
        for key, value in flt.attributes.items()
    ]
    if by == "user":
        chosen = chosen or [ValueSelection("user")]
    if len(chosen) != 1 or (by == "user" and chosen[0].dimension != "user"):
        return None
    if chosen[0].dimension == "tag" and len(chosen[0].values) != 1:
        return None
    return chosen[0]


def day_rows(
    chosen: ValueSelection, flt: CallFilter, by: str | None, raw_key: str, *, top: int | None = None
) -> tuple[str, dict[str, Any]]:
    """``(sql, parameters)`` of rows per Key, Model and Date with CallCount, ErrorCount, MinMs, SumMs, MaxMs,
    InputSum, OutputSum, CachedSum, ReasoningSum and Latency (a t-digest state): the range's whole days from the
    rollup, the rest from llm_calls, where `raw_key` is the grouping's expression; only of the `top` keys with
    the most calls (ties by key) when given. (Names of their own: an alias equal to a column's name would stand
    for the aggregate inside it.)

    The top keys are found from the call counts first, since merging latency digests is what costs: a month of
    all 5,000 users' percentiles merges millions of digests (3.7 s), the 50 busiest users' a few thousand."""
    rollup_key = KEYS[by] if by else raw_key
    rollup_rows, raw_rows, params = _conditions(chosen, flt)
    if top:
        ranking, params = busiest(chosen, flt, by, raw_key, top)
        rollup_rows += f" AND {rollup_key} IN ({ranking})"
        raw_rows += f" AND {raw_key} IN ({ranking})"
    sql = f"""
        SELECT {rollup_key} AS Key, Model, toDate(Day) AS Date, sum(Calls) AS CallCount, sum(Errors) AS ErrorCount,
               min(DurationMsMin) AS MinMs, sum(DurationMsSum) AS SumMs, max(DurationMsMax) AS MaxMs,
               sum(InputTokens) AS InputSum, sum(OutputTokens) AS OutputSum, sum(CachedTokens) AS CachedSum,
               sum(ReasoningTokens) AS ReasoningSum, quantileTDigestMergeState(DurationMsQuantiles) AS Latency
        FROM {TABLE}
        WHERE {rollup_rows}
        GROUP BY Key, Model, Date
        UNION ALL
        SELECT {raw_key} AS Key, Model, toDate(Timestamp) AS Date, count(), sum(IsError), min(DurationMs),
               sum(DurationMs), max(DurationMs), sum(InputTokens), sum(OutputTokens), sum(CachedTokens),
               sum(ReasoningTokens), quantileTDigestState(DurationMs)
        FROM llm_calls
        WHERE {raw_rows}
        GROUP BY Key, Model, Date"""
    return sql, params


def busiest(
    chosen: ValueSelection, flt: CallFilter, by: str | None, raw_key: str, top: int
) -> tuple[str, dict[str, Any]]:
    """``(sql, parameters)`` of the `top` keys with the most calls (ties by key), counted from the rollup's
    per_day projection (when only its columns are filtered on) and the calls of the range's edges."""
    rollup_rows, raw_rows, params = _conditions(chosen, flt)
    rollup_key = KEYS[by] if by else raw_key
    sql = f"""
        SELECT Key FROM (
            SELECT {rollup_key} AS Key, sum(Calls) AS N FROM {TABLE} WHERE {rollup_rows} GROUP BY Key
            UNION ALL
            SELECT {raw_key} AS Key, count() AS N FROM llm_calls WHERE {raw_rows} GROUP BY Key
        )
        GROUP BY Key
        ORDER BY sum(N) DESC, Key
        LIMIT {{by_value_top:UInt32}}"""
    return sql, {**params, "by_value_top": top}


def _conditions(chosen: ValueSelection, flt: CallFilter) -> tuple[str, str, dict[str, Any]]:
    """``(rollup rows, calls, parameters)``: the conditions selecting the rollup rows of `chosen` on the range's
    whole days, and the calls of `flt` in the rest of it."""
    first_day = f"toStartOfDay({_SINCE}) + toIntervalDay(toStartOfDay({_SINCE}) < {_SINCE})"
    days_end = f"toStartOfDay({_UNTIL if flt.until else 'now()'})"
    rollup_filter = dataclasses.replace(flt, since=None, until=None, user=(), tags=(), attributes={})
    rollup_where, params = where_clause(rollup_filter, rollup="Day")
    raw_where, raw_params = where_clause(flt)
    params = {
        **params,
        **raw_params,
        "by_value_dimension": chosen.dimension,
        "by_value_values": list(chosen.values),
    }
    whole_days = ["Dimension = {by_value_dimension:String}", f"Day < {days_end}"]
    if chosen.values:
        whole_days.append("Value IN {by_value_values:Array(String)}")
    if flt.since:
        whole_days.append(f"Day >= {first_day}")
    if rollup_where:
        whole_days.append(rollup_where.removeprefix("WHERE "))
    edges = [
        f"(Timestamp < {first_day} OR Timestamp >= {days_end})" if flt.since else f"Timestamp >= {days_end}"
    ]
    if raw_where:
        edges.insert(0, raw_where.removeprefix("WHERE "))
    return " AND ".join(whole_days), " AND ".join(edges), params
