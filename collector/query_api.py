"""Read-only SQL over HTTP, for when `llmtap serve` holds the store.

A chDB directory can be opened by one process only, so while serve runs, the CLI (and anything else local)
queries through serve instead of opening the store itself::

    POST /api/query
    Content-Type: application/json
    Authorization: Bearer <token>        (only when serve runs with a token)

    {"query": "SELECT SpanName, count() FROM otel_traces WHERE ServiceName = {svc:String} GROUP BY SpanName",
     "parameters": {"svc": "my-app"},   # ClickHouse server-side bound parameters, {name:Type} in the query
     "format": "JSONEachRow"}            # optional; see FORMATS

The answer is the raw ClickHouse output in that format (200), ``{"error": "..."}`` with 400 for a bad request or
a failing query, or 503 with Retry-After while every session is busy. Without a token the API only answers
clients on the loopback interface, and browsers only from serve's own origin (:mod:`llmtap.collector.cross_origin`).

Queries run on sessions of their own, opened with :data:`PROFILE`: ``readonly=1`` set last freezes the time and
memory limits and the output settings (ClickHouse then refuses SETTINGS, SET and table functions), and
:mod:`llmtap.collector.query_check` lets through only one SELECT over the store's tables. A request may carry
``"settings"`` only as the profile already has them (the export sends its output settings).
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Callable
from typing import Any

from llmtap.collector.query_check import QueryError, checked_statement, first_line

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
SESSIONS = 2  # queries run at once: one long query leaves the CLI a session
WAIT_SECONDS = 10.0  # for a free session, then 503
# The query API's settings profile, in the order applied: readonly=1 comes last and freezes all before it.
PROFILE: dict[str, Any] = {
    "max_execution_time": 120,
    # A query may use an eighth of the machine's memory (two at once, a quarter), and never more than 2 GiB.
    "max_memory_usage": min(2 << 30, os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 8),
    # Both sessions together may use every core, but neither alone: the writer gets its turn.
    "max_threads": max(1, (os.cpu_count() or 2) // SESSIONS),
    # JSON numbers for 64-bit integers, ISO 8601 times in UTC: what JSON and CSV readers expect.
    "output_format_json_quote_64bit_integers": 0,
    "date_time_output_format": "iso",
    "session_timezone": "UTC",
    "readonly": 1,
}
# A server-side bound parameter, {name:Type}. With none in the query, clickhouse-connect would bind parameters by
# Python %-formatting into the text, so a "parameter" could add SQL.
_PLACEHOLDER = re.compile(r"\{\s*\w+\s*:")


class QueryBusy(Exception):
    """Every session is running a query; the caller should retry after ``retry_after`` seconds."""

    retry_after = 5


class QueryAPI:
    """Runs checked read-only queries on a few sessions of their own (chDB runs queries on several at once)."""

    def __init__(self, connect: Callable[[], Any], database: str, hold: Any = None) -> None:
        """``connect`` opens a session with :data:`PROFILE`; ``hold`` is a client kept open until close()
        (it keeps the chDB engine, and so the store's lock, held while the writer reconnects)."""
        self._connect = connect
        self._database = database
        self._hold = hold
        self._idle: list[Any] = []
        self._free = threading.BoundedSemaphore(SESSIONS)
        self._lock = threading.Lock()
        self._closed = False

    def handle(self, body: bytes) -> tuple[bytes, str]:
        """Run the query described by a JSON body; returns (output bytes, content type).

        Raises QueryError for a request the API does not run and QueryBusy when no session frees in time."""
        request = _request(body)
        if not self._free.acquire(timeout=WAIT_SECONDS):
            raise QueryBusy(f"llmtap serve is running {SESSIONS} queries already; retry later")
        try:
            client = self._session()
            try:
                statement = checked_statement(client, request["query"], request["parameters"], self._database)
                output = client.raw_query(statement, parameters=request["parameters"], fmt=request["format"])
            except Exception as exc:
                # A query that failed part-way can leave its session unusable (the next answer on it garbled).
                client.close()
                if isinstance(exc, QueryError):
                    raise
                raise QueryError(first_line(exc)) from None
            self._give_back(client)
        finally:
            self._free.release()
        return bytes(output), FORMATS[request["format"]]

    def _session(self) -> Any:
        with self._lock:
            if self._closed:
                raise QueryBusy("llmtap serve is stopping")
            if self._idle:
                return self._idle.pop()
        try:
            return self._connect()
        except Exception as exc:
            raise QueryError(f"the store is not available: {first_line(exc)}") from None

    def _give_back(self, client: Any) -> None:
        with self._lock:
            if not self._closed:
                self._idle.append(client)
                return
        client.close()  # a query that ran on while serve stopped

    def close(self, wait: float = 5.0) -> None:
        """Close every session, after the queries running on them end (up to ``wait`` seconds; a query still
        running then closes its session when it ends)."""
        deadline = time.monotonic() + wait
        taken = 0
        with self._lock:
            self._closed = True
        while taken < SESSIONS and self._free.acquire(timeout=max(0.0, deadline - time.monotonic())):
            taken += 1
        with self._lock:
            clients, self._idle = self._idle, []
            if self._hold is not None:
                clients.append(self._hold)
                self._hold = None
        for client in clients:
            client.close()
        for _ in range(taken):
            self._free.release()


def _request(body: bytes) -> dict[str, Any]:
    """The request's query, parameters and format, checked; a caller's settings only as the profile has them."""
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
    if not _PLACEHOLDER.search(request["query"]):
        parameters = {}  # nothing to bind them to; given to the client, they would be %-formatted into the text
    changed = sorted(name for name, value in settings.items() if str(PROFILE.get(name)) != str(value))
    if changed:
        raise QueryError(
            f"settings are fixed by llmtap serve's query API ({', '.join(changed)}); it runs with "
            + ", ".join(f"{name}={value}" for name, value in PROFILE.items())
        )
    return {"query": request["query"], "parameters": parameters, "format": fmt}
