"""How query results look in a terminal: rich tables for ``logs``, ``stats`` and ``db``, and one call in full.

Pure presentation: functions take the query layer's dataclasses and return rich renderables, so the commands
stay a thin layer of options and the look can change without touching a query.

The tables of calls and stats are :class:`FittedTable` s, laid out for the width they are printed at: a narrow
terminal shows fewer columns rather than ids, models and numbers cut short or folded onto more lines.
"""

from __future__ import annotations

import bisect
import dataclasses
import json
from collections.abc import Callable, Sequence, Set
from dataclasses import dataclass
from datetime import date, datetime
from functools import partial
from typing import Any, Literal

from llmtap.clickhouse.prices import ModelPrice
from llmtap.clickhouse.queries import AmbiguousIdError, CallDetail, CallSummary, Latency, StatsRow
from llmtap.clickhouse.retention import CALLS, CONTENT, Retention
from rich import box
from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.measure import Measurement
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

#: The prompt preview is shown only when it gets this many characters (or all it needs).
PROMPT_MIN_WIDTH = 24


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


def _times(moments: Sequence[datetime], without: Set[str]) -> tuple[str, list[str]]:
    """A header and the moments, ``without`` the "date" (the year; the day too when all are of today, as the
    header says) or the "seconds"."""
    if "date" not in without:
        return "time", list(map(when, moments))
    today = all(moment.astimezone().date() == date.today() for moment in moments)
    layout = ("%H:%M" if today else "%m-%d %H:%M") + ("" if "seconds" in without else ":%S")
    return "today" if today else "time", [moment.astimezone().strftime(layout) for moment in moments]


# ---------------------------------------------------------------- tables fitted to the width

# How rich lays out each kind of column. Once a table fits, every cell is whole on one line; when even its
# narrowest layout does not, names and ids fold onto more lines, never cut. The prompt is measured at no more
# than PROMPT_MIN_WIDTH and, its table expanded, takes whatever width is left, cut with "…".
_KINDS: dict[str, dict[str, Any]] = {
    "name": {"overflow": "fold"},
    "id": {"overflow": "fold", "style": "dim"},
    "number": {"justify": "right", "no_wrap": True},
    "time": {"no_wrap": True},
    "prompt": {"no_wrap": True, "max_width": PROMPT_MIN_WIDTH, "ratio": 1},
}


@dataclass(frozen=True)
class Column:
    """A column's cells, laid out as its ``kind`` says."""

    header: str
    cells: Sequence[str | Text]
    kind: Literal["name", "id", "number", "time", "prompt"]
    footer: str = ""


def _table(columns: Sequence[Column], without: Set[str], **options: Any) -> Table:
    """A rich table with no borders of the columns not headed by a name in ``without``, two spaces apart
    unless it names "double spaces"."""
    shown = [column for column in columns if column.header not in without]
    space = int("double spaces" not in without)  # a second space after each column
    table = Table(
        box=box.SIMPLE, show_edge=False, pad_edge=False, padding=(0, space, 0, 0),
        header_style="bold", footer_style="bold", title_justify="left", caption_justify="left",
        show_footer=any(c.footer for c in shown), expand=any(c.kind == "prompt" for c in shown), **options,
    )  # fmt: skip
    for column in shown:
        table.add_column(column.header, footer=column.footer, **_KINDS[column.kind])
    for row in zip(*(column.cells for column in shown), strict=True):
        table.add_row(*row)
    return table


class FittedTable:
    """A table laid out for the width it is printed at, where rich would cut cells short (ids, models, costs):
    ``layout(without)`` with ``without`` the fewest of ``left_out``, taken in order, that make it fit. Should
    all of them not be enough, names and ids fold onto more lines (rich folds the widest first: the model)."""

    def __init__(self, layout: Callable[[Set[str]], Table], left_out: Sequence[str]) -> None:
        self.layout, self.left_out = layout, left_out

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        # Rich measures a table no wider than the width it is given: one column more tells if it needs more.
        wider = options.update_width(options.max_width + 1)

        def fits(count_left_out: int) -> bool:
            table = self._without(count_left_out)
            return Measurement.get(console, wider, table).maximum <= options.max_width

        # Leaving more out never widens a table, so the fewest that fit are found by halving (measuring a
        # table reads every cell: a long `logs -n` would pay for each layout tried).
        yield self._without(bisect.bisect_left(range(len(self.left_out)), True, key=fits))

    def _without(self, count_left_out: int) -> Table:
        return self.layout(set(self.left_out[:count_left_out]))


# ---------------------------------------------------------------- calls

# What narrower terminals leave out of `llmtap logs`, one more at a time: the prompt, the service, the date
# (the time of day for calls of today, else no year), the double spaces, the error type ("error"), then the
# tokens before the seconds: the tokens take more room, the cost sums them up and `logs show` has them, while
# the seconds are few characters and order the calls of one minute.
_CALLS_LEFT_OUT = ("prompt", "service", "date", "double spaces", "error type", "tokens", "seconds")


