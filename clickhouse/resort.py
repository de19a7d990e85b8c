"""Re-sort a table into the ORDER BY its migration now declares, for stores made before that order changed.

ClickHouse cannot change a MergeTree's sort order in place, so a new order reaches an existing store by a copy:
a table made from the live definition with the new ORDER BY (keeping its TTLs, so a retention set by
`llmtap db retention` survives, and its codecs, indexes and settings), filled partition by partition, then
swapped with the old one in a single EXCHANGE. Views and materialized views name the table, so from the swap on
they read and feed the new one. The copy needs as much free disk as the table takes.

A writer (the contrib collector on a server, say) may add rows to the old table while it is copied. After the
swap those rows are copied too, but through a staging table whose partitions are attached: attaching does not
fire the rollups' materialized views, which counted the rows on their way into the old table. The one gap is an
insert that is still writing into the old table when its late rows are read: stop the writers to rule it out.

An interrupted re-sort is safe to run again: before the swap the partial copy is dropped and made anew; after
it, the left-behind old table is finished (its late rows copied) and dropped. A run refuses to start while
another one's statements are running, and to swap when another run swapped first; two runs started at the
same instant on one server can still race, so run one `llmtap db migrate` (or one `serve`) at a time.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

    from clickhouse_connect.driver.client import Client

_ORDER_BY = re.compile(r"\bORDER BY\s+", re.IGNORECASE)
# A copy keeps every row, even a block identical to one copied before it, whatever a server version makes of the
# tables' de-duplication window (migration 0017) for an INSERT SELECT without a token.
_COPY = {"insert_deduplicate": 0}


class ResortError(RuntimeError):
    """The table cannot be re-sorted here; the message says why."""


def declared_order(statements: Sequence[str], table: str) -> str:
    """The ORDER BY tuple of the ``CREATE TABLE IF NOT EXISTS <table>`` among a migration's statements."""
    for statement in statements:
        if re.match(rf"CREATE TABLE IF NOT EXISTS {re.escape(table)}\b", statement):
            return _order_by(statement, _engine_clause(statement))[0]
    raise ResortError(f"the migration does not create {table}")


def table_exists(client: Client, name: str) -> bool:
    """Whether the client's current database has a table (or view) of that name."""
    return bool(
        client.query(
            "SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = {t:String}",
            parameters={"t": name},
        ).result_rows[0][0]
    )


def resort(client: Client, table: str, order_by: str) -> bool:
    """Give ``table`` the sort key ``order_by`` if it has another; True when this call changed the store."""
    spare = f"{table}_resort"  # before the swap the new copy, after it the old table
    engine, sorting_key, create_query = _live(client, table)
    if _same_key(client, sorting_key, order_by):
        if not table_exists(client, spare):
            return False
        _refuse_a_second_run(client, table, spare)
        _copy_late(client, spare, table, since=0)  # a run cut off after the swap
        client.command(f"DROP TABLE {spare} SYNC")
        return True
    _check_can_resort(client, table, engine)
    _refuse_a_second_run(client, table, spare)
    client.command(f"DROP TABLE IF EXISTS {spare} SYNC")  # a copy cut off before the swap
    client.command(_with_order(create_query, spare, order_by))
    # Parts the old table gets from here on (inserts, or merges) mark the partitions to look at after the swap.
    since = client.query("SELECT toUnixTimestamp(now()) - 1").result_rows[0][0]
    for partition in _partitions(client, table):  # bounded memory, and within max_partitions_per_insert_block
        client.command(
            f"INSERT INTO {spare} SELECT * FROM {table} WHERE _partition_id = {{p:String}}",
            parameters={"p": partition},
            settings=_COPY,
        )
    if _same_key(client, _live(client, table)[1], order_by):
        raise ResortError(f"another run re-sorted {table} meanwhile; run the migration again to finish")
    client.command(f"EXCHANGE TABLES {table} AND {spare}")
    _copy_late(client, spare, table, since)
    client.command(f"DROP TABLE {spare} SYNC")
    return True


def _check_can_resort(client: Client, table: str, engine: str) -> None:
    """Refuse before copying anything what would fail later."""
    if engine != "MergeTree":
        raise ResortError(
            f"{table} is a {engine} table; re-sort only applies to a single node's MergeTree "
            "(a cluster's tables are re-made by hand, see docs/scaling.md)"
        )
    database = client.query("SELECT engine FROM system.databases WHERE name = currentDatabase()")
    if (
        database.result_rows[0][0] != "Atomic"
    ):  # a Replicated one would swap every replica but copy on this one
        raise ResortError(f"the database engine is {database.result_rows[0][0]}; re-sort needs an Atomic one")


