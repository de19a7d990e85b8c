"""The one query layer over the LLM tables: what the CLI, ``serve``'s API and the dashboard tests ask ClickHouse.

Each function takes a clickhouse-connect client (``chdb://``, ``http://``, or ``serve``'s query API — see
:mod:`llmtap.clickhouse.store`) and a :class:`~llmtap.clickhouse.filters.CallFilter`, runs one statement
with bound parameters, and returns frozen dataclasses, so callers never see SQL rows or column positions.

Sources: single calls come from ``llm_calls`` (with cost, ``llm_calls_costed``); stats from ``llm_calls``, its
token sums priced per model and day, or, for one user, tag or custom attribute value and for rankings of users,
from the by-value rollup's whole days (:mod:`llmtap.clickhouse.by_value`); time series from the rollups
(``llm_calls_1h_costed``, ``llm_calls_1m_costed``) whenever the filter only uses their dimensions.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from llmtap.clickhouse import by_value
from llmtap.clickhouse.filters import CallFilter, where_clause
from llmtap.clickhouse.messages import preview

if TYPE_CHECKING:
    from clickhouse_connect.driver.client import Client

#: ``--by`` choices of stats and time series -> the SQL expression of the group key.
GROUPINGS: dict[str, str] = {
    "model": "Model",
    "service": "ServiceName",
    "project": "Project",
    "provider": "Provider",
    "operation": "Operation",
    "user": "UserId",
    "day": "toString(toDate(Timestamp, 'UTC'))",
}
ROLLUP_GROUPINGS = ("model", "service", "project", "provider", "operation")
LATENCY_LEVELS = (0.5, 0.9, 0.95, 0.99)
#: ``logs show`` takes this many hex digits of a span or trace id at least.
MIN_ID_PREFIX = 6
#: The ids an ambiguous prefix starts that ``AmbiguousIdError`` names at most.
AMBIGUOUS_IDS_SHOWN = 10
_ID_OR_PREFIX = re.compile(rf"^[0-9a-f]{{{MIN_ID_PREFIX},32}}$")

# The preview of a call's prompt: its last message's text on one line, as the dashboards show it.
_PROMPT_PREVIEW = preview("InputMessages", "{preview_chars:UInt32}")


@dataclass(frozen=True)
class CallSummary:
    """One call as a line of ``llmtap logs``."""

    timestamp: datetime
    trace_id: str
    span_id: str
    project: str
    service: str
    operation: str
    model: str
    duration_ms: float
    input_tokens: int
    output_tokens: int
    is_error: bool
    error_type: str
    status_message: str
    is_stream: bool
    user_id: str
    prompt_preview: str
    cost: float | None  # USD at the price in force that day; None when the model has no price

    @property
    def status(self) -> str:
        return (self.error_type or "error") if self.is_error else "ok"


@dataclass(frozen=True)
class CallDetail:
    """Everything recorded about one call (``llmtap logs show``)."""

    timestamp: datetime
    trace_id: str
    span_id: str
    parent_span_id: str
    project: str
    service: str
    span_name: str
    operation: str
    provider: str
    request_model: str
    response_model: str
    model: str
    response_id: str
    server_address: str
    duration_ms: float
    status_code: str
    status_message: str
    is_error: bool
    error_type: str
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    reasoning_tokens: int
    finish_reasons: list[str]
    is_stream: bool
    time_to_first_chunk_ms: float | None
    user_id: str
    session_id: str
    tags: list[str]
    prompt_hash: str
    redaction_count: int
    content_truncated: bool
    attributes: dict[str, str]
    metadata: dict[str, str]
    input_messages: str
    output_messages: str
    system_instructions: str
    tool_definitions: str
    price_model: str
    cost: float | None


@dataclass(frozen=True)
class IdMatch:
    """A call (span) or trace whose id starts with a prefix given to ``llmtap logs show``."""

    kind: str  # "span" or "trace"
    id: str
    timestamp: datetime  # of its first call
    models: list[str]
    calls: int


class AmbiguousIdError(LookupError):
    """``prefix`` starts several span or trace ids: ``matches`` are the newest, ``more`` says there are others."""

    def __init__(self, prefix: str, matches: list[IdMatch], more: bool) -> None:
        super().__init__(f"{prefix} starts {len(matches)}{'+' if more else ''} ids")
        self.prefix, self.matches, self.more = prefix, matches, more


@dataclass(frozen=True)
class Latency:
    """Latency of a group of calls in milliseconds (quantiles approximate on very large groups)."""

    min: float
    avg: float
    p50: float
    p90: float
    p95: float
    p99: float
    max: float


@dataclass(frozen=True)
class StatsRow:
    """Aggregates of one group (a model, service, user, day…) of calls."""

    key: str
    calls: int
    errors: int
    latency: Latency
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    reasoning_tokens: int
    cost: float | None  # sum over priced calls; None when no call of the group has a price
    unpriced_calls: int

    @property
    def error_rate(self) -> float:
        return self.errors / self.calls if self.calls else 0.0


@dataclass(frozen=True)
class TimeseriesPoint:
    """One time bucket of one series (``key`` is '' when the series are not split)."""

    bucket: datetime
    key: str
    calls: int
    errors: int
    input_tokens: int
    output_tokens: int
    cost: float | None
    p50_ms: float
    p95_ms: float


# ---------------------------------------------------------------- single calls


def search_calls(
    client: Client, flt: CallFilter, *, limit: int = 50, oldest_first: bool = False, preview_chars: int = 120
) -> list[CallSummary]:
    """The newest (or, for ``--follow``, oldest) ``limit`` calls matching ``flt``.

    llm_calls is sorted by project/service/model, not by time, so "the newest N" reads every timestamp in the
    range. Newest-first searches therefore look back a widening window (an hour, a day, a week, then the whole
    range) and stop at the first that holds ``limit`` calls: daily partitions outside the window are not read,
    and the answer is the same, since every call outside the window is older than those inside it.
    """
    if oldest_first:
        return _search(client, flt, limit, "ASC", preview_chars)
    end = flt.until or datetime.now(timezone.utc)
    for window in _NEWEST_WINDOWS:
        since = end - window if window else None
        if since is None or (flt.since is not None and flt.since >= since):
            return _search(client, flt, limit, "DESC", preview_chars)
        calls = _search(client, dataclasses.replace(flt, since=since), limit, "DESC", preview_chars)
        if len(calls) >= limit:
            return calls
    raise AssertionError("unreachable: the last window is the whole range")


_NEWEST_WINDOWS = (timedelta(hours=1), timedelta(days=1), timedelta(days=7), None)


def _search(client: Client, flt: CallFilter, limit: int, order: str, preview_chars: int) -> list[CallSummary]:
    """The calls, then their cost: only the ``limit`` calls found are priced (llm_calls_costed would price
    every call in the range before the limit applies)."""
    where, params = where_clause(flt)
    found = f"""
        SELECT Timestamp, TraceId, SpanId, Project, ServiceName, Operation, Model, Duration / 1e6 AS Ms,
               InputTokens, OutputTokens, CachedTokens, IsError, ErrorType, StatusMessage, IsStream, UserId,
               {_PROMPT_PREVIEW} AS Preview, toDate(Timestamp) AS Date
        FROM llm_calls
        {where}
        ORDER BY Timestamp {order}, SpanId {order}
        LIMIT {{limit:UInt32}}"""
    sql = f"""
    SELECT toDateTime64(Timestamp, 9, 'UTC'), TraceId, SpanId, Project, ServiceName, Operation, Model, Ms,
           InputTokens, OutputTokens, IsError, ErrorType, StatusMessage, IsStream, UserId, Preview, DayCost
    FROM ({priced_days(found, "t.InputTokens", "t.CachedTokens", "t.OutputTokens")})
    ORDER BY Timestamp {order}, SpanId {order}"""
    rows = client.query(
        sql, parameters={**params, "limit": limit, "preview_chars": preview_chars}
    ).result_rows
    return [
        CallSummary(_utc(r[0]), r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], bool(r[10]), r[11], r[12],
                    bool(r[13]), r[14], _one_line(r[15]), r[16])
        for r in rows
    ]  # fmt: skip


def get_calls(client: Client, call_id: str) -> list[CallDetail]:
    """The call with span id ``call_id`` (16 hex digits), or every call of trace ``call_id`` (32 hex digits).

    ``call_id`` may also be the first MIN_ID_PREFIX or more digits of one span or trace id (AmbiguousIdError
    when they start several). Whole ids are found through the bloom filter indexes; a prefix is looked up first.
    """
    wanted = call_id.strip().lower()
    if not _ID_OR_PREFIX.match(wanted):
        raise ValueError(
            f"{call_id!r} is not a span id (16 hex digits), a trace id (32) "
            f"or the first {MIN_ID_PREFIX} or more hex digits of one"
        )
    if len(wanted) == 32:
        return _calls_with(client, "TraceId", wanted)
    if len(wanted) == 16 and (calls := _calls_with(client, "SpanId", wanted)):
        return calls
    matches = match_ids(client, wanted, limit=AMBIGUOUS_IDS_SHOWN + 1)
    if len(matches) > 1:
        raise AmbiguousIdError(wanted, matches[:AMBIGUOUS_IDS_SHOWN], more=len(matches) > AMBIGUOUS_IDS_SHOWN)
    if not matches:
        return []
    return _calls_with(client, "SpanId" if matches[0].kind == "span" else "TraceId", matches[0].id)


def match_ids(client: Client, prefix: str, *, limit: int) -> list[IdMatch]:
    """The spans and traces of calls whose id starts with ``prefix`` (lower-case hex), newest first.

    No index serves ``startsWith``: this reads the SpanId and TraceId columns of llm_calls whole (the time and the
    model only where an id matches, as ClickHouse moves the conditions to PREWHERE).
    """
    sql = """
    SELECT Kind, Id, toDateTime64(min(Timestamp), 9, 'UTC') AS First, arraySort(groupUniqArray(Model)), count()
    FROM (
        SELECT 'span' AS Kind, SpanId AS Id, Timestamp, Model FROM llm_calls WHERE startsWith(SpanId, {prefix:String})
        UNION ALL
        SELECT 'trace', TraceId, Timestamp, Model FROM llm_calls WHERE startsWith(TraceId, {prefix:String})
    )
    GROUP BY Kind, Id
    ORDER BY First DESC, Id
    LIMIT {limit:UInt32}"""
    rows = client.query(sql, parameters={"prefix": prefix, "limit": limit}).result_rows
    return [IdMatch(kind, id_, _utc(first), list(models), calls) for kind, id_, first, models, calls in rows]


def _calls_with(client: Client, column: str, value: str) -> list[CallDetail]:
    """Every call whose ``column`` (SpanId or TraceId) is ``value``, oldest first."""
    names = [f.name for f in dataclasses.fields(CallDetail)]
    sql = f"""
    SELECT toDateTime64(Timestamp, 9, 'UTC'), TraceId, SpanId, ParentSpanId, Project, ServiceName, SpanName,
           Operation, Provider, RequestModel, ResponseModel, Model, ResponseId, ServerAddress, DurationMs,
           StatusCode, StatusMessage, IsError, ErrorType, InputTokens, OutputTokens, CachedTokens,
           ReasoningTokens, FinishReasons, IsStream, TimeToFirstChunkMs, UserId, SessionId, Tags, PromptHash,
           RedactionCount, ContentTruncated, Attributes, Metadata, InputMessages, OutputMessages,
           SystemInstructions, ToolDefinitions, PriceModel, Cost
    FROM llm_calls_costed
    WHERE {column} = {{id:String}}
    ORDER BY Timestamp"""
    details = []
    for row in client.query(sql, parameters={"id": value}).result_rows:
        values = dict(zip(names, row, strict=True))
        values["timestamp"] = _utc(values["timestamp"])
        for flag in ("is_error", "is_stream", "content_truncated"):
            values[flag] = bool(values[flag])
        values["finish_reasons"], values["tags"] = list(values["finish_reasons"]), list(values["tags"])
        values["attributes"], values["metadata"] = dict(values["attributes"]), dict(values["metadata"])
        details.append(CallDetail(**values))
    return details


# ---------------------------------------------------------------- aggregates


def call_stats(
    client: Client, flt: CallFilter, *, by: str = "model", limit: int | None = None
) -> list[StatsRow]:
    """Calls, errors, latency, tokens and cost per group, biggest groups first (days in date order)."""
    order = "Key" if by == "day" else "Calls DESC, Key"
    limit_clause = "LIMIT {limit:UInt32}" if limit else ""
    sql, params = _stats_sql(by, flt, top=limit)
    result = client.query(
        f"{sql}\nORDER BY {order}\n{limit_clause}", parameters={**params, "limit": limit or 0}
    )
    return [_stats_row(row) for row in result.result_rows]


def total_stats(client: Client, flt: CallFilter) -> StatsRow:
    """The same aggregates over every call matching ``flt`` (key 'total')."""
    sql, params = _stats_sql(None, flt)
    return _stats_row(client.query(sql, parameters=params).result_rows[0])


def latency_by_model(client: Client, flt: CallFilter) -> list[tuple[str, int, Latency]]:
    """``(model, calls, latency)`` per model, slowest p90 first: the min/avg/p90/max table teams build by hand."""
    where, params = where_clause(flt)
    sql = f"""
    SELECT Model, count(), {_LATENCY}
    FROM llm_calls
    {where}
    GROUP BY Model
    ORDER BY P[2] DESC, Model"""
    return [(r[0], r[1], _latency(r[2:])) for r in client.query(sql, parameters=params).result_rows]


def call_timeseries(
    client: Client, flt: CallFilter, *, step: timedelta = timedelta(minutes=1), by: str | None = None
) -> list[TimeseriesPoint]:
    """Calls, errors, tokens, cost and latency per time bucket (and per group ``by``), oldest first.

    Reads the hourly rollup for steps of whole hours, the minute rollup for whole minutes (when the filter and
    the grouping only use rollup dimensions), else llm_calls. All give the same counts and sums; latency
    quantiles differ only by the t-digest's error.
    """
    seconds = int(step.total_seconds())
    if seconds < 1 or seconds != step.total_seconds():
        raise ValueError(f"step must be a whole number of seconds, got {step}")
    key = _group_expression(by) if by else "''"
    rollup = None
    if flt.rollup_compatible and (by is None or by in ROLLUP_GROUPINGS):
        rollup = "Hour" if seconds % 3600 == 0 else "Minute" if seconds % 60 == 0 else None
    where, params = where_clause(flt, rollup=rollup)
    if rollup:
        table = "llm_calls_1h_costed" if rollup == "Hour" else "llm_calls_1m_costed"
        sql = f"""
        SELECT toStartOfInterval({rollup}, toIntervalSecond({{step:UInt32}}), 'UTC') AS Bucket, {key} AS Key,
               sum(Calls), sum(Errors), sum(InputTokens), sum(OutputTokens), sum(Cost),
               quantilesTDigestMerge(0.5, 0.95)(DurationMsQuantiles) AS P
        FROM {table}
        {where}
        GROUP BY Bucket, Key
        ORDER BY Bucket, Key"""
    else:
        sql = f"""
        SELECT toStartOfInterval(Timestamp, toIntervalSecond({{step:UInt32}}), 'UTC') AS Bucket, {key} AS Key,
               count(), sum(IsError), sum(InputTokens), sum(OutputTokens), sum(Cost),
               quantiles(0.5, 0.95)(DurationMs) AS P
        FROM llm_calls_costed
        {where}
        GROUP BY Bucket, Key
        ORDER BY Bucket, Key"""
    rows = client.query(sql, parameters={**params, "step": seconds}).result_rows
    return [TimeseriesPoint(_utc(r[0]), str(r[1]), *r[2:7], *r[7]) for r in rows]  # P: p50, p95 (one merge)


def distinct_values(
    client: Client, by: str, flt: CallFilter | None = None, *, limit: int = 1000
) -> list[str]:
    """The values of a grouping column (models, services, users…) seen in ``flt``'s range, most calls first."""
    where, params = where_clause(flt or CallFilter())
    sql = f"SELECT {_group_expression(by)} AS Key FROM llm_calls {where} GROUP BY Key ORDER BY count() DESC, Key LIMIT {{limit:UInt32}}"
    return [str(r[0]) for r in client.query(sql, parameters={**params, "limit": limit}).result_rows]


