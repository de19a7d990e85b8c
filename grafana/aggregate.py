"""Aggregate queries that read the per-minute rollup whenever it can answer, and the calls otherwise.

`llm_calls_1m` keeps counts, token sums and latency digests per minute, project, service, model, provider,
operation and error type, so a 30-day chart reads thousands of rows instead of millions. It cannot filter by
user or tag. Each query therefore has two branches over the same columns, and the dashboard's variables pick
one inside ClickHouse: `$__conditionalAll(0, $user)` is `1=1` while the user filter is "All" and `0` once
a user is chosen. The branch whose switch is false reads no data (a constant-false filter selects no parts).

Rollup resolution is a minute: panels using these queries set a 1-minute minimum interval.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from llmtap.grafana import sql

ROLLUP = "llm_calls_1m"
ROLLUP_COSTED = "llm_calls_1m_costed"
ROLLUP_FILTERS = ("project", "service", "model")  # the variables the rollup's dimensions can answer
_ROLLUP_APPLIES = " AND ".join(
    f"$__conditionalAll(0, ${name})" for name in sql.CALL_FILTERS if name not in ROLLUP_FILTERS
)


@dataclass(frozen=True)
class Measure:
    """One aggregate, written over llm_calls rows and, when the rollup holds what it needs, over its rows."""

    raw: str
    rollup: str | None = None


CALLS = Measure("count()", "sum(Calls)")
ERROR_RATIO = Measure(
    f"if(count() = 0, 0, {sql.error_ratio()})", "if(sum(Calls) = 0, 0, sum(Errors) / sum(Calls))"
)
INPUT_TOKENS = Measure("sum(InputTokens)", "sum(InputTokens)")
OUTPUT_TOKENS = Measure("sum(OutputTokens)", "sum(OutputTokens)")
TOKENS = Measure("sum(InputTokens + OutputTokens)", "sum(InputTokens + OutputTokens)")
COST = Measure("sum(Cost)", "sum(Cost)")  # on the costed views
MIN_LATENCY = Measure("min(DurationMs)", "min(DurationMsMin)")
AVG_LATENCY = Measure("avg(DurationMs)", "sum(DurationMsSum) / sum(Calls)")
MAX_LATENCY = Measure("max(DurationMs)", "max(DurationMsMax)")


def _finite(expression: str) -> str:
    """NULL instead of NaN when a bucket holds nothing to take a quantile of (Grafana then draws a gap)."""
    return f"ifNotFinite({expression}, NULL)"


def latency(quantile: float) -> Measure:
    return Measure(
        _finite(f"quantile({quantile})(DurationMs)"),
        _finite(f"quantileTDigestMerge({quantile})(DurationMsQuantiles)"),
    )


def time_to_first_chunk(quantile: float) -> Measure:
    """Over streamed calls only (the rollup keeps an -If digest of exactly those)."""
    return Measure(
        _finite(
            f"quantileIf({quantile})(TimeToFirstChunkMs, IsStream = 1 AND TimeToFirstChunkMs IS NOT NULL)"
        ),
        _finite(f"quantileTDigestIfMerge({quantile})(TimeToFirstChunkMsQuantiles)"),
    )


def _scaled(measure: Measure, template: str) -> Measure:
    return Measure(template.format(measure.raw), template.format(measure.rollup) if measure.rollup else None)


def rate(measure: Measure) -> Measure:
    """Per second over the interval bucket, so values do not change with the zoom level."""
    return _scaled(measure, "{} / $__interval_s")


def per_hour(measure: Measure) -> Measure:
    """Per hour over the interval bucket (spend reads better as USD/h than USD/s)."""
    return _scaled(measure, "{} * 3600 / $__interval_s")


def query(
    measures: Sequence[tuple[Measure, str]],
    *,
    over_time: bool = False,
    by: Sequence[str] = (),
    costed: bool = False,
    extra: Sequence[str] = (),
    having: str | None = None,
    order_by: str | None = None,
    limit: int | None = None,
) -> str:
    """Calls aggregated per `$__timeInterval` bucket (`over_time`) and per `by` expressions (`expr AS name` or a
    column). `extra` conditions must only use columns both tables have (the rollup's dimensions)."""
    keys = ["time"] if over_time else []
    keys += [item.rsplit(" AS ", 1)[-1] for item in by]
    order_by = order_by or ", ".join(keys) or None
    tail = (f"\nORDER BY {order_by}" if order_by else "") + (f"\nLIMIT {limit}" if limit else "")
    if any(measure.rollup is None for measure, _ in measures):  # only the calls can answer
        return _branch(measures, "Timestamp", by, keys, costed, extra, having, switch=None) + tail
    rollup = _branch(measures, "Minute", by, keys, costed, extra, having, switch=_ROLLUP_APPLIES)
    raw = _branch(measures, "Timestamp", by, keys, costed, extra, having, switch=f"NOT ({_ROLLUP_APPLIES})")
    return f"SELECT * FROM (\n{rollup}\nUNION ALL\n{raw}\n){tail}"


def _branch(
    measures: Sequence[tuple[Measure, str]],
    time_column: str,
    by: Sequence[str],
    keys: Sequence[str],
    costed: bool,
    extra: Sequence[str],
    having: str | None,
    *,
    switch: str | None,
) -> str:
    """One SELECT over the rollup (`time_column` Minute) or the calls (Timestamp); `switch` turns it off."""
    rollup = time_column == "Minute"
    columns = [f"$__timeInterval({time_column}) AS time"] if keys[:1] == ["time"] else []
    columns += list(by)
    columns += [f"{measure.rollup if rollup else measure.raw} AS {alias}" for measure, alias in measures]
    if rollup:
        table = ROLLUP_COSTED if costed else ROLLUP
        where = sql.where(
            *extra, *([switch] if switch else []), filters=ROLLUP_FILTERS, time_column=time_column
        )
    else:
        table = sql.COSTED if costed else sql.CALLS
        where = sql.where(*extra, *([switch] if switch else []))
    group = f"\nGROUP BY {', '.join(keys)}" if keys else ""
    # The switch in HAVING too: without GROUP BY an aggregate returns one row even when nothing was read.
    conditions = [condition for condition in (switch, having) if condition]
    having_clause = "\nHAVING " + " AND ".join(f"({c})" for c in conditions) if conditions else ""
    return "SELECT\n  " + ",\n  ".join(columns) + f"\nFROM {table}\n{where}{group}{having_clause}"
