"""Spooled requests -> insert blocks, in worker processes so that row conversion uses every core.

Turning OTLP into the exporter's rows is pure Python work on protobuf objects; in one process it would share a
single core (the GIL) with the receivers and with ClickHouse's own insert work. The writer therefore ships batches
of request payloads to a small process pool, which converts them with :mod:`llmtap.collector.rows` and writes
each table's columns in ClickHouse's Native format (:mod:`llmtap.collector.native`, span attributes encoded once
through a memo). Serve's process then only hands those bytes to ClickHouse (``raw_insert``), whose C++ insert path
releases the GIL. Rows are identical to the in-process path, which inserts with clickhouse-connect's serializer
(the golden tests run both).
"""

from __future__ import annotations

import multiprocessing
from collections import Counter
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor

from llmtap.collector import native, rows
from llmtap.collector.values import encoded_attributes_to_native

FORMAT = "Native"

#: table -> (column names, Native block bytes); signal -> items converted
Encoded = tuple[dict[str, tuple[tuple[str, ...], bytes]], dict[str, int]]
_table_types: dict[str, dict[str, str]] = {}


def init_worker(table_types: dict[str, dict[str, str]]) -> None:
    """Worker initializer: the ClickHouse type of every column, as the store reported it."""
    _table_types.update(table_types)


def encode_requests(payloads: list[tuple[str, bytes]]) -> Encoded:
    """Convert spooled payloads (signal, serialized export request) into one insert block per table."""
    batch = rows.Batch(attributes=encoded_attributes_to_native)
    counts: Counter[str] = Counter()
    for signal, payload in payloads:
        counts[signal] += rows.add_request(batch, signal, payload)
    return {
        table: (tuple(columns), native.block(columns, _table_types[table]))
        for table, columns in batch.columns.items()
        if columns
    }, dict(counts)


class EncoderPool:
    """Runs :func:`encode_requests` beside the writer, so conversion overlaps ClickHouse's insert work.

    ``processes=0`` uses one thread in serve's process: conversion holds the GIL, but the insert it overlaps with
    runs in ClickHouse's C++ code without it, which is the best use of two cores. More cores pay for worker
    processes (spawned: serve has threads, never fork them).
    """

    def __init__(self, processes: int, table_types: dict[str, dict[str, str]]) -> None:
        self.workers = max(1, processes)
        if processes == 0:
            init_worker(table_types)
            self._executor: Executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llmtap-encoder")
            return
        self._executor = ProcessPoolExecutor(
            max_workers=processes,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=init_worker,
            initargs=(table_types,),
        )
        # Start the workers now (imports take a moment) rather than on the first request.
        for future in [self._executor.submit(encode_requests, []) for _ in range(processes)]:
            future.result()

    def submit(self, payloads: list[tuple[str, bytes]]) -> Future[Encoded]:
        return self._executor.submit(encode_requests, payloads)

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
