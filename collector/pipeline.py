"""From an accepted request to rows in ClickHouse: admission, spool, batching, writing, replay.

The receivers hand every validated request to :meth:`Pipeline.accept`, which refuses it when the buffer or the
spool's disk is full (:class:`Refused`, answered 429/503 or RESOURCE_EXHAUSTED/UNAVAILABLE) and otherwise returns
only once the request is fsynced in the spool. One writer thread drains the queue in arrival order, converts
requests to columns (:mod:`llmtap.collector.rows`) and inserts them in batches bounded by rows and by time.
A batch that fails is retried; a request that ClickHouse rejects as data (never as an outage) is quarantined in
the spool directory instead of blocking everything behind it.

Memory bound: payloads of queued requests are kept in memory up to ``memory_bytes``; beyond that only their
spool location is kept and the writer reads them back from disk. The spool itself is bounded by
``spool_bytes``: past it, new requests are refused. So resident memory is about ``memory_bytes`` plus one batch
being converted (``batch_rows`` rows) plus the receivers' in-flight requests (each at most ``max_body_bytes``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import BrokenExecutor, Future
from dataclasses import dataclass, field
from typing import Any

from llmtap.clickhouse.private_files import make_private_directory, tighten_directory, write_private_file
from llmtap.collector import rows
from llmtap.collector.encode import FORMAT as ENCODED_FORMAT
from llmtap.collector.encode import Encoded, EncoderPool
from llmtap.collector.spool import Record, Spool, SpoolFull
from llmtap.collector.stats import Stats

log = logging.getLogger("llmtap.serve")

# ClickHouse error codes that mean "this data can never be inserted", as opposed to an outage or overload.
_DATA_ERROR_CODES = {6, 27, 36, 41, 53, 69, 70, 72, 117, 190, 321, 407}
_RETRIES_BEFORE_SPLIT = 3
# Fault injection for the durability tests: die right after the rows are inserted, before the spool checkpoint
# says so, the one moment where a restart must de-duplicate instead of blindly replaying.
_EXIT_AFTER_INSERT = os.environ.get("LLMTAP_FAULT_EXIT_AFTER_INSERT") == "1"


@dataclass(frozen=True)
class Limits:
    """Sizes that bound memory, disk and batch shape."""

    memory_bytes: int = 64 << 20
    spool_bytes: int = 1 << 30
    # Every insert costs ClickHouse ~0.1 s of CPU whatever its size (a part per table, planning each materialized
    # view), so under load big batches are what keeps the write path fast; light traffic flushes by time anyway.
    batch_rows: int = 20_000
    flush_seconds: float = 1.0
    retry_after_seconds: int = 5


class Refused(Exception):
    """A request turned away before it was accepted; the client should retry after ``retry_after`` seconds."""

    def __init__(self, message: str, *, store_down: bool, retry_after: int) -> None:
        super().__init__(message)
        self.store_down = store_down
        self.retry_after = retry_after


@dataclass
class _Entry:
    record: Record
    payload: bytes | None  # None when only on disk (beyond the memory budget)
    items: int
    dedupe: bool  # possibly already in ClickHouse (replayed after a crash, or a retried batch)
    replayed: bool = False  # accepted by a previous process and found in the spool on start
    released: bool = False  # written or quarantined, and gone from the spool: a retried batch leaves it out
    arrived: float = field(default_factory=time.monotonic)


class Pipeline:
    """Accepts validated requests durably and writes them to ClickHouse in the background."""

    def __init__(
        self,
        connect: Callable[[], Any],
        spool: Spool,
        stats: Stats,
        limits: Limits = Limits(),
        encoders: EncoderPool | None = None,
    ) -> None:
        self._connect = connect
        self._encoders = encoders
        self.spool = spool
        self.stats = stats
        self.limits = limits
        self._queue: deque[_Entry] = deque()
        self._cond = threading.Condition()
        self._memory_bytes = 0
        self._stopping = False
        self._client: Any = None
        self._thread = threading.Thread(target=self._run, name="llmtap-writer", daemon=True)

    # ---- lifecycle ----------------------------------------------------------------------------------------
    def start(self) -> int:
        """Replay what the spool holds from before (returns how many requests) and start the writer."""
        replay = self.spool.recover()
        for record in replay:
            payload = None
            if self._memory_bytes + record.length <= self.limits.memory_bytes:
                payload = self.spool.read(record)
                self._memory_bytes += record.length
            dedupe = record.seq <= self.spool.inflight
            self._queue.append(_Entry(record, payload, 0, dedupe, replayed=True))
        self._thread.start()
        return len(replay)

    def close(self, timeout: float = 30.0) -> bool:
        """Write everything queued (up to ``timeout`` seconds), then stop. False if data stays for next start."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(timeout)
        drained = not self._thread.is_alive() and not self._queue
        if not self._thread.is_alive():
            if self._encoders is not None:
                self._encoders.close()
            if self._client is not None:
                with contextlib.suppress(Exception):
                    self._client.close()
            self.spool.close()
        return drained

    # ---- accept -------------------------------------------------------------------------------------------
    def accept(self, signal: str, payload: bytes, items: int) -> None:
        """Durably accept one validated request, or raise Refused when the buffer or the spool's disk is full."""
        if self._stopping:
            raise Refused(
                "llmtap serve is shutting down", store_down=True, retry_after=self.limits.retry_after_seconds
            )
        if self.spool.pending_bytes + len(payload) > self.limits.spool_bytes:
            store_down = not self.stats.store_up
            reason = "the ClickHouse store is unavailable" if store_down else "llmtap serve is overloaded"
            raise Refused(
                f"{reason} and its buffer is full ({self.limits.spool_bytes >> 20} MiB); retry later",
                store_down=store_down,
                retry_after=self.limits.retry_after_seconds,
            )
        try:
            record = self.spool.append(signal, payload)  # durable from here on
        except SpoolFull as exc:
            message = "llmtap serve's spool disk is full; retry later"  # its path stays in serve's log
            raise Refused(message, store_down=True, retry_after=self.limits.retry_after_seconds) from exc
        self.stats.add(signal, "received", items)
        with self._cond:
            keep = self._memory_bytes + len(payload) <= self.limits.memory_bytes
            if keep:
                self._memory_bytes += len(payload)
            self._queue.append(_Entry(record, payload if keep else None, items, False))
            self._cond.notify_all()

    def queued_requests(self) -> int:
        return len(self._queue)

    # ---- writer -------------------------------------------------------------------------------------------
    def _run(self) -> None:
        """Keep up to one batch per encoder worker in conversion while inserting finished ones, in queue order."""
        inflight: deque[tuple[list[_Entry], Future[Encoded]]] = deque()
        window = self._encoders.workers + 1 if self._encoders else 0  # every encoder busy while one inserts
        while True:
            entries = self._next_batch(wait=not inflight)
            if entries:
                future = self._submit(entries)
                if future is not None:
                    inflight.append((entries, future))
                    if len(inflight) < window:
                        continue
                else:  # replays and retries take the careful path, after everything before them
                    while inflight:
                        self._finish(*inflight.popleft())
                    self._write(entries)
                    continue
            if inflight:
                self._finish(*inflight.popleft())
            elif not entries and self._stopping:
                return

    def _submit(self, entries: list[_Entry]) -> Future[Encoded] | None:
        """Hand a batch to the encoder workers (None: it must take the careful path in this process)."""
        if self._encoders is None or any(e.dedupe or e.replayed for e in entries):
            return None
        try:
            return self._encoders.submit([(e.record.signal, self._payload(e)) for e in entries])
        except Exception as exc:  # a broken pool: keep going without it
            self._disable_encoders(exc)
            return None

    def _disable_encoders(self, exc: BaseException) -> None:
        log.error("encoder workers failed (%s); converting in serve's process from now on", _describe(exc))
        encoders, self._encoders = self._encoders, None
        if encoders is not None:
            with contextlib.suppress(Exception):
                encoders.close()

    def _next_batch(self, wait: bool) -> list[_Entry]:
        """Gather entries until the batch is big enough or its oldest entry old enough ([] if not yet/none).

        With ``wait`` it blocks for that; without, it returns at once (work is in flight meanwhile).
        """
        with self._cond:
            while wait and not self._queue and not self._stopping:
                self._cond.wait()
            if not self._queue:
                return []
            deadline = self._queue[0].arrived + self.limits.flush_seconds
            while not self._stopping and self._queued_items() < self.limits.batch_rows:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                if not wait:
                    return []
                self._cond.wait(remaining)
            # Rows bound a batch, and so do bytes: replayed requests have no row count until converted.
            batch: list[_Entry] = []
            items = size = 0
            limits = self.limits
            while self._queue and (not batch or (items < limits.batch_rows and size < limits.memory_bytes)):
                entry = self._queue.popleft()
                batch.append(entry)
                items += entry.items or 1
                size += entry.record.length
            return batch

    def _queued_items(self) -> int:
        return sum(entry.items or 1 for entry in self._queue)

    def _payload(self, entry: _Entry) -> bytes:
        return entry.payload if entry.payload is not None else self.spool.read(entry.record)

    def _finish(self, entries: list[_Entry], future: Future[Encoded]) -> None:
        """Insert a batch the workers encoded; any failure goes to the careful, retrying path."""
        try:
            tables, counts = future.result()
            client = self._client or self._open()
            self.spool.mark_inflight(max(entry.record.seq for entry in entries))
            started = time.perf_counter()
            for table, (names, block) in tables.items():
                client.raw_insert(table, names, insert_block=block, fmt=ENCODED_FORMAT)
        except Exception as exc:
            if isinstance(exc, BrokenExecutor):
                self._disable_encoders(exc)
            log.debug("encoded insert failed, retrying in this process: %s", _describe(exc))
            for entry in entries:
                entry.dedupe = True  # some tables may have been inserted
            self._write(entries)
            return
        self._written(entries, counts, time.perf_counter() - started)

    def _written(self, entries: list[_Entry], counts: dict[str, int], seconds: float) -> None:
        if _EXIT_AFTER_INSERT:
            os._exit(70)
        self.stats.write_succeeded(seconds)
        self._release(entries)
        for signal, count in counts.items():
            self.stats.add(signal, "written", count)

    def _write(self, entries: list[_Entry]) -> None:
        """Convert and insert in this process, de-duplicating when needed; retry, split and quarantine."""
        attempt = 0
        while True:
            entries = [entry for entry in entries if not entry.released]  # quarantined by an earlier attempt
            if not entries:
                return
            try:
                self._insert(entries)
                return
            except Exception as exc:
                attempt += 1
                store_down = not _is_data_error(exc)
                self.stats.write_failed(_describe(exc), store_down=store_down)
                for entry in entries:
                    entry.dedupe = True  # some tables of the batch may have been inserted already
                if not store_down and attempt >= _RETRIES_BEFORE_SPLIT:
                    if len(entries) > 1:
                        for entry in entries:
                            self._write([entry])
                    else:
                        self._quarantine(entries[0], exc)
                    return
                log.warning("write to ClickHouse failed (attempt %d): %s", attempt, _describe(exc))
                if self._stopping and store_down:
                    return  # leave it in the spool: replayed (and de-duplicated) on the next start
                self._sleep(min(30.0, 0.5 * 2**attempt))

    def _insert(self, entries: list[_Entry]) -> None:
        batch = rows.Batch()
        counts: Counter[str] = Counter()
        convertible = []
        for entry in entries:
            try:
                items = rows.add_request(batch, entry.record.signal, self._payload(entry))
            except Exception as exc:  # a request that cannot even be converted never will be
                self._quarantine(entry, exc)
                continue
            if entry.replayed and not entry.items:
                self.stats.add(entry.record.signal, "received", items)  # counted by the previous process only
            entry.items = items
            counts[entry.record.signal] += items
            convertible.append(entry)
        if not convertible:
            return  # all quarantined
        client = self._client or self._open()
        self.spool.mark_inflight(max(entry.record.seq for entry in entries))
        dedupe = any(entry.dedupe for entry in convertible)
        started = time.perf_counter()
        for table, columns in batch.columns.items():
            if dedupe:
                columns = remove_existing(client, table, columns)
            names = list(columns)
            if columns[names[0]]:
                client.insert(table, [columns[n] for n in names], column_names=names, column_oriented=True)
        self._written(convertible, dict(counts), time.perf_counter() - started)

    def _release(self, entries: list[_Entry]) -> None:
        """Forget written (or quarantined) entries: their memory, their pending bytes, their spool records."""
        held = sum(entry.record.length for entry in entries if entry.payload is not None)
        for entry in entries:
            entry.payload = None
            entry.released = True
        with self._cond:
            self._memory_bytes -= held
        self.spool.release(
            [entry.record.seq for entry in entries], sum(entry.record.length for entry in entries)
        )

    def _quarantine(self, entry: _Entry, exc: BaseException) -> None:
        """Move a request ClickHouse will never accept aside (spool/quarantine/) so the rest keeps flowing.

        Where that cannot be written (a full disk), the request stays in the spool, unreleased, and is tried
        again at the next start: an error escaping here would end the writer thread while serve goes on
        acknowledging requests."""
        directory = self.spool.directory / "quarantine"
        name = f"{entry.record.seq:020d}-{entry.record.signal}"
        try:
            make_private_directory(directory, internal=True)
            # Quarantined payloads were 0644 before llmtap kept its files private.
            tighten_directory(directory)
            write_private_file(directory / f"{name}.pb", self._payload(entry))
            write_private_file(directory / f"{name}.error.txt", (_describe(exc) + "\n").encode())
        except OSError as error:
            log.error("cannot quarantine %s request %d (%s): it stays in the spool until serve starts again; "
                      "ClickHouse refused it: %s", entry.record.signal, entry.record.seq, error, _describe(exc))  # fmt: skip
            return
        log.error("quarantined %s request %d: %s", entry.record.signal, entry.record.seq, _describe(exc))
        self.stats.add(entry.record.signal, "dropped", entry.items)
        self._release([entry])

    def _open(self) -> Any:
        self._client = self._connect()
        return self._client

    def _sleep(self, seconds: float) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._stopping, timeout=seconds)


