"""From an accepted request to rows in ClickHouse: admission, spool, batching, writing, replay.

The receivers hand every validated request to :meth:`Pipeline.accept`, which refuses it when the buffer or the
spool's disk is full, or the spool's fsync fails (:class:`Refused`, answered 429/503 or
RESOURCE_EXHAUSTED/UNAVAILABLE), and otherwise returns only once the request is fsynced in the spool. One writer thread drains the queue in arrival order, converts
requests to columns (:mod:`llmtap.collector.rows`) and inserts them in batches bounded by rows and by time.
A batch that fails is retried; a request that ClickHouse rejects as data (never as an outage) is quarantined in
the spool directory instead of blocking everything behind it.

Exactly once, in every table: each insert carries the batch's de-duplication token (:meth:`Spool.begin`), the
same on every try and after a crash, with ``deduplicate_blocks_in_dependent_materialized_views``, and sends one
block per table, in a fixed order of tables: ClickHouse derives each block's id from the token and the block's
place in the insert, so a batch sent again must be split the same way. A table, raw or a view's target, that has
the batch drops it; one that missed it (a crash between otel_traces and its views) takes it.

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

from llmtap.clickhouse.private_files import (
    fsync_directory,
    make_private_directory,
    tighten_directory,
    write_private_file,
)
from llmtap.collector import rows
from llmtap.collector.encode import FORMAT as ENCODED_FORMAT
from llmtap.collector.encode import Encoded, EncoderPool
from llmtap.collector.spool import Record, Spool, SpoolError, SpoolFull, SpoolUnavailable
from llmtap.collector.stats import Stats

log = logging.getLogger("llmtap.serve")

# ClickHouse error codes that mean "this data can never be inserted", as opposed to an outage or overload.
_DATA_ERROR_CODES = {6, 27, 36, 41, 53, 69, 70, 72, 117, 190, 321, 407}
_RETRIES_BEFORE_SPLIT = 3
# Fault injection for the durability tests: die right after the rows are inserted, before the spool checkpoint
# says so, the one moment where a restart must de-duplicate instead of blindly replaying.
_EXIT_AFTER_INSERT = os.environ.get("LLMTAP_FAULT_EXIT_AFTER_INSERT") == "1"
_DEDUPLICATE_IN_VIEWS = {"deduplicate_blocks_in_dependent_materialized_views": 1}


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
    replayed: bool = False  # accepted by a previous process and found in the spool on start
    batch: tuple[int, ...] | None = None  # replayed: the batch a previous process may have inserted it in
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
        self._deferred: list[_Entry] | None = None
        self._checkpoint_retries = 0  # failed tries to save the spool's checkpoint while idle, in a row
        self._thread = threading.Thread(target=self._run, name="llmtap-writer", daemon=True)

    # ---- lifecycle ----------------------------------------------------------------------------------------
    def start(self) -> int:
        """Replay what the spool holds from before (returns how many requests) and start the writer."""
        replay = self.spool.recover()
        # The batches that were being inserted come first, each as it was; then the rest, in seq order.
        opened = self.spool.open_batches()
        batch_of = {seq: batch for batch in opened for seq in batch}
        rank = {seq: index for index, batch in enumerate(opened) for seq in batch}
        replay.sort(key=lambda record: (rank.get(record.seq, len(opened)), record.seq))
        for record in replay:
            payload = None
            if self._memory_bytes + record.length <= self.limits.memory_bytes:
                payload = self.spool.read(record)
                self._memory_bytes += record.length
            self._queue.append(_Entry(record, payload, 0, replayed=True, batch=batch_of.get(record.seq)))
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
        except SpoolUnavailable as exc:  # a full disk, or one whose fsync failed: nothing was acknowledged
            full = isinstance(exc, SpoolFull)
            message = f"llmtap serve's spool disk {'is full' if full else 'failed a write'}; retry later"
            # its path stays in serve's log
            raise Refused(message, store_down=True, retry_after=self.limits.retry_after_seconds) from exc
        self.stats.add(signal, "received", items)
        with self._cond:
            keep = self._memory_bytes + len(payload) <= self.limits.memory_bytes
            if keep:
                self._memory_bytes += len(payload)
            self._queue.append(_Entry(record, payload if keep else None, items))
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
            elif not entries:  # idle: a failed checkpoint is tried again, else only new traffic would
                try:
                    saved = self.spool.retry_checkpoint()
                except OSError as exc:  # e.g. deleting a written segment: the writer must live on
                    log.warning("cannot tidy the spool while idle: %s", exc)
                    saved = False
                self._checkpoint_retries = 0 if saved else self._checkpoint_retries + 1

    def _submit(self, entries: list[_Entry]) -> Future[Encoded] | None:
        """Hand a batch to the encoder workers (None: it must take the careful path in this process)."""
        if self._encoders is None or any(e.replayed for e in entries):
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
                if self.spool.checkpoint_failed:  # woken on time to try it again (see _run)
                    self._cond.wait(min(30.0, 0.5 * 2 ** min(self._checkpoint_retries, 6)))
                    break
                self._cond.wait()
            if not self._queue:
                return []
            batch: list[_Entry] = []
            replayed = self._queue[0].batch
            if replayed is not None:  # a batch that was being inserted before a restart: once more, as it was
                while self._queue and self._queue[0].batch == replayed:
                    batch.append(self._queue.popleft())
                return batch
            deadline = self._queue[0].arrived + self.limits.flush_seconds
            while not self._stopping and self._queued_items() < self.limits.batch_rows:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                if not wait:
                    return []
                self._cond.wait(remaining)
            # Rows bound a batch, and so do bytes: replayed requests have no row count until converted.
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
        """Insert a batch the workers encoded; any failure goes to the careful, retrying path (same token)."""
        try:
            tables, counts = future.result()
            client = self._client or self._open()
            settings = {"insert_deduplication_token": self._begin(entries), **_DEDUPLICATE_IN_VIEWS}
            started = time.perf_counter()
            for table in sorted(tables):  # the careful path's order, for a retry that finds some tables done
                names, block = tables[table]
                client.raw_insert(table, names, insert_block=block, fmt=ENCODED_FORMAT, settings=settings)
        except Exception as exc:
            if isinstance(exc, BrokenExecutor):
                self._disable_encoders(exc)
            log.debug("encoded insert failed, retrying in this process: %s", _describe(exc))
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

    def _begin(self, entries: list[_Entry]) -> str:
        """The batch's de-duplication token, noted in the spool before its first insert (a replayed batch keeps
        the seqs it had, with those quarantined since)."""
        first = entries[0].batch
        return self.spool.begin(first if first is not None else [entry.record.seq for entry in entries])

    def _write(
        self,
        entries: list[_Entry],
        token: str | None = None,
        landed: set[str] | None = None,
        split_of: str | None = None,
    ) -> None:
        """Convert and insert in this process; retry, split and quarantine.

        ``token`` is the batch's de-duplication token (by default from the spool) and ``landed`` the tables that
        already have the batch whole. With ``split_of`` (the token of the batch being split) the entries are a
        part of it: refused as data, it is split again (or quarantined) at once, without retries."""
        landed = set() if landed is None else landed
        attempt = waits = 0
        while True:
            entries = [entry for entry in entries if not entry.released]  # quarantined by an earlier attempt
            if not entries:
                return
            try:
                token = token or self._begin(entries)
                self._insert(entries, token, landed)
                self.spool.writer_stalled = False
                return
            except SpoolError as exc:  # the spool's disk, not the store: /health says "spool not writable"
                waits += 1
                self.spool.writer_stalled = True
                log.warning("the writer waits for the spool (try %d): %s", waits, exc)
                if self._stopping:
                    return  # left in the spool, replayed on the next start
                self._sleep(min(30.0, 0.5 * 2 ** min(waits, 6)))  # 2**1024 overflows a float
                continue
            except Exception as exc:
                self.spool.writer_stalled = False
                attempt += 1
                store_down = not _is_data_error(exc)
                self.stats.write_failed(_describe(exc), store_down=store_down)
                if not store_down and token is not None and (split_of or attempt >= _RETRIES_BEFORE_SPLIT):
                    entries = [entry for entry in entries if not entry.released]
                    if len(entries) > 1 and split_of:
                        self._bisect(entries, split_of, landed)
                    elif len(entries) > 1:
                        self._split(entries, token, landed)
                    elif entries:
                        self._quarantine_or_wait(entries[0], exc)
                    return
                log.warning("write to ClickHouse failed (attempt %d): %s", attempt, _describe(exc))
                if self._stopping and store_down:
                    return  # leave it in the spool: replayed (and de-duplicated) on the next start
                self._sleep(min(30.0, 0.5 * 2 ** min(attempt, 6)))

    def _split(self, entries: list[_Entry], token: str, landed: set[str]) -> None:
        """Insert a batch that ClickHouse refuses as data in parts, to quarantine the culprits.

        The batch is halved (:meth:`_bisect`), a half refused as data halved again, down to single requests,
        which are quarantined. Each part gets a token of its own, derived from the batch's, and skips the tables
        that took the whole batch. The requests are released together at the end: until then the batch stays
        open in the spool, and a restart replays all of it, fails the same way and splits it the same way, so
        the parts inserted before the crash are de-duplicated by the same tokens, as long as each table still
        keeps their block ids: the last 1,000 blocks (migration 0017). Only parts with a culprit are halved, so a
        batch of n requests with k culprits makes at most about k*log2(n) blocks per table (n is at most
        ``batch_rows``: under 15 halvings); request by request it made n, and a batch of over 1,000 requests
        killed mid-split had its first requests stored twice."""
        self._deferred = []
        try:
            self._bisect(entries, token, landed)
        finally:
            deferred, self._deferred = self._deferred, None
        if all(entry.released for entry in entries):
            self.spool.release([e.record.seq for e in deferred], sum(e.record.length for e in deferred))
        else:  # its records stay, but what was written (or quarantined) of it is no longer pending
            self.spool.settle(sum(entry.record.length for entry in deferred))
            log.warning("a split batch stays in the spool until serve starts again")

    def _bisect(self, entries: list[_Entry], token: str, landed: set[str]) -> None:
        """Write ``entries``, a part of the batch whose token is ``token``, as two halves.

        Halved in seq order, not queue order (a replay has the batch in seq order), so a restart halves it the
        same way. A part's token is the batch's with the part's first and last seqs (a single request's:
        ``<token>/<seq>``), unique among the parts of one batch."""
        entries = sorted(entries, key=lambda entry: entry.record.seq)
        middle = (len(entries) + 1) // 2
        for part in (entries[:middle], entries[middle:]):
            first, last = part[0].record.seq, part[-1].record.seq
            name = f"{first}" if first == last else f"{first}-{last}"
            self._write(part, f"{token}/{name}", set(landed), split_of=token)

    def _insert(self, entries: list[_Entry], token: str, landed: set[str]) -> None:
        """Convert the requests and insert them as one batch under ``token``; quarantine those that cannot be
        converted.

        Raises SpoolError, inserting nothing, when a payload cannot be read back from the spool (its disk's
        trouble, not the request's) or a request can be neither converted nor quarantined: the rest of the batch
        must not go in under ``token`` without it, since the next start replays that request alone as this batch,
        with this token, and every table would drop its rows as already stored. The batch waits instead, as for a
        checkpoint that cannot be saved (/health: spool not writable). On a full disk that means until space is
        freed: a quarantine needs a little."""
        batch = rows.Batch()
        counts: Counter[str] = Counter()
        convertible = []
        for entry in entries:
            signal, seq = entry.record.signal, entry.record.seq
            try:
                payload = self._payload(entry)
            except (OSError, MemoryError) as exc:
                raise SpoolError(f"cannot read {signal} request {seq} back from the spool: {exc!r}") from exc
            try:
                items = rows.add_request(batch, signal, payload)
            except Exception as exc:  # a request that cannot even be converted never will be
                if not self._quarantine(entry, exc, payload):
                    raise SpoolError(
                        f"{signal} request {seq} can be neither converted nor quarantined"
                    ) from exc
                continue
            if entry.replayed and not entry.items:
                self.stats.add(entry.record.signal, "received", items)  # counted by the previous process only
            entry.items = items
            counts[entry.record.signal] += items
            convertible.append(entry)
        if not convertible:
            return  # all quarantined
        client = self._client or self._open()
        settings = {"insert_deduplication_token": token, **_DEDUPLICATE_IN_VIEWS}
        started = time.perf_counter()
        for table in sorted(batch.columns):
            columns = batch.columns[table]
            names = list(columns)
            if table not in landed and columns[names[0]]:
                context = client.create_insert_context(table, names, column_oriented=True, settings=settings)
                context.req_block_size = len(columns[names[0]])  # one block, as the encoded path sends
                client.insert(data=[columns[n] for n in names], context=context)
            landed.add(table)
        self._written(convertible, dict(counts), time.perf_counter() - started)

    def _release(self, entries: list[_Entry]) -> None:
        """Forget written (or quarantined) entries: their memory, their pending bytes, their spool records."""
        held = sum(entry.record.length for entry in entries if entry.payload is not None)
        for entry in entries:
            entry.payload = None
            entry.released = True
        with self._cond:
            self._memory_bytes -= held
        if self._deferred is not None:  # a split batch: released from the spool together (see _split)
            self._deferred.extend(entries)
            return
        self.spool.release(
            [entry.record.seq for entry in entries], sum(entry.record.length for entry in entries)
        )

    def _quarantine(self, entry: _Entry, exc: BaseException, payload: bytes | None = None) -> bool:
        """Move a request ClickHouse will never accept aside (spool/quarantine/) so the rest keeps flowing.

        Where that cannot be written (a full disk), the request stays in the spool, unreleased (False), for the
        caller to try again: an error escaping here would end the writer thread while serve goes on acknowledging
        requests."""
        directory = self.spool.directory / "quarantine"
        name = f"{entry.record.seq:020d}-{entry.record.signal}"
        try:
            make_private_directory(directory, internal=True)
            # Quarantined payloads were 0644 before llmtap kept its files private.
            tighten_directory(directory)
            write_private_file(directory / f"{name}.pb", self._payload(entry) if payload is None else payload)
            write_private_file(directory / f"{name}.error.txt", (_describe(exc) + "\n").encode())
            # Their names, and the quarantine's own, must survive a power loss: the spool forgets the request next.
            fsync_directory(directory)
            fsync_directory(self.spool.directory)
        except OSError as error:
            log.error("cannot quarantine %s request %d (%s): it stays in the spool, not inserted; "
                      "ClickHouse refused it: %s", entry.record.signal, entry.record.seq, error, _describe(exc))  # fmt: skip
            return False
        log.error("quarantined %s request %d: %s", entry.record.signal, entry.record.seq, _describe(exc))
        self.stats.add(entry.record.signal, "dropped", entry.items)
        self._release([entry])
        return True

    def _quarantine_or_wait(self, entry: _Entry, exc: BaseException) -> None:
        """Quarantine a request ClickHouse refused as data, waiting while that cannot be written (a full disk),
        with /health's spool not writable, until it can or serve stops (then it stays for the next start).
        Going on without it would hold ``written`` at its seq: no later segment deleted, none counted pending, the
        disk filling until a restart, with nobody trying the quarantine again once space returns."""
        waits = 0
        while not self._quarantine(entry, exc):
            waits += 1
            self.spool.writer_stalled = True
            if self._stopping:
                return
            self._sleep(min(30.0, 0.5 * 2 ** min(waits, 6)))
        self.spool.writer_stalled = False

    def _open(self) -> Any:
        self._client = self._connect()
        return self._client

    def _sleep(self, seconds: float) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._stopping, timeout=seconds)


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
