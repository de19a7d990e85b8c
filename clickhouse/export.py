"""Export calls as JSON lines, CSV or Parquet, streaming: memory stays flat whatever the export's size.

ClickHouse encodes the rows itself (its JSONEachRow, CSV and Parquet output formats) and clickhouse-connect's
``raw_stream`` hands the bytes over block by block; we copy them to the output and count. The one exception
is Parquet from the embedded store: a Parquet file has a global footer, so chDB cannot stream it in blocks;
there the engine writes the file itself (``INTO OUTFILE``, row group by row group) into a private temporary
directory, and it is then moved into place.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from llmtap.clickhouse.filters import CallFilter, where_clause

if TYPE_CHECKING:
    from clickhouse_connect.driver.client import Client

FORMATS = {"jsonl": "JSONEachRow", "csv": "CSV", "parquet": "Parquet"}

# Exported columns: everything llm_calls_costed has. CSV has no nested types, so arrays and maps
# become JSON text there; JSON lines and Parquet keep them as arrays and objects/maps.
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
    # Bounded Parquet row groups (prompts can be large): the writer holds one row group at a time.
    "output_format_parquet_row_group_size": 50_000,
    "output_format_parquet_row_group_size_bytes": 64 * 1024 * 1024,
}
_CHUNK = 1 << 20


@dataclass(frozen=True)
class ExportResult:
    rows: int
    bytes: int


ProgressCallback = Callable[[int, int], None]  # (bytes written so far, rows written so far or -1 if unknown)


def export_sql(flt: CallFilter, fmt: str) -> tuple[str, dict[str, Any]]:
    """The SELECT of an export (no FORMAT clause) with its bound parameters."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}: choose one of {', '.join(FORMATS)}")
    columns = [f"toJSONString({c}) AS {c}" if fmt == "csv" and c in _NESTED else c for c in _COLUMNS]
    where, params = where_clause(flt)
    return f"SELECT {', '.join(columns)} FROM llm_calls_costed {where} ORDER BY Timestamp, SpanId", params


def count_calls(client: Client, flt: CallFilter) -> int:
    """How many calls an export of ``flt`` will write (for the progress bar's total)."""
    where, params = where_clause(flt)
    return int(client.query(f"SELECT count() FROM llm_calls {where}", parameters=params).result_rows[0][0])


def csv_header() -> bytes:
    return (",".join(f'"{name}"' for name in _COLUMNS) + "\n").encode()


def export_calls(
    client: Client, flt: CallFilter, fmt: str, out: IO[bytes], *, progress: ProgressCallback | None = None
) -> ExportResult:
    """Stream the calls matching ``flt`` to ``out`` in ``fmt``; ``progress`` is called after every chunk."""
    sql, params = export_sql(flt, fmt)
    written = rows = 0
    report = progress or (lambda _bytes, _rows: None)
    if fmt == "csv":
        header = csv_header()
        out.write(header)
        written += len(header)
    with client.raw_stream(sql, parameters=params, settings=_SETTINGS, fmt=FORMATS[fmt]) as stream:
        while chunk := stream.read(_CHUNK):
            out.write(chunk)
            written += len(chunk)
            if fmt == "jsonl":  # JSONEachRow escapes newlines inside values: one line per row
                rows += chunk.count(b"\n")
            report(written, rows if fmt == "jsonl" else -1)
    out.flush()
    return ExportResult(rows=rows if fmt == "jsonl" else -1, bytes=written)


def export_parquet_file(
    client: Client, flt: CallFilter, path: Path, *, embedded: bool, progress: ProgressCallback | None = None
) -> ExportResult:
    """Write a Parquet file: streamed from a server, written by the engine itself on the embedded store."""
    if not embedded:
        with open(path, "wb") as out:
            return export_calls(client, flt, "parquet", out, progress=progress)
    sql, params = export_sql(flt, "parquet")
    workdir = Path(tempfile.mkdtemp(prefix="llmtap-export-"))
    staging = workdir / "export.parquet"  # a path we chose: safe to write into the statement
    done = threading.Event()
    watcher = threading.Thread(target=_watch_size, args=(staging, done, progress), daemon=True)
    watcher.start()
    try:
        client.command(
            f"{sql} INTO OUTFILE '{staging.as_posix()}' FORMAT Parquet", parameters=params, settings=_SETTINGS
        )
        done.set()
        watcher.join()
        size = staging.stat().st_size
        shutil.move(os.fspath(staging), os.fspath(path))
        if progress:
            progress(size, -1)
        return ExportResult(rows=-1, bytes=size)
    finally:
        done.set()
        shutil.rmtree(workdir, ignore_errors=True)


def _watch_size(path: Path, done: threading.Event, progress: ProgressCallback | None) -> None:
    """Report the growing file's size while the engine writes it (INTO OUTFILE blocks the calling thread)."""
    while progress and not done.wait(0.25):
        with contextlib.suppress(OSError):  # not created yet
            progress(path.stat().st_size, -1)
