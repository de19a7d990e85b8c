"""How long the store keeps calls and their content, read from and written to the tables' TTLs.

Two horizons. The content horizon covers everything that holds prompts and responses: llm_calls' content columns
(a column TTL, so charts keep their history after the prompts are gone), the raw spans in ``otel_traces`` (the
same prompts sit in their attributes and events), the log records in ``otel_logs`` (GenAI log events carry the
messages) and the spans' trace-id lookup, which points at them. The calls horizon covers the numbers: llm_calls'
rows, their rollups (`ROLLUPS`) and the metrics tables. Each horizon's length is the one llm_calls carries (its
content-column TTL and its row TTL, 30 and 400 days from migration 0003), and every other table follows it.

ClickHouse applies a changed TTL to existing parts (``materialize_ttl_after_modify``: a background mutation on a
server, awaited by chDB) and drops expired days whole (``ttl_only_drop_parts``), also a day inserted already
expired.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from clickhouse_connect.driver.client import Client

log = logging.getLogger("llmtap.store")

CONTENT_COLUMNS = ("InputMessages", "OutputMessages", "SystemInstructions", "ToolDefinitions")
CONTENT = "content"
CALLS = "calls"
# TTL expressions as ClickHouse normalises them in SHOW CREATE: "... + toIntervalDay(30)".
_TTL_DAYS = re.compile(r"toIntervalDay\((\d+)\)|INTERVAL\s+(\d+)\s+DAY", re.IGNORECASE)
# The tables derived from the calls, on the numbers horizon (the rollups, and the answers by user and tag), and their
# time columns.
ROLLUPS = (
    ("llm_calls_1m", "Minute"),
    ("llm_calls_1h", "Hour"),
    ("llm_calls_1d", "Day"),
    ("llm_calls_by_value_1d", "Day"),
    ("llm_calls_by_value_1h", "Hour"),
    ("llm_answers_1m", "Minute"),
    ("llm_answers_1h", "Hour"),
    ("llm_answers_by_value", "toDateTime(Timestamp)"),
)
_METRICS = ("gauge", "sum", "histogram", "exponential_histogram", "summary")
# Every table on each horizon and the time its rows expire from (for the exporter's tables, the exporter's own).
# llm_calls is on both: its rows on the calls horizon, its content columns on the content one.
TABLES = {
    CONTENT: (
        ("otel_traces", "toDateTime(Timestamp)"),
        ("otel_traces_trace_id_ts", "toDateTime(Start)"),
        ("otel_logs", "toDateTime(Timestamp)"),
    ),
    CALLS: (
        ("llm_calls", "toDateTime(Timestamp)"),
        *ROLLUPS,
        *((f"otel_metrics_{kind}", "toDateTime(TimeUnix)") for kind in _METRICS),
    ),
}
_EXPIRES_FROM = {table: time for tables in TABLES.values() for table, time in tables}


@dataclass(frozen=True)
class TableRetention:
    """How long one table keeps its rows; days None means it has no TTL (kept forever)."""

    table: str
    horizon: str
    days: int | None


@dataclass(frozen=True)
class Retention:
    """The two horizons (llm_calls' row and content-column TTLs; None: kept forever) and every table on them."""

    calls_days: int | None
    content_days: int | None
    tables: tuple[TableRetention, ...]


def current_retention(client: Client) -> Retention:
    """The TTLs now in force, parsed from the tables' definitions (tables the store lacks are left out)."""
    found = {
        name: (engine, create)
        for name, engine, create in client.query(
            "SELECT name, engine_full, create_table_query FROM system.tables "
            "WHERE database = currentDatabase() AND name IN {names:Array(String)}",
            parameters={"names": list(_EXPIRES_FROM)},
        ).result_rows
    }
    calls_engine, calls_create = found.get("llm_calls", ("", ""))
    return Retention(
        calls_days=_table_ttl_days(calls_engine),
        content_days=_column_ttl_days(calls_create, CONTENT_COLUMNS[0]),
        tables=tuple(
            TableRetention(table, horizon, _table_ttl_days(found[table][0]))
            for horizon, tables in TABLES.items()
            for table, _ in tables
            if table in found
        ),
    )


def set_retention(
    client: Client, *, calls_days: int | None = None, content_days: int | None = None
) -> Retention:
    """Change the horizons given (whole days, at least 1) on every table of each; content never outlives the
    calls. Returns the new TTLs."""
    before = current_retention(client)
    calls = calls_days if calls_days is not None else before.calls_days
    content = content_days if content_days is not None else before.content_days
    for name, days in (("calls", calls_days), ("content", content_days)):
        if days is not None and days < 1:
            raise ValueError(f"{name} retention must be at least 1 day, got {days}")
    if calls is not None and content is not None and content > calls:
        raise ValueError(
            f"content retention ({content} days) cannot be longer than calls retention ({calls} days)"
        )
    # One ALTER of llm_calls for all its TTLs: each ALTER re-applies the TTLs to every part (a mutation, which
    # chDB waits for), so five of them took five times as long (25 s each on 150 daily parts).
    calls_actions = []
    if content_days is not None:
        calls_actions += [
            f"MODIFY COLUMN {column} String TTL toDateTime(Timestamp) + INTERVAL {int(content_days)} DAY "
            "CODEC(ZSTD(3))"
            for column in CONTENT_COLUMNS
        ]
    if calls_days is not None:  # last: a TTL clause would take a following comma as the start of another TTL
        calls_actions.append(f"MODIFY TTL toDateTime(Timestamp) + INTERVAL {int(calls_days)} DAY")
    if calls_actions:
        client.command(f"ALTER TABLE llm_calls {', '.join(calls_actions)}")
    changed = {CONTENT: content_days, CALLS: calls_days}
    for kept in before.tables:
        days = changed[kept.horizon]
        if days is not None and kept.table != "llm_calls":
            _modify_ttl(client, kept.table, days)
    return current_retention(client)


def limit_tables_kept_forever(client: Client) -> list[TableRetention]:
    """Give each table of a horizon that has no TTL the horizon's days, so a new store keeps nothing forever and
    an older one's raw spans, logs and metrics follow the retention it already has; a TTL already set is left
    alone. Returns the tables that held rows (a new store's empty tables are not news)."""
    now = current_retention(client)
    horizon = {CONTENT: now.content_days, CALLS: now.calls_days}
    unlimited = [kept for kept in now.tables if kept.days is None and horizon[kept.horizon] is not None]
    rows = _rows(client, [kept.table for kept in unlimited])
    limited = []
    for kept in unlimited:
        days = horizon[kept.horizon]
        assert days is not None
        if rows.get(kept.table):
            # Said first: chDB removes the expired rows before the ALTER returns, which may take a while.
            log.info("%s was kept forever: keeping %d days, removing older rows", kept.table, days)
            limited.append(TableRetention(kept.table, kept.horizon, days))
        _modify_ttl(client, kept.table, days)
    return limited


def _rows(client: Client, tables: list[str]) -> dict[str, int]:
    if not tables:
        return {}
    return dict(
        client.query(
            "SELECT name, total_rows FROM system.tables WHERE database = currentDatabase() "
            "AND name IN {names:Array(String)}",
            parameters={"names": tables},
        ).result_rows
    )


def _modify_ttl(client: Client, table: str, days: int) -> None:
    client.command(f"ALTER TABLE {table} MODIFY TTL {_EXPIRES_FROM[table]} + INTERVAL {int(days)} DAY")


def _table_ttl_days(engine_full: str) -> int | None:
    """Days of the table TTL in ``system.tables.engine_full`` ("... TTL <expr> SETTINGS ...")."""
    match = re.search(r"\bTTL\b(.*?)(?:\bSETTINGS\b|$)", engine_full)
    return _days(match.group(1)) if match else None


def _column_ttl_days(create_sql: str, column: str) -> int | None:
    """Days of a column TTL in ``create_table_query`` ("`Col` String CODEC(ZSTD(3)) TTL <expr>, ...")."""
    match = re.search(rf"`{column}` String\b(.*?)(?:, `|\) ENGINE)", create_sql)
    if not match or "TTL" not in match.group(1):
        return None
    return _days(match.group(1).split("TTL", 1)[1])


def _days(expression: str) -> int | None:
    match = _TTL_DAYS.search(expression)
    return int(match.group(1) or match.group(2)) if match else None
