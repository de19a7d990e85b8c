"""How query results look in a terminal: rich tables for ``logs``, ``stats`` and ``db``, and one call in full.

Pure presentation: functions take the query layer's dataclasses and return rich renderables, so the commands
stay a thin layer of options and the look can change without touching a query.

The tables of calls and stats are :class:`FittedTable` s, laid out for the width they are printed at: an
80-column terminal shows fewer columns rather than ids, models and numbers cut short.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from llmtap.clickhouse.prices import ModelPrice
from llmtap.clickhouse.queries import AmbiguousIdError, CallDetail, CallSummary, Latency, StatsRow
from llmtap.clickhouse.retention import CALLS, CONTENT, Retention
from rich import box
from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

#: A flexible column (the prompt preview) is shown only when it gets this many characters (or all it needs).
FLEXIBLE_MIN_WIDTH = 24


def ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value / 1000:.2f} s" if value >= 1000 else f"{value:.0f} ms"


def count(value: int) -> str:
    return f"{value:,}"


def usd(value: float | None) -> str:
    if value is None:
        return "unpriced"
    if 0 < value < 0.0001:
        return "<$0.0001"  # one call of a cheap model: $0.0000 would read as free
    return f"${value:,.4f}" if value < 100 else f"${value:,.2f}"


def when(moment: datetime) -> str:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


_TIME_OF_DAY, _DAY_AND_TIME = "%H:%M:%S", "%m-%d %H:%M:%S"


def _is_today(moment: datetime) -> bool:
    return moment.astimezone().date() == date.today()


def _short_time(moment: datetime) -> str:
    """The time of day of a call of today, else its day and time without the year."""
    return moment.astimezone().strftime(_TIME_OF_DAY if _is_today(moment) else _DAY_AND_TIME)


# ---------------------------------------------------------------- tables fitted to the width


@dataclass(frozen=True)
class Column:
    """A column of a :class:`FittedTable`, and how it may give way when the table is too wide."""

    header: str
    cells: Sequence[str | Text]
    footer: str = ""
    right: bool = False
    style: str = ""
    flexible: bool = False  # takes the width left over, its cells cut with … (the prompt preview)
    fold: bool = False  # breaks onto more lines when even the last layout is too wide

    @property
    def width(self) -> int:
        """Characters its widest line takes (a flexible column: at most FLEXIBLE_MIN_WIDTH)."""
        texts = [self.header, self.footer, *(str(cell) for cell in self.cells)]
        widest = max(cell_len(line) for text in texts for line in text.split("\n"))
        return min(widest, FLEXIBLE_MIN_WIDTH) if self.flexible else widest


@dataclass(frozen=True)
class Layout:
    """The columns a table shows and the spaces between them."""

    columns: Sequence[Column]
    gap: int = 2

    @property
    def width(self) -> int:
        return sum(column.width for column in self.columns) + self.gap * (len(self.columns) - 1)

    def table(self, *, squeeze: bool = False, **options: Any) -> Table:
        """The rich table; ``squeeze``: its fold columns may break onto more lines."""
        table = Table(
            box=box.SIMPLE, show_edge=False, pad_edge=False, padding=(0, self.gap - 1, 0, 0),
            header_style="bold", footer_style="bold", show_footer=any(c.footer for c in self.columns), **options,
        )  # fmt: skip
        for column in self.columns:
            table.add_column(
                column.header, footer=column.footer, justify="right" if column.right else "left",
                style=column.style, no_wrap=not (column.flexible or (squeeze and column.fold)),
                overflow="fold" if column.fold else "ellipsis",
            )  # fmt: skip
        for row in zip(*(column.cells for column in self.columns), strict=True):
            table.add_row(*row)
        return table


class FittedTable:
    """A table laid out when it is printed: the first of its layouts (fullest first) that fits the width.

    Rich fits a table that is too wide by cutting cells (an id to 11 characters, a cost to `$0.0…`); the
    layouts say instead what a narrower terminal does without. When even the last is too wide, its fold
    columns (names, never ids or numbers) break onto more lines.
    """

    def __init__(self, layouts: Sequence[Layout], **options: Any) -> None:
        self.layouts, self.options = layouts, options

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        fitting = next((layout for layout in self.layouts if layout.width <= options.max_width), None)
        yield (fitting or self.layouts[-1]).table(squeeze=fitting is None, **self.options)


def _spaced(columns: Sequence[Column], **options: Any) -> FittedTable:
    """The columns two spaces apart, or one when that is what fits."""
    return FittedTable([Layout(columns), Layout(columns, gap=1)], **options)


# ---------------------------------------------------------------- calls


def calls_table(calls: Sequence[CallSummary]) -> FittedTable:
    """``llmtap logs``: one line per call, newest first as given.

    Time, model, latency, tokens, cost, status and id are always there, whole; the service and the start of
    the prompt when the width allows. Narrower (80 columns), the time of day, single spaces, then "error" for
    any error type keep each call on one line.
    """
    return FittedTable([
        _calls_layout(calls, service=True, prompt=True),
        _calls_layout(calls, service=True),
        _calls_layout(calls),
        _calls_layout(calls, compact=True),
        _calls_layout(calls, compact=True, error_types=False),
    ])  # fmt: skip


def _calls_layout(
    calls: Sequence[CallSummary], *, service: bool = False, prompt: bool = False, compact: bool = False,
    error_types: bool = True,
) -> Layout:  # fmt: skip
    columns = [_time_column(calls, compact)]
    if service:
        columns.append(Column("service", [call.service for call in calls]))
    columns += [
        Column("model", [call.model for call in calls], fold=True),
        Column("latency", [ms(call.duration_ms) for call in calls], right=True),
        Column("tokens" if compact else "tokens in/out", [_tokens(call) for call in calls], right=True),
        Column("cost", [usd(call.cost) for call in calls], right=True),
        Column("status", [_status(call, error_types) for call in calls], fold=True),
        Column("id", [call.span_id for call in calls], style="dim"),
    ]
    if prompt:
        previews = [Text(call.prompt_preview, no_wrap=True, overflow="ellipsis") for call in calls]
        columns.append(Column("prompt", previews, flexible=True))
    return Layout(columns, gap=1 if compact else 2)


def _time_column(calls: Sequence[CallSummary], compact: bool) -> Column:
    """Date and time; compact, the time of day under "today" when all the calls are of today, else no year."""
    if not compact:
        return Column("time", [when(call.timestamp) for call in calls])
    today = all(_is_today(call.timestamp) for call in calls)
    times = [call.timestamp.astimezone().strftime(_TIME_OF_DAY if today else _DAY_AND_TIME) for call in calls]
    return Column("today" if today else "time", times)


def _tokens(call: CallSummary) -> str:
    return f"{count(call.input_tokens)}/{count(call.output_tokens)}"


def _status(call: CallSummary, with_error_type: bool) -> Text:
    status = call.status if with_error_type or not call.is_error else "error"
    return Text(status, style="red" if call.is_error else "green")


def call_line(call: CallSummary, width: int) -> Text:
    """``--follow`` prints calls as they come, one line each: the table's facts first and whole (the line
    wraps rather than cut them), then the service and the start of the prompt if what is left of ``width``
    holds FLEXIBLE_MIN_WIDTH characters."""
    line = Text(
        f"{_short_time(call.timestamp)}  {call.model}  {ms(call.duration_ms)}  {_tokens(call)} tok  "
        f"{usd(call.cost)}  {call.status}  {call.span_id}",
        style="red" if call.is_error else "",
    )
    rest = Text(f"  {call.service}  {call.prompt_preview}")
    room = width - line.cell_len
    if room >= FLEXIBLE_MIN_WIDTH:
        rest.truncate(room, overflow="ellipsis")
        line.append(rest)
    return line


def ambiguous_id(error: AmbiguousIdError) -> str:
    """What ``logs show`` says of a prefix that starts several ids: the newest of them, to pick from."""
    lines = [
        f"{error.prefix!r} starts {'more than ' if error.more else ''}{len(error.matches)} ids: "
        "give more characters of the one you mean. The newest:"
    ]
    for match in error.matches:
        calls = f" ({match.calls} calls)" if match.calls > 1 else ""
        lines.append(
            f"  {when(match.timestamp)}  {match.kind:<5}  {match.id:<32}  {', '.join(match.models)}{calls}"
        )
    return "\n".join(lines)


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
    keys = [row.key or "(none)" for row in rows]
    traffic = [Column(by, keys, footer="total", fold=True)]
    for header, cell in _TRAFFIC:
        traffic.append(Column(header, [cell(row) for row in rows], footer=cell(total), right=True))
    latency = [
        Column(by, keys, footer="total", fold=True),
        *_latency_columns([r.latency for r in rows], total.latency),
    ]
    unpriced = (
        f"* not counting calls of models with no price: {count(total.unpriced_calls)} (llmtap db prices)"
    )
    return Group(
        _spaced(traffic, title=f"Calls by {by}, {period}", title_justify="left", caption_justify="left",
                caption=unpriced if _cost(total).endswith("*") else None),
        _spaced(latency, title=f"Latency by {by}", title_justify="left"),
    )  # fmt: skip


def _cost(row: StatsRow) -> str:
    """The group's cost, starred when it leaves out calls of models with no price."""
    return usd(row.cost) + ("*" if row.cost is not None and row.unpriced_calls else "")


