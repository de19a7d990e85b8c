"""Export calls as JSON lines, CSV or Parquet in time order, with memory bounded whatever the export's size.

A single ``ORDER BY Timestamp`` over a month would make ClickHouse sort every exported row (prompts included)
in memory. So the range is cut into consecutive chunks of about :data:`CHUNK_ROWS` calls (whole hours, from a
count per hour), and each chunk is one sorted query: output is in time order, and memory holds one chunk.
ClickHouse encodes the rows itself: JSONEachRow and CSV bytes are copied from clickhouse-connect's
``raw_stream`` to the output; Parquet chunks arrive as Arrow tables and are appended to one file as row groups.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from llmtap.clickhouse.filters import CallFilter, where_clause

if TYPE_CHECKING:
    from clickhouse_connect.driver.client import Client

FORMATS = {"jsonl": "JSONEachRow", "csv": "CSV", "parquet": "Parquet"}
CHUNK_ROWS = 50_000

# Exported columns: everything llm_calls_costed has. CSV has no nested types, so arrays and maps become JSON text
# there; JSON lines and Parquet keep them as arrays and objects/maps.
_COLUMNS = (
    "Timestamp", "TraceId", "SpanId", "ParentSpanId", "Project",
    "ServiceName", "SpanName", "Operation", "Provider", "RequestModel", "ResponseModel", "Model", "ResponseId",
    "ServerAddress", "Duration", "DurationMs", "StatusCode", "StatusMessage", "IsError", "ErrorType",
    "InputTokens", "OutputTokens", "CachedTokens", "ReasoningTokens", "FinishReasons", "IsStream",
    "TimeToFirstChunkMs", "UserId", "SessionId", "Tags", "PromptHash", "RedactionCount", "ContentTruncated",
    "Attributes", "Metadata", "InputMessages", "OutputMessages", "SystemInstructions", "ToolDefinitions",
    "PriceModel", "Cost",
)  # fmt: skip
_NESTED = ("FinishReasons", "Tags", "Attributes", "Metadata")
_SETTINGS = {
    # Tokens as JSON numbers, not quoted strings.
    "output_format_json_quote_64bit_integers": 0,
    # ISO 8601 times in UTC (2026-11-23T10:45:32.018963000Z) in JSON lines and CSV, UTC in Parquet.
    "date_time_output_format": "iso",
    "session_timezone": "UTC",
}
_READ = 1 << 20


@dataclass(frozen=True)
class ExportResult:
    rows: int
    bytes: int


ProgressCallback = Callable[[int, int], None]  # (bytes written so far, calls written so far)


def export_sql(flt: CallFilter, fmt: str) -> tuple[str, dict[str, Any]]:
    """The SELECT of one chunk of an export (no FORMAT clause) with its bound parameters."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}: choose one of {', '.join(FORMATS)}")
    columns = [f"toJSONString({c}) AS {c}" if fmt == "csv" and c in _NESTED else c for c in _COLUMNS]
    where, params = where_clause(flt)
    return f"SELECT {', '.join(columns)} FROM llm_calls_costed {where} ORDER BY Timestamp, SpanId", params


def chunks(client: Client, flt: CallFilter, *, rows: int = CHUNK_ROWS) -> list[tuple[CallFilter, int]]:
    """``flt`` cut into consecutive time ranges of about ``rows`` calls each (an hour is never split), oldest
    first, with the number of calls in each."""
    where, params = where_clause(flt)
    hours = client.query(
        f"SELECT toUnixTimestamp(toStartOfHour(Timestamp)) AS H, count() FROM llm_calls {where} GROUP BY H ORDER BY H",
        parameters=params,
    ).result_rows
    pieces: list[tuple[CallFilter, int]] = []
    start: datetime | None = None
    count = 0
    for hour, calls in hours:
        moment = datetime.fromtimestamp(hour, tz=timezone.utc)
        if start is not None and count + calls > rows:
            pieces.append((_between(flt, start, moment), count))
            start, count = None, 0
        start = start or moment
        count += calls
    if start is not None:
        last = datetime.fromtimestamp(hours[-1][0], tz=timezone.utc) + timedelta(hours=1)
        pieces.append((_between(flt, start, last), count))
    return pieces


def _between(flt: CallFilter, start: datetime, end: datetime) -> CallFilter:
    since = max(start, flt.since) if flt.since else start
    until = min(end, flt.until) if flt.until else end
    return dataclasses.replace(flt, since=since, until=until)


def csv_header() -> bytes:
    return (",".join(f'"{name}"' for name in _COLUMNS) + "\n").encode()


def export_calls(
    client: Client,
    flt: CallFilter,
    fmt: str,
    out: IO[bytes],
    *,
    progress: ProgressCallback | None = None,
    pieces: list[tuple[CallFilter, int]] | None = None,
) -> ExportResult:
    """Write the calls matching ``flt`` to ``out`` as JSON lines or CSV, oldest first (``pieces``: the
    :func:`chunks` of ``flt`` when the caller already has them, e.g. to size a progress bar)."""
    if fmt not in ("jsonl", "csv"):
        raise ValueError(f"export_calls writes jsonl or csv, not {fmt!r} (see export_parquet)")
    report = progress or (lambda _bytes, _rows: None)
    written = rows = 0
    if fmt == "csv":
        header = csv_header()
        out.write(header)
        written += len(header)
    for piece, count in pieces if pieces is not None else chunks(client, flt):
        sql, params = export_sql(piece, fmt)
        with client.raw_stream(sql, parameters=params, settings=_SETTINGS, fmt=FORMATS[fmt]) as stream:
            while data := stream.read(_READ):
                out.write(data)
                written += len(data)
                report(written, rows)
        rows += count
        report(written, rows)
    out.flush()
    return ExportResult(rows=rows, bytes=written)


def export_parquet(
    client: Client,
    flt: CallFilter,
    path: Path,
    *,
    progress: ProgressCallback | None = None,
    pieces: list[tuple[CallFilter, int]] | None = None,
) -> ExportResult:
    """Write the calls matching ``flt`` to a Parquet file, one row group per chunk, oldest first."""
    import pyarrow.parquet as pq

    report = progress or (lambda _bytes, _rows: None)
    rows = 0
    writer = None
    try:
        for piece, _count in pieces if pieces is not None else chunks(client, flt):
            sql, params = export_sql(piece, "parquet")
            table = client.query_arrow(sql, parameters=params, settings=_SETTINGS)
            if writer is None:
                writer = pq.ParquetWriter(path, table.schema, compression="zstd")
            writer.write_table(table.cast(writer.schema))
            rows += table.num_rows
            report(path.stat().st_size, rows)
        if writer is None:  # nothing matched: still a valid, empty file with the export's columns
            sql, params = export_sql(flt, "parquet")
            empty = client.query_arrow(f"{sql} LIMIT 0", parameters=params, settings=_SETTINGS)
            writer = pq.ParquetWriter(path, empty.schema, compression="zstd")
    finally:
        if writer is not None:
            writer.close()
    size = path.stat().st_size
    report(size, rows)
    return ExportResult(rows=rows, bytes=size)