# ---- replay de-duplication ------------------------------------------------------------------------------------
# Per table: the columns that identify a row, each with the SQL giving its stored value in the form the converter
# produced (integer timestamps). Rows whose identity is already stored (as many times as it is) are skipped.
_NANO_WINDOW = "Timestamp BETWEEN fromUnixTimestamp64Nano({lo:Int64}) AND fromUnixTimestamp64Nano({hi:Int64})"
_TRACE_IDENTITY = (
    ("Timestamp", "toUnixTimestamp64Nano(Timestamp)"), ("TraceId", "TraceId"), ("SpanId", "SpanId"),
)  # fmt: skip
_LOG_IDENTITY = (
    ("Timestamp", "toUnixTimestamp64Nano(Timestamp)"), ("TraceId", "TraceId"), ("SpanId", "SpanId"),
    ("SeverityNumber", "SeverityNumber"), ("ServiceName", "ServiceName"), ("Body", "Body"),
)  # fmt: skip
_METRIC_IDENTITY = (
    ("TimeUnix", "toUnixTimestamp(TimeUnix)"), ("StartTimeUnix", "toUnixTimestamp(StartTimeUnix)"),
    ("ServiceName", "ServiceName"), ("MetricName", "MetricName"), ("Attributes", "Attributes"),
)  # fmt: skip
_METRIC_WINDOW = "TimeUnix BETWEEN toDateTime({lo:Int64}) AND toDateTime({hi:Int64})"


