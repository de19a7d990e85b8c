"""Read-only SQL over HTTP, for when `llmtap serve` holds the store.

A chDB directory can be opened by one process only, so while serve runs, the CLI (and anything else local)
queries through serve instead of opening the store itself::

    POST /api/query
    Content-Type: application/json
    Authorization: Bearer <token>        (only when serve runs with a token)

    {"query": "SELECT SpanName, count() FROM otel_traces WHERE ServiceName = {svc:String} GROUP BY SpanName",
     "parameters": {"svc": "my-app"},   # ClickHouse server-side bound parameters, {name:Type} in the query
     "format": "JSONEachRow",            # optional; see FORMATS
     "settings": {"max_threads": 2}}     # optional ClickHouse settings

The answer is the raw ClickHouse output in that format (200), or ``{"error": "..."}`` with 400 for a bad
request or a failing query. Queries run in the `otel` database with ``readonly=2`` (no writes, no DDL) and a
time limit. Without a token the API only answers clients on the loopback interface.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

FORMATS = {
    "JSONEachRow": "application/x-ndjson",
    "JSON": "application/json",
    "JSONCompact": "application/json",
    "JSONCompactEachRowWithNamesAndTypes": "application/x-ndjson",
    "CSVWithNames": "text/csv",
    "TabSeparatedWithNames": "text/tab-separated-values",
    "Arrow": "application/vnd.apache.arrow.file",
    "ArrowStream": "application/vnd.apache.arrow.stream",
    "Parquet": "application/vnd.apache.parquet",
    "RowBinaryWithNamesAndTypes": "application/octet-stream",
    "Native": "application/octet-stream",
}
DEFAULT_SETTINGS = {"readonly": 2, "max_execution_time": 120}


class QueryError(ValueError):
    """A query request that cannot be run; the message is returned to the caller."""


class QueryAPI:
    """Runs read-only queries on one shared client (chDB serializes queries on its engine anyway)."""

    def __init__(self, connect: Callable[[], Any], client: Any = None) -> None:
        self._connect = connect
        self._client: Any = client
        self._lock = threading.Lock()

    def handle(self, body: bytes) -> tuple[bytes, str]:
        """Run the query described by a JSON body; returns (output bytes, content type) or raises QueryError."""
        try:
            request = json.loads(body or b"{}")
        except ValueError as exc:
            raise QueryError(f"the body must be JSON: {exc}") from None
        if (
            not isinstance(request, dict)
            or not isinstance(request.get("query"), str)
            or not request["query"].strip()
        ):
            raise QueryError('expected {"query": "<SQL>", "parameters": {...}, "format": "JSONEachRow"}')
        fmt = request.get("format") or "JSONEachRow"
        if fmt not in FORMATS:
            raise QueryError(f"unsupported format {fmt!r}; use one of {', '.join(FORMATS)}")
        parameters = request.get("parameters") or {}
        settings = request.get("settings") or {}
        if not isinstance(parameters, dict) or not isinstance(settings, dict):
            raise QueryError("parameters and settings must be JSON objects")
        settings = {**settings, **DEFAULT_SETTINGS}  # the read-only guard cannot be overridden
        with self._lock:
            try:
                if self._client is None:
                    self._client = self._connect()
                output = self._client.raw_query(
                    request["query"], parameters=parameters, settings=settings, fmt=fmt
                )
            except Exception as exc:
                raise QueryError(
                    str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
                ) from None
        return bytes(output), FORMATS[fmt]

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None
