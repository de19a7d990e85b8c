"""Spooled requests -> insert blocks, in worker processes so that row conversion uses every core.

Turning OTLP into the exporter's rows is pure Python work on protobuf objects; in one process it would share a
single core (the GIL) with the receivers. The writer therefore ships batches of request payloads to a small
process pool, which converts them with :mod:`llmtap.collector.rows` and serializes each table's rows as
``JSONCompactEachRow`` — parsed by ClickHouse's C++ code on insert. Values are those of the column path exactly:
timestamps travel as decimal seconds with nine fractional digits, maps as JSON objects in key order, floats in
Python's round-tripping repr (NaN and ±Infinity included, which ClickHouse reads).
"""

from __future__ import annotations

import json
import multiprocessing
from collections import Counter
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

from llmtap.collector import rows
from llmtap.collector.decode import SIGNALS

FORMAT = "JSONCompactEachRow"
_CONVERTERS = {"traces": rows.add_traces, "metrics": rows.add_metrics, "logs": rows.add_logs}
_NANOSECOND_COLUMNS = {"Timestamp"}  # DateTime64(9) columns, as integers in the batch
_NANOSECOND_ARRAY_COLUMNS = {"Events.Timestamp"}
_dumps = json.JSONEncoder(separators=(",", ":"), check_circular=False).encode

#: table -> (column names, JSONCompactEachRow bytes); signal -> items converted
Encoded = tuple[dict[str, tuple[tuple[str, ...], bytes]], dict[str, int]]


def _seconds(nanos: int) -> str:
    return f"{nanos // 1_000_000_000}.{nanos % 1_000_000_000:09d}"


def _json_rows(columns: dict[str, list[Any]]) -> bytes:
    values = []
    for name, column in columns.items():
        if name in _NANOSECOND_COLUMNS:
            column = [_seconds(v) for v in column]
        elif name in _NANOSECOND_ARRAY_COLUMNS:
            column = [[_seconds(v) for v in array] if array else array for array in column]
        values.append(column)
    return ("\n".join(map(_dumps, zip(*values, strict=True))) + "\n").encode()


def encode_requests(payloads: list[tuple[str, bytes]]) -> Encoded:
    """Convert spooled payloads (signal, serialized export request) into one insert block per table."""
    blocks: dict[str, list[bytes]] = {}
    counts: Counter[str] = Counter()
    for signal, payload in payloads:
        batch = rows.Batch()  # one request at a time keeps the Python objects of a whole batch out of memory
        counts[signal] += _CONVERTERS[signal](batch, SIGNALS[signal].request_type.FromString(payload))
        for table, columns in batch.columns.items():
            blocks.setdefault(table, []).append(_json_rows(columns))
    return {table: (rows.TABLE_COLUMNS[table], b"".join(chunks)) for table, chunks in blocks.items()}, dict(
        counts
    )


class EncoderPool:
    """A few worker processes running :func:`encode_requests` (spawned: serve has threads, never fork them)."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._executor = ProcessPoolExecutor(
            max_workers=workers, mp_context=multiprocessing.get_context("spawn")
        )
        # Start the workers now (imports take a moment) rather than on the first request.
        for future in [self._executor.submit(encode_requests, []) for _ in range(workers)]:
            future.result()

    def submit(self, payloads: list[tuple[str, bytes]]) -> Future[Encoded]:
        return self._executor.submit(encode_requests, payloads)

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
