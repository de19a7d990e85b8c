"""How long the store keeps calls and their content, read from and written to the tables' TTLs.

Two horizons: the numbers (llm_calls rows and their rollups, `ROLLUPS`) and the content (prompt, response, system
instructions, tool definitions). The content columns carry their own, shorter column TTL, so prompts expire
while charts keep their history. The raw spans in ``otel_traces`` hold the same prompts in their attributes, so
their row TTL follows the content horizon. ClickHouse applies a changed TTL to existing parts in the background
(``materialize_ttl_after_modify``), and drops expired days whole (``ttl_only_drop_parts``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from clickhouse_connect.driver.client import Client

CONTENT_COLUMNS = ("InputMessages", "OutputMessages", "SystemInstructions", "ToolDefinitions")
DEFAULT_CONTENT_DAYS = 30
DEFAULT_CALLS_DAYS = 400
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


@dataclass(frozen=True)
class Retention:
    """Days kept; None means the table or column has no TTL (kept forever)."""

    calls_days: int | None
    content_days: int | None
    rollup_days: int | None
    raw_spans_days: int | None


def current_retention(client: Client) -> Retention:
    """The TTLs now in force, parsed from the tables' definitions."""
    tables = {
        name: (engine, create)
        for name, engine, create in client.query(
            "SELECT name, engine_full, create_table_query FROM system.tables "
            "WHERE database = currentDatabase() AND name IN ('llm_calls', 'llm_calls_1m', 'otel_traces')"
        ).result_rows
    }
    calls_engine, calls_create = tables.get("llm_calls", ("", ""))
    return Retention(
        calls_days=_table_ttl_days(calls_engine),
        content_days=_column_ttl_days(calls_create, CONTENT_COLUMNS[0]),
        rollup_days=_table_ttl_days(tables.get("llm_calls_1m", ("", ""))[0]),
        raw_spans_days=_table_ttl_days(tables.get("otel_traces", ("", ""))[0]),
    )


def set_retention(
    client: Client, *, calls_days: int | None = None, content_days: int | None = None
) -> Retention:
    """Change the horizons given (whole days, at least 1); content never outlives the calls. Returns the new TTLs."""
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
    if calls_days is not None:
        for rollup, time_column in ROLLUPS:
            client.command(f"ALTER TABLE {rollup} MODIFY TTL {time_column} + INTERVAL {int(calls_days)} DAY")
    if content_days is not None:
        client.command(
            f"ALTER TABLE otel_traces MODIFY TTL toDateTime(Timestamp) + INTERVAL {int(content_days)} DAY"
        )
    return current_retention(client)


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
