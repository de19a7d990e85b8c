"""Re-sort a table into the ORDER BY its migration now declares, for stores made before that order changed.

ClickHouse cannot change a MergeTree's sort order in place, so a new order reaches an existing store by a copy:
a table made from the live definition with the new ORDER BY (keeping its TTLs, so a retention set by
`llmtap db retention` survives, and its codecs, indexes and settings), filled with every row, then swapped with
the old one in a single EXCHANGE. Views and materialized views name the table, so from the swap on they read
and feed the new one.

A writer (the contrib collector on a server, say) may add rows to the old table while it is copied. After the
swap those rows are copied too, but through a staging table whose partitions are attached: attaching does not
fire the rollups' materialized views, which counted the rows on their way into the old table. The one gap is an
insert that is still writing into the old table when its late rows are read: stop the writers to rule it out.

An interrupted re-sort is safe to run again: before the swap the partial copy is dropped and made anew; after
it, the left-behind old table is finished (its late rows copied) and dropped.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from clickhouse_connect.driver.client import Client

_ORDER_BY = re.compile(r"\bORDER BY\s+", re.IGNORECASE)


class ResortError(RuntimeError):
    """The table cannot be re-sorted here; the message says why."""


def declared_order(create_sql: str, table: str) -> str:
    """The ORDER BY expression of ``CREATE TABLE IF NOT EXISTS <table>`` in a migration's SQL."""
    start = re.search(rf"CREATE TABLE IF NOT EXISTS {re.escape(table)}\b", create_sql)
    if not start:
        raise ResortError(f"no CREATE TABLE {table} in the migration")
    engine = create_sql.find("ENGINE", start.end())  # past the columns, whose projections may sort too
    return _order_by(create_sql, engine)[0]


def resort(client: Client, table: str, order_by: str) -> bool:
    """Give ``table`` the sort key ``order_by`` if it has another; True when this call changed the store."""
    spare = f"{table}_resort"  # before the swap the new copy, after it the old table
    engine, sorting_key, create_query = _live(client, table)
    if _same_key(sorting_key, order_by):
        if not _exists(client, spare):
            return False
        _copy_late(client, spare, table, since=0)  # a run cut off after the swap
        client.command(f"DROP TABLE {spare} SYNC")
        return True
    if engine != "MergeTree":
        raise ResortError(
            f"{table} is a {engine} table; re-sort only applies to a single node's MergeTree "
            "(a cluster's tables are re-made by hand, see docs/scaling.md)"
        )
    client.command(f"DROP TABLE IF EXISTS {spare} SYNC")  # a copy cut off before the swap
    client.command(_with_order(create_query, spare, order_by))
    # Parts the old table gets from here on (inserts, or merges) mark the partitions to look at after the swap.
    since = client.query("SELECT toUnixTimestamp(now()) - 1").result_rows[0][0]
    client.command(f"INSERT INTO {spare} SELECT * FROM {table}")
    client.command(f"EXCHANGE TABLES {table} AND {spare}")
    _copy_late(client, spare, table, since)
    client.command(f"DROP TABLE {spare} SYNC")
    return True


def _copy_late(client: Client, old: str, table: str, since: int) -> None:
    """Copy the rows of `old` that `table` lacks, from the partitions `old` changed in since the copy began
    (a Unix time; 0 for all of them), without firing the views on `table`."""
    staging = f"{table}_resort_late"
    client.command(f"DROP TABLE IF EXISTS {staging} SYNC")
    client.command(f"CREATE TABLE {staging} AS {table}")
    changed = client.query(
        "SELECT DISTINCT partition_id FROM system.parts WHERE database = currentDatabase() "
        "AND table = {t:String} AND active AND toUnixTimestamp(modification_time) >= {since:UInt32}",
        parameters={"t": old, "since": since},
    ).result_rows
    for (partition,) in changed:  # one partition at a time, so the set of ids stays small
        client.command(
            f"INSERT INTO {staging} SELECT * FROM {old} WHERE _partition_id = {{p:String}} "
            f"AND (TraceId, SpanId) NOT IN (SELECT TraceId, SpanId FROM {table} WHERE _partition_id = {{p:String}})",
            parameters={"p": partition},
        )
    for (partition,) in changed:
        client.command(
            f"ALTER TABLE {table} ATTACH PARTITION ID {{p:String}} FROM {staging}",
            parameters={"p": partition},
        )
    client.command(f"DROP TABLE {staging} SYNC")


def _live(client: Client, table: str) -> tuple[str, str, str]:
    """The table's engine, sorting key and CREATE statement."""
    rows = client.query(
        "SELECT engine, sorting_key, create_table_query FROM system.tables "
        "WHERE database = currentDatabase() AND name = {t:String}",
        parameters={"t": table},
    ).result_rows
    if not rows:
        raise ResortError(f"no table {table} in this database")
    engine, sorting_key, create_query = rows[0]
    return engine, sorting_key, create_query


def _exists(client: Client, table: str) -> bool:
    return bool(
        client.query(
            "SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = {t:String}",
            parameters={"t": table},
        ).result_rows[0][0]
    )


def _same_key(sorting_key: str, order_by: str) -> bool:
    """system.tables' sorting_key ("a, f(b)") against an ORDER BY expression ("(a, f(b))")."""
    declared = order_by.strip()
    if declared.startswith("(") and _order_by(f"ORDER BY {declared}", 0)[0] == declared:
        declared = declared[1:-1]
    return re.sub(r"\s+", "", sorting_key) == re.sub(r"\s+", "", declared)


def _with_order(create_query: str, name: str, order_by: str) -> str:
    """The live CREATE TABLE statement renamed to `name` with `order_by` for its ORDER BY."""
    head = re.match(r"CREATE TABLE \S+", create_query)
    if not head:
        raise ResortError(f"unexpected table definition: {create_query[:80]}")
    old, end = _order_by(create_query, create_query.rfind(" ENGINE = "))
    start = end - len(old)
    return f"CREATE TABLE {name}{create_query[head.end() : start]}{order_by}{create_query[end:]}"


def _order_by(sql: str, position: int) -> tuple[str, int]:
    """The ORDER BY expression after `position` (a parenthesised tuple or one term) and where it ends."""
    match = _ORDER_BY.search(sql, position)
    if not match:
        raise ResortError("no ORDER BY in the table definition")
    start = end = match.end()
    if sql[start] != "(":
        end = re.compile(r"[^\s;]+").match(sql, start).end()  # type: ignore[union-attr]
        return sql[start:end], end
    depth = 0
    for end, char in enumerate(sql[start:], start):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth == 0:
            return sql[start : end + 1], end + 1
    raise ResortError("unbalanced ORDER BY in the table definition")
