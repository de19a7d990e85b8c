"""LLM call: one call in full — summary, prompt, response, custom attributes and the trace it belongs to.

Opened from the explorer and failure tables with `var-trace_id` and `var-span_id`; without a span id it shows
every LLM call of the trace. Queries find the call through the trace's time bounds (the exporter's
`otel_traces_trace_id_ts` table), so they work whatever time range the dashboard shows.
"""

from __future__ import annotations

from grafana_foundation_sdk.models.dashboard import Dashboard
from llmtap.clickhouse import messages
from llmtap.grafana import links, panels, sql, variables
from llmtap.grafana.board import Board

UID = links.CALL_UID

_TRACE_ID = sql.typed("trace_id")
_THE_CALL = f"""WHERE TraceId = {_TRACE_ID}
  AND $__conditionalAll(SpanId = {sql.typed("span_id")}, $span_id)
  AND Timestamp >= (SELECT min(Start) FROM otel_traces_trace_id_ts WHERE TraceId = {_TRACE_ID})
  AND Timestamp <= (SELECT max(End) + INTERVAL 1 SECOND FROM otel_traces_trace_id_ts WHERE TraceId = {_TRACE_ID})"""

_SUMMARY_FIELDS = (
    ("Time", "toString(Timestamp)"),
    ("Service", "ServiceName"),
    ("Project", "Project"),
    ("Operation", "Operation"),
    ("Provider", "Provider"),
    ("Requested model", "RequestModel"),
    ("Response model", "ResponseModel"),
    ("Status", "if(IsError = 1, concat('error: ', ErrorType, ' ', StatusMessage), 'ok')"),
    ("Latency (ms)", "toString(round(DurationMs, 1))"),
    ("Time to first chunk (ms)", "ifNull(toString(round(TimeToFirstChunkMs, 1)), '')"),
    ("Streamed", "if(IsStream = 1, 'yes', 'no')"),
    ("Input tokens", "toString(InputTokens)"),
    ("Output tokens", "toString(OutputTokens)"),
    ("Cached input tokens", "toString(CachedTokens)"),
    ("Reasoning tokens", "toString(ReasoningTokens)"),
    ("Cost (USD)", "ifNull(toString(round(Cost, 6)), 'unpriced')"),
    ("Finish reasons", "arrayStringConcat(FinishReasons, ', ')"),
    ("User", "UserId"),
    ("Session", "SessionId"),
    ("Tags", "arrayStringConcat(Tags, ', ')"),
    ("Prompt hash", "PromptHash"),
    ("Redactions", "toString(RedactionCount)"),
    ("Trace id", "TraceId"),
    ("Span id", "SpanId"),
)


def _summary_sql() -> str:
    pairs = ",\n    ".join(f"('{name}', {expression})" for name, expression in _SUMMARY_FIELDS)
    return f"""SELECT SpanId AS Call, field.1 AS Field, field.2 AS Value
FROM {sql.COSTED}
ARRAY JOIN [
    {pairs}
] AS field
{_THE_CALL}
ORDER BY Timestamp"""


def _messages_sql(column: str) -> str:
    """One row per message of a messages column: its position, role and text."""
    return f"""SELECT SpanId AS Call, message.1 AS Position, JSONExtractString(message.2, 'role') AS Role,
  {messages.message_text("concat('[', message.2, ']')", "message.2")} AS Content
FROM {sql.CALLS}
ARRAY JOIN arrayZip(arrayEnumerate(JSONExtractArrayRaw({column})), JSONExtractArrayRaw({column})) AS message
{_THE_CALL}"""


def _prompt_sql() -> str:
    """System instructions first (position 0), then the input messages."""
    return f"""SELECT * FROM (
SELECT SpanId AS Call, 0 AS Position, 'system' AS Role, {messages.message_text("SystemInstructions")} AS Content
FROM {sql.CALLS}
{_THE_CALL}
  AND SystemInstructions != ''
UNION ALL
{_messages_sql("InputMessages")}
)
ORDER BY Call, Position"""


def dashboard() -> Dashboard:
    board = Board(
        UID,
        "LLM call",
        "One LLM call: its prompt, response, attributes and trace.",
        [
            variables.datasource(),
            variables.text("trace_id", "Trace id"),
            variables.text("span_id", "Span id (empty: every LLM call of the trace)"),
        ],
    )
    board.add(
        panels.grid("Call", "What was called, how it went and what it cost.", _summary_sql(), units={}), 9, 12
    )
    board.add(
        panels.grid(
            "Attributes",
            "Custom attributes (llmtap.attributes()) and the OpenAI metadata= argument of the call.",
            f"""SELECT SpanId AS Call, attribute.1 AS Kind, attribute.2 AS Key, attribute.3 AS Value
FROM {sql.CALLS}
ARRAY JOIN arrayConcat(
  arrayMap((k, v) -> ('attribute', k, v), mapKeys(Attributes), mapValues(Attributes)),
  arrayMap((k, v) -> ('metadata', k, v), mapKeys(Metadata), mapValues(Metadata))
) AS attribute
{_THE_CALL}
ORDER BY Call, Kind, Key""",
            units={},
        ),
        15,
        12,
    )
    for title, description, query in (
        ("Prompt", "System instructions, then the input messages in order", _prompt_sql()),
        ("Response", "The output messages", f"{_messages_sql('OutputMessages')}\nORDER BY Call, Position"),
    ):
        board.add(
            panels.grid(
                title,
                f"{description} (text parts; tool calls and other parts as raw JSON).",
                query,
                units={"Position": "none"},
                wrap_text=True,
            ),
            12,
            12,
        )
    board.add(
        panels.trace_view(
            "Trace",
            "Every span of the trace, the application's own spans included.",
            sql.trace_spans(_TRACE_ID),
        ),
        24,
        14,
    )
    return board.build()
