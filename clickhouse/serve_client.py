"""A stand-in for a clickhouse-connect client that runs queries through ``llmtap serve``'s query API.

While serve holds the chDB store, no other process can open it; serve answers read-only SQL on
``POST /api/query`` (:mod:`llmtap.collector.query_api`). This class offers the part of the client API the query
layer uses — ``query`` (rows as Python values), ``query_arrow`` and ``raw_stream`` (bytes in a ClickHouse
output format) —
so :mod:`llmtap.clickhouse.queries` and :mod:`llmtap.clickhouse.export` run unchanged through it. Rows travel
as Arrow (typed, so times, maps, arrays and NULLs come back as they would from clickhouse-connect).
Writes (migrations, retention, prices) are refused with a message saying to stop serve first.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from llmtap.clickhouse.connection import StoreError


@dataclass(frozen=True)
class ServeResult:
    """The two attributes of a clickhouse-connect QueryResult the query layer reads."""

    column_names: tuple[str, ...]
    result_rows: list[tuple[Any, ...]]


class ServeClient:
    """Queries through a running serve, found by :func:`llmtap.collector.discovery.find_serve`."""

    def __init__(self, info: Any) -> None:
        self._info = info
        self.uri = info.url
        self.database = "otel"

    def query(
        self, query: str, parameters: dict[str, Any] | None = None, settings: dict[str, Any] | None = None
    ) -> ServeResult:
        table = self.query_arrow(query, parameters, settings)
        columns = [_python_values(column) for column in table.columns]
        return ServeResult(tuple(table.column_names), list(zip(*columns, strict=True)) if columns else [])

    def query_arrow(
        self, query: str, parameters: dict[str, Any] | None = None, settings: dict[str, Any] | None = None
    ) -> Any:
        """The result as a pyarrow Table (as clickhouse-connect's ``query_arrow`` returns it)."""
        import pyarrow as pa

        return pa.ipc.open_stream(self._run(query, parameters, "ArrowStream", settings)).read_all()

    def raw_stream(
        self,
        query: str,
        parameters: dict[str, Any] | None = None,
        settings: dict[str, Any] | None = None,
        fmt: str = "JSONEachRow",
    ) -> io.BytesIO:
        # serve answers a query as one body; the API offers CSV only with its header line, which callers of
        # raw_stream("CSV") write themselves, so it is dropped here.
        if fmt == "CSV":
            output = self._run(query, parameters, "CSVWithNames", settings)
            return io.BytesIO(output[output.find(b"\n") + 1 :] if output else b"")
        return io.BytesIO(self._run(query, parameters, fmt, settings))

    def command(self, *args: Any, **kwargs: Any) -> Any:
        raise StoreError(self._read_only())

    def insert(self, *args: Any, **kwargs: Any) -> Any:
        raise StoreError(self._read_only())

    def close(self) -> None:
        """Nothing to release: each query is its own HTTP request."""

    def _run(
        self, query: str, parameters: dict[str, Any] | None, fmt: str, settings: dict[str, Any] | None
    ) -> bytes:
        from llmtap.collector.discovery import ServeQueryError, query_serve

        try:
            return query_serve(self._info, query, parameters or {}, fmt, settings or {})
        except ServeQueryError as exc:
            raise StoreError(str(exc)) from None

    def _read_only(self) -> str:
        return (
            f"`llmtap serve` (pid {self._info.pid}) holds this store and its query API is read-only: "
            "stop serve to change the schema, retention or prices (serve applies pending migrations when it starts)"
        )


def _python_values(column: Any) -> Sequence[Any]:
    """An Arrow column as the Python values clickhouse-connect would return (maps as dicts, µs datetimes)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = column.type
    if pa.types.is_timestamp(kind) and kind.unit == "ns":
        column = pc.cast(column, pa.timestamp("us", kind.tz), safe=False)
    if pa.types.is_dictionary(kind):
        column = column.cast(kind.value_type)
    values = column.to_pylist()
    if pa.types.is_map(column.type):
        return [dict(value) if value is not None else None for value in values]
    return values