# ---------------------------------------------------------------- helpers


def _quantiles(function: str) -> str:
    """`function` (quantiles, quantilesTDigestMerge…) at every level stats report."""
    return f"{function}({', '.join(map(str, LATENCY_LEVELS))})"


_QUANTILES = f"{_quantiles('quantiles')}(DurationMs)"
_LATENCY = f"min(DurationMs), avg(DurationMs), {_QUANTILES} AS P, max(DurationMs)"


def _stats_sql(by: str | None, flt: CallFilter, *, top: int | None = None) -> tuple[str, dict[str, Any]]:
    """The aggregates of `_stats_row` per group `by` over the calls matching `flt` (None: one row, even for no
    calls), at least of the `top` groups with the most calls.

    From the by-value rollup where it can answer (by_value.py), else from llm_calls. Cost is linear in tokens
    and a price holds for a model on a day, so the tokens are summed per key, model and day first and only those
    sums are priced (the llm_calls_costed view prices every call: an ASOF join and a model-name match per row,
    seconds on a month of calls). From llm_calls each call's cached tokens are capped at its input tokens before
    summing, exactly as the view does per call; the rollup caps its sums, as the rollups' costed views do."""
    key = _group_expression(by) if by else "'total'"
    select_key = "Key" if by else f"{key} AS Key"
    group = "GROUP BY Key" if by else ""
    chosen = by_value.selection(flt, by)
    if chosen:  # one pass over the day rows: they are few, and their latency digests the costly part
        days, params = by_value.day_rows(chosen, flt, by, key, top=top)
        priced = priced_days(days, "t.InputSum", "t.CachedSum", "t.OutputSum")
        sql = f"""
        SELECT {select_key}, sum(CallCount) AS Calls, sum(ErrorCount) AS Errors, min(MinMs) AS MinMs,
               sum(SumMs) / Calls AS AvgMs, {_quantiles("quantilesTDigestMerge")}(Latency) AS P, max(MaxMs) AS MaxMs,
               sum(InputSum) AS Input, sum(OutputSum) AS Output, sum(CachedSum) AS Cached,
               sum(ReasoningSum) AS Reasoning, sum(DayCost) AS Cost, sumIf(CallCount, DayCost IS NULL) AS Unpriced
        FROM ({priced})
        {group}"""
        return sql, params
    where, params = where_clause(flt)
    day_sums = f"""
        SELECT {key} AS Key, Model, toDate(Timestamp) AS Date, count() AS DayCalls,
               sum(InputTokens) AS Input, sum(least(CachedTokens, InputTokens)) AS CachedInput,
               sum(OutputTokens) AS Output
        FROM llm_calls
        {where}
        GROUP BY Key, Model, Date"""
    sql = f"""
    SELECT Key, Calls, Errors, MinMs, AvgMs, P, MaxMs, Input, Output, Cached, Reasoning, Cost, Unpriced
    FROM (
        SELECT {key} AS Key, count() AS Calls, sum(IsError) AS Errors, min(DurationMs) AS MinMs,
               avg(DurationMs) AS AvgMs, {_QUANTILES} AS P, max(DurationMs) AS MaxMs, sum(InputTokens) AS Input,
               sum(OutputTokens) AS Output, sum(CachedTokens) AS Cached, sum(ReasoningTokens) AS Reasoning
        FROM llm_calls
        {where}
        {group}
    ) AS totals
    LEFT JOIN (
        SELECT {select_key}, sum(DayCost) AS Cost, sumIf(DayCalls, DayCost IS NULL) AS Unpriced
        FROM ({priced_days(day_sums, "t.Input", "t.CachedInput", "t.Output")})
        {group}
    ) AS costs USING (Key)"""
    return sql, params