def _identity(table: str) -> tuple[tuple[tuple[str, str], ...], str]:
    if table == rows.TRACES_TABLE:
        return _TRACE_IDENTITY, _NANO_WINDOW
    if table == rows.LOGS_TABLE:
        return _LOG_IDENTITY, _NANO_WINDOW
    return _METRIC_IDENTITY, _METRIC_WINDOW


def _hashable(value: Any) -> Any:
    return tuple(value.items()) if isinstance(value, dict) else value


def remove_existing(client: Any, table: str, columns: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """Drop rows that ClickHouse already holds (for batches that may have been inserted before a crash)."""
    identity, window = _identity(table)
    times = columns[identity[0][0]]
    if not times:
        return columns
    select = ", ".join(expression for _, expression in identity)
    result = client.query(
        f"SELECT {select} FROM {table} WHERE {window}", parameters={"lo": min(times), "hi": max(times)}
    )
    stored = Counter(tuple(_hashable(value) for value in row) for row in result.result_rows)
    if not stored:
        return columns
    keep = []
    for index in range(len(times)):
        key = tuple(_hashable(columns[name][index]) for name, _ in identity)
        if stored[key] > 0:
            stored[key] -= 1
        else:
            keep.append(index)
    if len(keep) < len(times):
        log.info("skipped %d row(s) of %s already stored before a restart", len(times) - len(keep), table)
    return {name: [values[i] for i in keep] for name, values in columns.items()}


def _is_data_error(exc: BaseException) -> bool:
    """True when ClickHouse (or the client's serializer) refused the data itself, not when the store is down."""
    if isinstance(exc, (TypeError, ValueError, OverflowError, KeyError)) and not _is_clickhouse_error(exc):
        return True
    code = getattr(exc, "code", None)
    if code is None:
        text = str(exc)
        code = next((int(c) for c in _codes_in(text)), None)
    return code in _DATA_ERROR_CODES


def _is_clickhouse_error(exc: BaseException) -> bool:
    return type(exc).__module__.startswith("clickhouse_connect")


def _codes_in(text: str) -> list[str]:
    return re.findall(r"Code: (\d+)", text)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300] if text else ''}"
