"""Open the store a CLI command queries: a ClickHouse server, the embedded chDB directory, or ``serve``'s API.

Only one process can open a chDB directory. While ``llmtap serve`` holds it, serve announces itself in a
discovery file next to the store (:mod:`llmtap.collector.discovery`); the CLI then queries through serve's
read-only API (:class:`~llmtap.clickhouse.serve_client.ServeClient`) with the very same query layer.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmtap.clickhouse.connection import StoreError, connect, default_dsn, parse_dsn

if TYPE_CHECKING:
    from clickhouse_connect.driver.client import Client


def running_serve(dsn: str) -> Any | None:
    """The ``ServeInfo`` of a live ``llmtap serve`` holding this chDB store, else None."""
    try:
        from llmtap.collector.discovery import find_serve
    except ImportError:  # a build without the collector: nothing can hold the store
        return None
    return find_serve(dsn)


def open_store(dsn: str | None = None, *, create_database: bool = False, writable: bool = False) -> Client:
    """A client for ``dsn`` (default: ``$LLMTAP_DSN`` or the embedded store), through serve when it holds it.

    ``writable`` commands (migrations, retention, prices) cannot go through serve's read-only API: they get a
    clear error asking to stop serve instead.
    """
    dsn = dsn or default_dsn()
    target = parse_dsn(dsn)
    if target.is_chdb:
        serve = running_serve(dsn)
        if serve is not None:
            if writable:
                raise StoreError(
                    f"`llmtap serve` (pid {serve.pid}) holds {target.path}: stop it to change the schema, "
                    "retention or prices (serve applies pending migrations itself when it starts)"
                )
            from llmtap.clickhouse.serve_client import ServeClient

            return ServeClient(serve)  # type: ignore[return-value]
        if not Path(target.path).exists() and not create_database:
            raise StoreError(
                f"no llmtap store at {target.path} yet: start `llmtap serve` (or run `llmtap db migrate`) "
                "to create it, or pass --clickhouse/--dsn to query another store"
            )
    return connect(dsn, create_database=create_database)