# Header (on two lines, so the columns stay narrow) and cell of each number of the traffic table.
_TRAFFIC: list[tuple[str, Callable[[StatsRow], str]]] = [
    ("calls", lambda row: count(row.calls)),
    ("errors", lambda row: count(row.errors)),
    ("error\nrate", lambda row: f"{row.error_rate:.1%}"),
    ("input\ntok", lambda row: count(row.input_tokens)),
    ("cached\ntok", lambda row: count(row.cached_tokens)),
    ("output\ntok", lambda row: count(row.output_tokens)),
    ("reasoning\ntok", lambda row: count(row.reasoning_tokens)),
    ("cost", _cost),
]


def _latency_columns(latencies: Sequence[Latency], total: Latency | None = None) -> list[Column]:
    """min, avg, p50 … max, a column each (the total's in the footer)."""
    return [
        Column(
            field.name,
            [ms(getattr(latency, field.name)) for latency in latencies],
            footer=ms(getattr(total, field.name)) if total else "",
            right=True,
        )
        for field in dataclasses.fields(Latency)
    ]


def latency_table(rows: Sequence[tuple[str, int, Latency]], period: str) -> FittedTable:
    """``llmtap stats --latency``: min/avg/p90/max per model, slowest first."""
    columns = [
        Column("model", [model or "(none)" for model, _, _ in rows], fold=True),
        Column("calls", [count(calls) for _, calls, _ in rows], right=True),
        *_latency_columns([latency for _, _, latency in rows]),
    ]
    return _spaced(columns, title=f"Latency by model, {period}", title_justify="left")


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


_RETAINED = {CONTENT: "content (prompts, responses)", CALLS: "calls (numbers)"}
_TABLE_LABELS = {"llm_calls": "llm_calls rows", "otel_traces": "otel_traces (raw spans)"}


def retention_table(retention: Retention) -> Table:
    """One row per horizon and length, naming its tables: a table whose TTL strays from its horizon's (or that
    has none, "forever") gets a row of its own."""
    table = Table(title="Retention", title_justify="left", header_style="bold")
    table.add_column("data")
    table.add_column("kept", justify="right")
    table.add_column("where")
    where = {(CONTENT, retention.content_days): ["llm_calls content columns"]}
    for kept in retention.tables:
        where.setdefault((kept.horizon, kept.days), []).append(_TABLE_LABELS.get(kept.table, kept.table))
    for (horizon, days), tables in where.items():
        table.add_row(_RETAINED[horizon], "forever" if days is None else f"{days} days", ", ".join(tables))
    return table
