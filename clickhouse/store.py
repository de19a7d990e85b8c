"""Open the store a CLI command queries: a ClickHouse server, the embedded chDB directory, or ``serve``'s API.

Only one process can open a chDB directory. While ``llmtap serve`` holds it, serve announces its local query
endpoint in ``<chDB directory>/llmtap-serve.json`` (``{"pid": …, "query_url": "http://127.0.0.1:PORT"}``);
that endpoint speaks ClickHouse's HTTP interface, so the same clickhouse-connect client and the same SQL work
through it and :mod:`llmtap.clickhouse.queries` never knows the difference.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from llmtap.clickhouse.connection import StoreError, connect, default_dsn, parse_dsn

if TYPE_CHECKING:
    from clickhouse_connect.driver.client import Client

SERVE_FILE = "llmtap-serve.json"


def serve_query_url(chdb_path: str | Path) -> str | None:
    """The query URL of a live ``llmtap serve`` holding ``chdb_path``, or None (no file, or a stale one)."""
    try:
        info = json.loads((Path(chdb_path) / SERVE_FILE).read_text(encoding="utf-8"))
        pid, url = int(info["pid"]), str(info["query_url"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return url if _alive(pid) else None


def open_store(dsn: str | None = None, *, create_database: bool = False) -> Client:
    """A client for ``dsn`` (default: ``$LLMTAP_DSN`` or the embedded store), through serve when it holds it."""
    dsn = dsn or default_dsn()
    target = parse_dsn(dsn)
    if target.is_chdb:
        url = serve_query_url(target.path)
        if url:
            return _serve_client(url, target.database)
        if not Path(target.path).exists() and not create_database:
            raise StoreError(
                f"no llmtap store at {target.path} yet: start `llmtap serve` (or run `llmtap db migrate`) "
                "to create it, or pass --clickhouse/--dsn to query another store"
            )
    return connect(dsn, create_database=create_database)


def is_embedded(client: Client) -> bool:
    """True when the client runs the chDB engine in this process (not a server, not serve's API)."""
    return str(getattr(client, "uri", "")).startswith("chdb:")


def _serve_client(url: str, database: str) -> Client:
    import clickhouse_connect

    try:
        return clickhouse_connect.get_client(dsn=url, database=database, connect_timeout=5)
    except Exception as exc:
        raise StoreError(
            f"`llmtap serve` holds the store but its query API at {url} does not answer: {exc}"
        ) from exc


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    if sys.platform == "win32":  # os.kill(pid, 0) would terminate the process there; trust the file
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True
