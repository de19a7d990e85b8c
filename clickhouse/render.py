"""How query results look in a terminal: rich tables for ``logs``, ``stats`` and ``db``, and one call in full.

Pure presentation: functions take the query layer's dataclasses and return rich renderables, so the commands
stay a thin layer of options and the look can change without touching a query.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from llmtap.clickhouse.prices import ModelPrice
from llmtap.clickhouse.queries import CallDetail, CallSummary, Latency, StatsRow
from llmtap.clickhouse.retention import Retention
from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text


def ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value / 1000:.2f} s" if value >= 1000 else f"{value:.0f} ms"


def count(value: int) -> str:
    return f"{value:,}"


def usd(value: float | None) -> str:
    if value is None:
        return "unpriced"
    return f"${value:,.4f}" if value < 100 else f"${value:,.2f}"


def when(moment: datetime) -> str:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def calls_table(calls: Sequence[CallSummary]) -> Table:
    """``llmtap logs``: one line per call, newest first as given."""
    table = Table(box=None, header_style="bold", pad_edge=False)
    for name in ("time", "service", "model", "latency", "tokens in/out", "status"):
        table.add_column(
            name, no_wrap=True, justify="right" if name in ("latency", "tokens in/out") else "left"
        )
    # The prompt column is the one that gives way when the line is too long (its cells are cut, not wrapped).
    table.add_column("prompt", ratio=1)
    table.add_column("id", style="dim", no_wrap=True, min_width=16)
    for call in calls:
        status = Text(call.status, style="red" if call.is_error else "green")
        table.add_row(
            when(call.timestamp), call.service, call.model, ms(call.duration_ms),
            f"{count(call.input_tokens)}/{count(call.output_tokens)}", status,
            Text(call.prompt_preview, no_wrap=True, overflow="ellipsis"), call.span_id,
        )  # fmt: skip
    return table


def call_line(call: CallSummary) -> Text:
    """``--follow`` prints calls as they come, one plain line each."""
    style = "red" if call.is_error else ""
    return Text(
        f"{when(call.timestamp)}  {call.service}  {call.model}  {ms(call.duration_ms)}  "
        f"{call.input_tokens}/{call.output_tokens} tok  {call.status}  {call.prompt_preview}  [{call.span_id}]",
        style=style,
        overflow="ellipsis",
        no_wrap=True,
    )


def call_detail(call: CallDetail) -> Group:
    """``llmtap logs show``: the facts, then the conversation, then the attributes."""
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column()
    rows: list[tuple[str, Any]] = [
        ("time", f"{when(call.timestamp)} ({call.timestamp.isoformat()})"),
        ("trace / span", f"{call.trace_id} / {call.span_id}"),
        ("project / service", f"{call.project or '-'} / {call.service}"),
        ("operation", f"{call.operation} via {call.provider or '-'} {call.server_address}".rstrip()),
        ("model", _model_text(call)),
        ("status", Text(_status_text(call), style="red" if call.is_error else "green")),
        ("latency", ms(call.duration_ms) + (f" (first chunk {ms(call.time_to_first_chunk_ms)})" if call.is_stream else "")),
        ("tokens", f"{count(call.input_tokens)} in ({count(call.cached_tokens)} cached), "
                   f"{count(call.output_tokens)} out ({count(call.reasoning_tokens)} reasoning)"),
        ("cost", usd(call.cost) + (f" at {call.price_model} prices" if call.price_model else "")),
        ("finish reasons", ", ".join(call.finish_reasons) or "-"),
        ("user / session", f"{call.user_id or '-'} / {call.session_id or '-'}"),
        ("tags", ", ".join(call.tags) or "-"),
    ]  # fmt: skip
    if call.redaction_count or call.content_truncated:
        rows.append(("content", f"{call.redaction_count} redaction(s), truncated: {call.content_truncated}"))
    for key, value in rows:
        facts.add_row(key, value)
    parts: list[Any] = [facts]
    for title, content in (
        ("system instructions", call.system_instructions),
        ("input", call.input_messages),
        ("output", call.output_messages),
        ("tool definitions", call.tool_definitions),
    ):
        if content:
            parts.append(Panel(messages_text(content), title=title, title_align="left"))
    if not (call.input_messages or call.output_messages):
        parts.append(Text("(no content recorded, or it expired under the content retention)", style="dim"))
    for title, mapping in (("attributes", call.attributes), ("metadata", call.metadata)):
        if mapping:
            table = Table.grid(padding=(0, 2))
            for key in sorted(mapping):
                table.add_row(Text(key, style="bold"), mapping[key])
            parts.append(Panel(table, title=title, title_align="left"))
    return Group(*parts)


def messages_text(content: str) -> Text:
    """Semconv message JSON ([{role, parts:[…]}]) as 'role: text' blocks; anything else verbatim."""
    try:
        messages = json.loads(content)
    except ValueError:
        return Text(content)
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        return Text(json.dumps(messages, indent=2, ensure_ascii=False))
    text = Text()
    for index, message in enumerate(messages):
        if index:
            text.append("\n")
        text.append(f"{message.get('role', message.get('type', '?'))}: ", style="bold")
        parts = message.get("parts")
        if not isinstance(parts, list):
            text.append(
                json.dumps({k: v for k, v in message.items() if k != "role"}, ensure_ascii=False) + "\n"
            )
            continue
        for part in parts:
            text.append(_part_text(part) + "\n")
    return text


def _part_text(part: Any) -> str:
    if not isinstance(part, dict):
        return str(part)
    kind = part.get("type")
    if kind in ("text", "reasoning", "refusal") and isinstance(part.get("content"), str):
        return part["content"] if kind == "text" else f"[{kind}] {part['content']}"
    if kind == "tool_call":
        return f"[tool call {part.get('name', '')} {part.get('id', '')}] {json.dumps(part.get('arguments'), ensure_ascii=False)}"
    if kind == "tool_call_response":
        return f"[tool result {part.get('id', '')}] {json.dumps(part.get('response'), ensure_ascii=False)}"
    return json.dumps(part, ensure_ascii=False)


def _model_text(call: CallDetail) -> str:
    if call.response_model and call.request_model and call.response_model != call.request_model:
        return f"{call.response_model} (requested {call.request_model})"
    return call.model or "-"


def _status_text(call: CallDetail) -> str:
    if not call.is_error:
        return "ok"
    return " ".join(
        part
        for part in ("error", call.error_type, call.status_message and f"- {call.status_message}")
        if part
    )


def stats_tables(rows: Sequence[StatsRow], total: StatsRow, by: str, period: str) -> Group:
    """``llmtap stats``: traffic (calls, errors, tokens, cost) and latency per group, with totals."""
    traffic = Table(title=f"Calls by {by}, {period}", title_justify="left", header_style="bold")
    traffic.add_column(by)
    for name in (
        "calls",
        "errors",
        "error rate",
        "input tok",
        "cached tok",
        "output tok",
        "reasoning tok",
        "cost",
    ):
        traffic.add_column(name, justify="right")
    latency = Table(title=f"Latency by {by}", title_justify="left", header_style="bold")
    latency.add_column(by)
    for name in ("min", "avg", "p50", "p90", "p95", "p99", "max"):
        latency.add_column(name, justify="right")
    for index, row in enumerate([*rows, total]):
        style = "bold" if index == len(rows) else None
        key = row.key if index < len(rows) else "total"
        traffic.add_row(*_traffic_cells(row, key), style=style, end_section=index == len(rows) - 1)
        latency.add_row(
            key or "(none)", *_latency_cells(row.latency), style=style, end_section=index == len(rows) - 1
        )
    return Group(traffic, latency)


def _traffic_cells(row: StatsRow, key: str) -> list[str]:
    cost = usd(row.cost)
    if row.cost is not None and row.unpriced_calls:
        cost += f" (+{count(row.unpriced_calls)} unpriced)"
    return [
        key or "(none)", count(row.calls), count(row.errors), f"{row.error_rate:.1%}", count(row.input_tokens),
        count(row.cached_tokens), count(row.output_tokens), count(row.reasoning_tokens), cost,
    ]  # fmt: skip


def _latency_cells(latency: Latency) -> list[str]:
    return [
        ms(v)
        for v in (latency.min, latency.avg, latency.p50, latency.p90, latency.p95, latency.p99, latency.max)
    ]


def latency_table(rows: Sequence[tuple[str, int, Latency]], period: str) -> Table:
    """``llmtap stats --latency``: min/avg/p90/max per model, slowest first."""
    table = Table(title=f"Latency by model, {period}", title_justify="left", header_style="bold")
    for name in ("model", "calls", "min", "avg", "p50", "p90", "p95", "p99", "max"):
        table.add_column(name, justify="left" if name == "model" else "right")
    for model, calls, latency in rows:
        table.add_row(model or "(none)", count(calls), *_latency_cells(latency))
    return table


def prices_table(prices: Sequence[ModelPrice]) -> Table:
    table = Table(title="Model prices, USD per million tokens", title_justify="left", header_style="bold")
    for name in ("model", "valid from", "input", "cached input", "output", "source"):
        table.add_column(name, justify="right" if name in ("input", "cached input", "output") else "left")
    for p in prices:
        table.add_row(
            p.model, p.valid_from.isoformat(), f"{p.input_per_million:g}", f"{p.cached_input_per_million:g}",
            f"{p.output_per_million:g}", p.source,
        )  # fmt: skip
    return table


def retention_table(retention: Retention) -> Table:
    table = Table(title="Retention", title_justify="left", header_style="bold")
    table.add_column("data")
    table.add_column("kept", justify="right")
    table.add_column("where")

    def days(value: int | None) -> str:
        return "forever" if value is None else f"{value} days"

    table.add_row("calls (numbers)", days(retention.calls_days), "llm_calls rows")
    table.add_row("content (prompts, responses)", days(retention.content_days), "llm_calls content columns")
    table.add_row("per-minute rollup", days(retention.rollup_days), "llm_calls_1m")
    table.add_row("raw spans (hold the content too)", days(retention.raw_spans_days), "otel_traces")
    return table