def priced_days(rows: str, input_tokens: str, cached_tokens: str, output_tokens: str) -> str:
    """`rows` (per Model and Date, as ``t``) with DayCost: their tokens at the price in force that day, NULL when
    the model has none; cached tokens (capped at the input tokens) at the cached price, the rest of the input at the
    input price. One price lookup for all the rows: each costed view a query reads looks prices up again (15 ms on
    its own)."""
    cached = f"least({cached_tokens}, {input_tokens})"
    return f"""
        SELECT t.*, if(p.Model = '', NULL,
               (({input_tokens} - {cached}) * p.InputPerMillion + {cached} * p.CachedInputPerMillion
                + {output_tokens} * p.OutputPerMillion) / 1e6) AS DayCost
        FROM ({rows}) AS t
        LEFT ASOF JOIN model_prices_effective AS p ON {_PRICE_MODEL.format(model="t.Model")} = p.Model
            AND t.Date >= p.ValidFrom"""


# The price a model name matches, as the costed views of migration 0005 match it: its own name, else its name
# without a dated snapshot suffix (gpt-4o-2024-08-06 -> gpt-4o).
_PRICE_MODEL = (
    "if({model} IN (SELECT Model FROM model_prices), {model},"
    " replaceRegexpOne({model}, '-([0-9]{{4}}-[0-9]{{2}}-[0-9]{{2}}|[0-9]{{4}})$', ''))"
)


def _group_expression(by: str) -> str:
    try:
        return GROUPINGS[by]
    except KeyError:
        raise ValueError(f"cannot group by {by!r}: choose one of {', '.join(GROUPINGS)}") from None


def _latency(values: Sequence[Any]) -> Latency:
    low, mean, levels, high = values
    return Latency(min=low, avg=mean, p50=levels[0], p90=levels[1], p95=levels[2], p99=levels[3], max=high)


def _stats_row(row: Sequence[Any]) -> StatsRow:
    key, calls, errors = row[0], row[1], row[2]
    inputs, outputs, cached, reasoning, cost, unpriced = row[7:13]
    return StatsRow(
        str(key), calls, errors, _latency(row[3:7]), inputs, outputs, cached, reasoning, cost, unpriced
    )


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def to_jsonable(value: Any) -> Any:
    """Dataclasses (and lists of them) as JSON-ready dicts: ISO times, tuples as lists, properties included."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        data = {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
        for name in ("status", "error_rate"):
            if hasattr(type(value), name):
                data[name] = getattr(value, name)
        return data
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, Iterable) and not isinstance(value, (str, bytes)):
        return [to_jsonable(v) for v in value]
    return value