def calls_table(calls: Sequence[CallSummary]) -> FittedTable:
    """``llmtap logs``: one line per call, newest first as given.

    Time, model, latency, cost, status and id are always there, whole; narrower terminals leave out the
    rest, the prompt first and the seconds last, to keep each call on one line. A terminal narrower than that
    (at 70 columns, calls of several days with a dated model) folds the model, and then the id, onto more
    lines: neither is ever cut.
    """
    return FittedTable(partial(_calls_layout, calls), _CALLS_LEFT_OUT)


def _calls_layout(calls: Sequence[CallSummary], without: Set[str]) -> Table:
    header, times = _times([call.timestamp for call in calls], without)
    tokens = "tokens" if "double spaces" in without else "tokens in/out"
    columns = [
        Column(header, times, "time"),
        Column("service", [call.service for call in calls], "name"),
        Column("model", [call.model for call in calls], "name"),
        Column("latency", [ms(call.duration_ms) for call in calls], "number"),
        Column(tokens, [_tokens(call) for call in calls], "number"),
        Column("cost", [usd(call.cost) for call in calls], "number"),
        Column("status", [_status(call, "error type" not in without) for call in calls], "name"),
        Column("id", [call.span_id for call in calls], "id"),
        Column("prompt", [Text(call.prompt_preview) for call in calls], "prompt"),
    ]
    return _table(columns, without)


def _tokens(call: CallSummary) -> str:
    return f"{count(call.input_tokens)}/{count(call.output_tokens)}"


def _status(call: CallSummary, with_error_type: bool) -> Text:
    status = call.status if with_error_type or not call.is_error else "error"
    return Text(status, style="red" if call.is_error else "green")


def call_line(call: CallSummary, width: int) -> Text:
    """``--follow`` prints calls as they come, one line each: the table's facts first and whole (the line
    wraps rather than cut them), then the service and the start of the prompt if what is left of ``width``
    holds PROMPT_MIN_WIDTH characters."""
    _, [time] = _times([call.timestamp], {"date"})
    line = Text(
        f"{time}  {call.model}  {ms(call.duration_ms)}  {_tokens(call)} tok  "
        f"{usd(call.cost)}  {call.status}  {call.span_id}",
        style="red" if call.is_error else "",
    )
    rest = Text(f"  {call.service}  {call.prompt_preview}")
    room = width - line.cell_len
    if room >= PROMPT_MIN_WIDTH:
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
    """``llmtap stats``: traffic (calls, errors, tokens, cost) and latency per group, with totals; narrower
    terminals leave out some (see _STATS_LEFT_OUT) before folding the group's name onto more lines."""
    group = Column(by, [row.key or "(none)" for row in rows], "name", footer="total")
    traffic = [
        Column(header, [cell(row) for row in rows], "number", cell(total)) for header, cell in _TRAFFIC
    ]
    unpriced = (
        f"* not counting calls of models with no price: {count(total.unpriced_calls)} (llmtap db prices)"
    )
    return Group(
        _stats_table([group, *traffic], title=f"Calls by {by}, {period}",
                     caption=unpriced if _cost(total).endswith("*") else None),
        _stats_table([group, *_latency_columns([row.latency for row in rows], total.latency)],
                     title=f"Latency by {by}"),
    )  # fmt: skip


# What narrower terminals leave out of the stats tables, one more at a time: the cached and reasoning
# tokens (often zero), the double spaces, the error rate (errors / calls), then the minimum latency (it says
# little of what users wait) and p95 (p90 and p99 bracket it).
_STATS_LEFT_OUT = ("cached\ntok", "reasoning\ntok", "double spaces", "error\nrate", "min", "p95")


def _stats_table(columns: Sequence[Column], **options: Any) -> FittedTable:
    return FittedTable(partial(_table, columns, **options), _STATS_LEFT_OUT)


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

    def column(name: str) -> Column:
        footer = ms(getattr(total, name)) if total else ""
        return Column(name, [ms(getattr(latency, name)) for latency in latencies], "number", footer)

    return [column(field.name) for field in dataclasses.fields(Latency)]


def latency_table(rows: Sequence[tuple[str, int, Latency]], period: str) -> FittedTable:
    """``llmtap stats --latency``: min/avg/p90/max per model, slowest first."""
    columns = [
        Column("model", [model or "(none)" for model, _, _ in rows], "name"),
        Column("calls", [count(calls) for _, calls, _ in rows], "number"),
        *_latency_columns([latency for _, _, latency in rows]),
    ]
    return _stats_table(columns, title=f"Latency by model, {period}")


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