def _refuse_a_second_run(client: Client, table: str, spare: str) -> None:
    """Stop when another client is running statements on `spare` (two starts of serve on one server, say)."""
    others = client.query(
        "SELECT count() FROM system.processes WHERE query_id != queryID() AND position(query, {s:String}) > 0",
        parameters={"s": spare},
    )
    if others.result_rows[0][0]:
        raise ResortError(f"another re-sort of {table} is running; let it finish")


def _copy_late(client: Client, old: str, table: str, since: int) -> None:
    """Copy the rows of `old` that `table` lacks, from the partitions `old` changed in since the copy began
    (a Unix time; 0 for all of them), without firing the views on `table`."""
    changed = _partitions(client, old, since)
    if not changed:
        return
    staging = f"{table}_resort_late"
    client.command(f"DROP TABLE IF EXISTS {staging} SYNC")
    client.command(f"CREATE TABLE {staging} AS {table}")
    for partition in changed:  # one partition at a time, so the set of ids stays small
        client.command(
            f"INSERT INTO {staging} SELECT * FROM {old} WHERE _partition_id = {{p:String}} AND (TraceId, SpanId) "
            f"NOT IN (SELECT TraceId, SpanId FROM {table} WHERE _partition_id = {{p:String}})",
            parameters={"p": partition},
            settings=_COPY,
        )
        client.command(
            f"ALTER TABLE {table} ATTACH PARTITION ID {{p:String}} FROM {staging}",
            parameters={"p": partition},
        )
    client.command(f"DROP TABLE {staging} SYNC")


def _partitions(client: Client, table: str, since: int = 0) -> list[str]:
    """The partitions of `table` with an active part written at or after `since` (a Unix time)."""
    rows = client.query(
        "SELECT DISTINCT partition_id FROM system.parts WHERE database = currentDatabase() "
        "AND table = {t:String} AND active AND toUnixTimestamp(modification_time) >= {since:UInt32} "
        "ORDER BY partition_id",
        parameters={"t": table, "since": since},
    ).result_rows
    return [partition for (partition,) in rows]


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


def _same_key(client: Client, sorting_key: str, order_by: str) -> bool:
    """system.tables' sorting_key ("a, f(b)") against an ORDER BY tuple ("(a, f(b))"), both as ClickHouse
    formats them (so `INTERVAL 1 HOUR` and `toIntervalHour(1)` are the same)."""
    same = client.query(
        "SELECT formatQuerySingleLine(concat('SELECT ', {live:String})) "
        "= formatQuerySingleLine(concat('SELECT ', {declared:String}))",
        parameters={"live": sorting_key, "declared": order_by[1:-1]},
    )
    return bool(same.result_rows[0][0])


def _with_order(create_query: str, name: str, order_by: str) -> str:
    """The live CREATE TABLE statement renamed to `name` with `order_by` for its ORDER BY."""
    head = re.match(r"CREATE TABLE \S+", create_query)
    if not head:
        raise ResortError(f"unexpected table definition: {create_query[:80]}")
    old, end = _order_by(create_query, _engine_clause(create_query))
    start = end - len(old)
    return f"CREATE TABLE {name}{create_query[head.end() : start]}{order_by}{create_query[end:]}"


def _engine_clause(create: str) -> int:
    """Where the ENGINE clause starts: past the columns, whose projections may have an ORDER BY of their own."""
    match = re.search(r"\)\s*ENGINE\s*=", create)
    if not match:
        raise ResortError(f"no ENGINE clause in: {create[:80]}")
    return match.start()


def _order_by(sql: str, position: int) -> tuple[str, int]:
    """The parenthesised ORDER BY tuple after `position`, and where it ends."""
    match = _ORDER_BY.search(sql, position)
    if not match or not sql.startswith("(", match.end()):
        raise ResortError("the table's ORDER BY must be a parenthesised tuple")
    depth = 0
    for end in range(match.end(), len(sql)):
        depth += {"(": 1, ")": -1}.get(sql[end], 0)
        if depth == 0:
            return sql[match.end() : end + 1], end + 1
    raise ResortError("unbalanced ORDER BY in the table definition")
