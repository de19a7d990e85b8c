"""SQL shared by the dashboards and alert rules: the LLM-layer tables, the variable filters and the few
expressions (message text, rates, uncertain answers, a trace's spans) that several panels need.

Every chart and table reads the LLM layer (`llm_calls`, `llm_calls_costed`, the rollups — see `aggregate`),
never the raw `SpanAttributes` maps (only the trace view shows a whole trace from `otel_traces`), and uses the
ClickHouse plugin's macros so Grafana's time picker and interval drive it.
"""

from __future__ import annotations

from collections.abc import Sequence

from llmtap.clickhouse.messages import message_text

CALLS = "llm_calls"
COSTED = "llm_calls_costed"  # llm_calls + Cost (USD, NULL when the model has no price)


def typed(variable: str) -> str:
    """A free-text variable as a SQL string. Percent-encoded by Grafana and decoded by ClickHouse: whatever is
    typed (quotes, backslashes) arrives as plain text and can never end the string literal early, which the
    `singlequote` format cannot promise (a trailing backslash escapes its closing quote)."""
    return f"decodeURLComponent('${{{variable}:percentencode}}')"


# Dashboard variable -> the condition it adds. Wrapped in $__conditionalAll so "All" costs nothing (1=1).
VARIABLE_CONDITIONS: dict[str, str] = {
    "project": "Project IN (${project:singlequote})",
    "service": "ServiceName IN (${service:singlequote})",
    "model": "Model IN (${model:singlequote})",
    "user": "UserId IN (${user:singlequote})",
    "tag": "hasAny(Tags, [${tag:singlequote}])",
    "session": f"SessionId = {typed('session')}",
    "status": "IsError IN (${status:singlequote})",
    "search": (
        f"(positionCaseInsensitiveUTF8(InputMessages, {typed('search')}) > 0"
        f" OR positionCaseInsensitiveUTF8(OutputMessages, {typed('search')}) > 0)"
    ),
}

# The filters every call panel applies, in the order the variables appear on the dashboards.
CALL_FILTERS = ("project", "service", "model", "user", "tag")


def conditional(variable: str) -> str:
    """The filter of one variable, dropped by the plugin when the variable is All or empty."""
    return f"$__conditionalAll({VARIABLE_CONDITIONS[variable]}, ${variable})"


def where(*extra: str, filters: Sequence[str] = CALL_FILTERS, time_column: str | None = "Timestamp") -> str:
    """`WHERE` with the dashboard's time range on `time_column` (None: the caller bounds time in `extra`), the
    variable filters and any extra conditions."""
    time_range = [f"$__timeFilter({time_column})"] if time_column else []
    conditions = [*time_range, *(conditional(name) for name in filters), *extra]
    return "WHERE " + "\n  AND ".join(conditions)


def error_ratio() -> str:
    return "countIf(IsError = 1) / count()"


# Phrases that mark an answer as uncertain (a case-insensitive substring of the response text) are rows of the
# table llm_uncertain_phrases (migration 0007; at insert, llm_calls_judged_mv of 0016 judges each answer once for
# every table that counts uncertain answers), so the dashboards, the alert rule and the rollups share one list that
# needs no rebuild to change.
UNCERTAIN_PHRASES = "(SELECT groupArray(Phrase) FROM llm_uncertain_phrases)"

ANSWER_OPERATIONS = "Operation IN ('chat', 'text_completion', 'generate_content')"


def is_uncertain(column: str = "OutputMessages") -> str:
    """1 when the response text contains one of the phrases of llm_uncertain_phrases."""
    return f"multiSearchAnyCaseInsensitiveUTF8({message_text(column)}, {UNCERTAIN_PHRASES})"


def trace_spans(trace_id: str) -> str:
    """Every span of one trace in the plugin's trace format, for Grafana's trace view.

    The one query that reads `otel_traces` itself: a trace also holds the application's non-LLM spans, and the
    trace view shows each span's attributes. The trace's time bounds come from the exporter's
    `otel_traces_trace_id_ts` lookup table, so the query needs no dashboard time range.
    """
    return f"""WITH (
  SELECT (min(Start), max(End) + INTERVAL 1 SECOND) FROM otel_traces_trace_id_ts WHERE TraceId = {trace_id}
) AS bounds
SELECT
  TraceId AS traceID,
  SpanId AS spanID,
  ParentSpanId AS parentSpanID,
  ServiceName AS serviceName,
  SpanName AS operationName,
  toUnixTimestamp64Nano(Timestamp) / 1000000 AS startTime,
  Duration / 1000000 AS duration,
  arrayMap(key -> map('key', key, 'value', SpanAttributes[key]), mapKeys(SpanAttributes)) AS tags,
  arrayMap(key -> map('key', key, 'value', ResourceAttributes[key]), mapKeys(ResourceAttributes)) AS serviceTags,
  if(StatusCode IN ('Error', 'STATUS_CODE_ERROR'), 2, 0) AS statusCode,
  StatusMessage AS statusMessage
FROM otel_traces
WHERE TraceId = {trace_id} AND Timestamp >= bounds.1 AND Timestamp <= bounds.2
ORDER BY startTime"""
