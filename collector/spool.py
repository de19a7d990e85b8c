"""The write-ahead spool: every accepted request is on disk, fsynced, before its 2xx/OK is sent.

Layout of the spool directory::

    LOCK                      held (flock) by the one serve process that owns the spool
    segment-<first seq>.wal   append-only records, rotated at ``segment_bytes``
    checkpoint.json           {"spool": id, "written": N, "released": [[lo, hi], ...], "open": [[[lo, hi], ...], ...]}

Records are released one by one (:meth:`Spool.release`), in whatever order they were written: concurrent requests
reach the writer's queue in the order their fsyncs return, not in seq order. ``written`` only moves up to the
first record not yet released, so the checkpoint never passes a record that is still waiting; the records released
past it are listed in ``released`` (as ranges of seqs), so a restart does not insert them again.

A record is ``<length u32><crc32 u32><seq u64><signal u8>`` followed by the payload (the validated request,
serialized protobuf). Appends from concurrent requests share one fsync (group commit). On start every record
after ``written`` and not released is replayed.

Exactly-once inserts: before a batch is inserted, :meth:`Spool.begin` lists its seqs under ``open`` and gives it
an insert de-duplication token, derived from the spool's random ``id`` (a new spool never reuses an old one's
tokens, though seqs start again) and those seqs. A batch stays open until all its records are released. After a
crash, each open batch is replayed as that very batch with that very token, so every ClickHouse table, raw or fed
by a materialized view, keeps what it had of it and takes what it missed (migration 0017).

An append that fails (a full disk) is cut off again, so later records never land behind a torn one; a torn record
left by a crash is at a segment's tail and ignored, and one found anywhere else is skipped, with an error logged,
and replay goes on after it. Segments whose records are all written are deleted.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import heapq
import json
import logging
import os
import re
import secrets
import shutil
import struct
import threading
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmtap.clickhouse.private_files import (
    create_private_file,
    make_private_directory,
    open_no_follow,
    replace_private_file,
)

_HEADER = struct.Struct("<IIQB")
_SIGNAL_CODES = {"traces": 1, "metrics": 2, "logs": 3}
_SIGNAL_NAMES = {code: name for name, code in _SIGNAL_CODES.items()}
_MAX_RECORD = 1 << 31
_DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}

log = logging.getLogger("llmtap.serve")

try:
    import fcntl
except ImportError:  # Windows: no advisory lock, one serve per spool is then the user's responsibility
    fcntl = None  # type: ignore[assignment]


class SpoolError(RuntimeError):
    """The spool directory cannot be used (held by another process, unwritable, full)."""


class SpoolFull(SpoolError):
    """The spool's disk is full (or its quota used up): what it refused can be sent again once space returns."""


@dataclass(frozen=True)
class Record:
    """Where one accepted request lives on disk."""

    seq: int
    signal: str
    segment: Path
    offset: int  # of the payload
    length: int


@dataclass(eq=False)  # by identity: two segments can share a path (see _cut_partial_append)
class _Segment:
    path: Path
    first_seq: int
    last_seq: int
    size: int


class Spool:
    """Append-only, fsynced log of accepted requests with a written-up-to checkpoint."""

    def __init__(self, directory: Path, *, segment_bytes: int = 64 << 20) -> None:
        self.directory = Path(directory)
        self.segment_bytes = segment_bytes
        try:
            make_private_directory(self.directory)
            # Held for the process life, so no `with`.
            self._lock_file = open(self.directory / "LOCK", "a+", opener=open_no_follow)  # noqa: SIM115
        except OSError as exc:
            raise SpoolError(f"cannot use the spool directory {self.directory}: {exc}") from exc
        if fcntl is not None:
            try:
                fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                self._lock_file.close()
                raise SpoolError(
                    f"the spool directory {self.directory} is in use by another `llmtap serve`; "
                    "stop it or give this one its own --spool-dir"
                ) from None
        state = self._read_checkpoint()
        self.id: str = state.get("spool") or secrets.token_hex(8)
        self.written: int = state.get("written", 0)
        # Seqs released past `written`: in ClickHouse (or quarantined) already, so not to be replayed.
        self._released_before = {seq for seq in _seqs(state.get("released", [])) if seq > self.written}
        # Batches that may be in ClickHouse, in part or whole, and are not released yet: seqs -> None (in order).
        self._open: dict[tuple[int, ...], None] = {
            tuple(_seqs(ranges)): None for ranges in state.get("open", [])
        }
        if state.get("inflight", 0) > self.written:  # a checkpoint of llmtap before de-duplication tokens
            log.warning("the spool's checkpoint is from an earlier llmtap: requests %d to %d, which it was "
                        "inserting when it stopped, may be stored twice", self.written + 1, state["inflight"])  # fmt: skip
        self._segments: list[_Segment] = []
        self._append_lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._fd: int | None = None
        self._position = 0  # bytes appended to the current segment
        self._synced = 0  # bytes of the current segment known to be on disk
        self._next_seq = self.written + 1
        self._pending_bytes = 0
        self._unreleased: list[int] = []  # heap of the seqs appended (or replayed) and not released yet
        self._released: set[int] = set()  # released seqs still behind an unreleased one
        self._full_need = 0  # bytes the last append could not write for a full disk (0: writable)

    # ---- replay -------------------------------------------------------------------------------------------
    def recover(self) -> list[Record]:
        """Scan existing segments; return records after the checkpoint, in order. Call once, before append."""
        records: list[Record] = []
        for path in sorted(self.directory.glob("segment-*.wal")):
            segment_records, size = self._scan(path)
            if not segment_records:
                path.unlink(missing_ok=True)
                continue
            self._segments.append(_Segment(path, segment_records[0].seq, segment_records[-1].seq, size))
            released = self._released_before
            records.extend(r for r in segment_records if r.seq > self.written and r.seq not in released)
            self._next_seq = max(self._next_seq, segment_records[-1].seq + 1)
        self._next_seq = max(self._next_seq, max(self._released_before, default=0) + 1)
        self._pending_bytes = sum(r.length for r in records)
        # The seqs released before count as unreleased ones released at once: `written` then moves past them.
        self._unreleased = sorted([r.seq for r in records] + list(self._released_before))
        self._released = set(self._released_before)
        replayed = {r.seq for r in records}
        self._open = {batch: None for batch in self._open if replayed.intersection(batch)}
        with self._append_lock:
            self._pop_released()
        self._advance()
        return records

    def open_batches(self) -> list[tuple[int, ...]]:
        """The batches (their seqs, ascending) that a previous process may have inserted in part, in the order it
        began them. Their records still in the spool must be inserted again as those batches, with the tokens
        :meth:`begin` gives them."""
        return list(self._open)

    def _scan(self, path: Path) -> tuple[list[Record], int]:
        records: list[Record] = []
        offset = 0
        try:
            with open(path, "rb", opener=open_no_follow) as handle:
                data = handle.read()
        except OSError as exc:
            raise SpoolError(f"cannot read the spool segment: {exc}") from exc
        last_seq = _first_seq(path) - 1
        while offset + _HEADER.size <= len(data):
            record = _record_at(data, offset, path)
            if record is None or record.seq <= last_seq:  # seqs only go up: a lower one is not a record
                resumed = _next_intact(data, offset, path, last_seq)
                _report_torn(path, offset, (resumed or len(data)) - offset, resumed is not None)
                if resumed is None:
                    break
                offset = resumed
                continue
            records.append(record)
            last_seq = record.seq
            offset = record.offset + record.length
        return records, offset

    def read(self, record: Record) -> bytes:
        """The payload of a record (for records whose bytes were not kept in memory)."""
        with open(record.segment, "rb", opener=open_no_follow) as handle:
            handle.seek(record.offset)
            return handle.read(record.length)

    # ---- append -------------------------------------------------------------------------------------------
    def append(self, signal: str, payload: bytes) -> Record:
        """Write one record and return once it is durable (fsynced), sharing fsyncs with concurrent callers.

        Raises SpoolFull when the disk is full; the segment is then left as it was before the call."""
        if len(payload) >= _MAX_RECORD:
            raise SpoolError("record too large for the spool")
        with self._append_lock:
            try:
                record = self._append_locked(signal, payload)
            except SpoolFull as exc:
                self._note_full(_HEADER.size + len(payload), exc)
                raise
            self._note_writable()
            fd, needed = self._fd, self._position
        self._sync(fd, needed)
        return record

    def _append_locked(self, signal: str, payload: bytes) -> Record:
        if self._fd is None or self._position >= self.segment_bytes:
            self._rotate()
        seq = self._next_seq
        header_tail = struct.pack("<QB", seq, _SIGNAL_CODES[signal])
        crc = zlib.crc32(payload, zlib.crc32(header_tail))
        data = struct.pack("<II", len(payload), crc) + header_tail + payload
        try:
            _write_all(self._fd, data)
        except OSError as exc:
            self._cut_partial_append()
            raise _spool_error("cannot append to the spool", exc) from exc
        self._next_seq += 1
        heapq.heappush(self._unreleased, seq)
        segment = self._segments[-1]
        record = Record(seq, signal, segment.path, self._position + _HEADER.size, len(payload))
        self._position += len(data)
        segment.last_seq = seq
        segment.size = self._position
        self._pending_bytes += len(payload)
        return record

    def _cut_partial_append(self) -> None:
        """Truncate a half-written record away: appends after it would land behind bytes replay cannot read
        past. If the cut fails too, the segment ends there (a torn tail, skipped) and the next append starts
        a new one."""
        try:
            os.ftruncate(self._fd, self._position)
        except OSError as exc:
            segment = self._segments[-1]
            log.error(
                "cannot cut a half-written record off %s (%s); starting a new segment", segment.path, exc
            )
            self._close_current()
            if segment.last_seq < segment.first_seq:
                # It holds no record and used up no seq: the next segment gets its name, and releasing the
                # records before it would count this entry written and delete that next segment's file.
                self._segments.remove(segment)

    def _note_full(self, need: int, exc: SpoolFull) -> None:
        if not self._full_need:
            log.error("%s; requests get 503 + Retry-After until space returns", exc)
        self._full_need = need

    def _note_writable(self) -> None:
        if self._full_need:
            log.warning("the spool %s is writable again", self.directory)
        self._full_need = 0

    def writable(self) -> bool:
        """False from an append refused for a full disk until a record that size fits again. Checked here too,
        so /health recovers without traffic (a balancer that stops sending on its 503 would never bring any)."""
        need = self._full_need
        if need and shutil.disk_usage(self.directory).free >= need:
            with self._append_lock:
                self._note_writable()
        return not self._full_need

    def _sync(self, fd: int, needed: int) -> None:
        with self._sync_lock:
            if fd != self._fd or self._synced >= needed:
                return  # another caller's fsync (or the rotation's) already covered this record
            target = self._position  # every byte before it has been written (appends only grow it)
            os.fsync(fd)
            self._synced = target

    def _rotate(self) -> None:
        # Called with the append lock held.
        self._close_current()
        path = self.directory / f"segment-{self._next_seq:020d}.wal"
        try:
            self._fd = create_private_file(path, os.O_WRONLY | os.O_APPEND)
        except OSError as exc:
            raise _spool_error(f"cannot start the spool segment {path}", exc) from exc
        _fsync_directory(self.directory)
        self._position = 0
        self._synced = 0
        self._segments.append(_Segment(path, self._next_seq, self._next_seq - 1, 0))

    def _close_current(self) -> None:
        # Called with the append lock held. The segment is fsynced before it is closed.
        if self._fd is not None:
            with self._sync_lock:
                os.fsync(self._fd)
                os.close(self._fd)
                self._fd = None  # callers still waiting to fsync the old segment see it was done

    # ---- checkpoint ---------------------------------------------------------------------------------------
    def begin(self, seqs: Iterable[int]) -> str:
        """The records ``seqs`` are about to be inserted as one batch: note it on disk (before the insert, so a
        crash in it finds the batch open) and return its insert de-duplication token. Idempotent: a retry of
        the batch gets the same token without another write."""
        batch = tuple(sorted(seqs))
        if batch not in self._open:
            self._open[batch] = None
            self._write_checkpoint()
        digest = hashlib.sha256(json.dumps(_ranges(batch)).encode()).hexdigest()[:24]
        return f"llmtap-{self.id}-{batch[0]}-{batch[-1]}-{digest}"

    def release(self, seqs: Iterable[int], payload_bytes: int = 0) -> None:
        """These records are in ClickHouse (or quarantined): advance the checkpoint past every record released
        so far without a gap, close the batches whose records are all released, and delete segments that hold
        only written records."""
        with self._append_lock:
            self._released.update(seqs)
            self._pending_bytes -= payload_bytes
            self._pop_released()
        self._advance()

    def _pop_released(self) -> None:
        # Called with the append lock held.
        while self._unreleased and self._unreleased[0] in self._released:
            self._released.discard(heapq.heappop(self._unreleased))

    def _advance(self) -> None:
        with self._append_lock:
            # Every seq below the first unreleased one is written; with none, every seq appended so far.
            written = self._unreleased[0] - 1 if self._unreleased else self._next_seq - 1
        self.written = max(self.written, written)
        self._open = {
            batch: None
            for batch in self._open
            if not all(seq <= self.written or seq in self._released for seq in batch)
        }
        try:
            self._write_checkpoint()
        except OSError as exc:  # a full disk: segments stay until a checkpoint on disk says they are written
            log.warning("cannot write the spool checkpoint (%s); trying again at the next write", exc)
            return
        with self._append_lock:
            current = self._segments[-1] if self._fd is not None else None
            done = [s for s in self._segments if s.last_seq <= self.written and s is not current]
            self._segments = [s for s in self._segments if s not in done]
        for segment in done:
            segment.path.unlink(missing_ok=True)

    @property
    def pending_bytes(self) -> int:
        """Payload bytes accepted but not yet written to ClickHouse (what the spool size limit counts)."""
        return self._pending_bytes

    @property
    def disk_bytes(self) -> int:
        return sum(segment.size for segment in self._segments)

    def _read_checkpoint(self) -> dict[str, Any]:
        try:
            state = json.loads((self.directory / "checkpoint.json").read_text())
            return {
                "spool": str(state.get("spool", "")),
                "written": int(state.get("written", 0)),
                "inflight": int(state.get("inflight", 0)),
                "released": _checked_ranges(state.get("released", [])),
                "open": [_checked_ranges(batch) for batch in state.get("open", [])],
            }
        except (OSError, ValueError, TypeError, AttributeError):
            return {}  # a new spool id too: the tokens of another id can never match this spool's batches

    def _write_checkpoint(self) -> None:
        with self._append_lock:
            released = _ranges(sorted(self._released))
        state = {"spool": self.id, "written": self.written, "released": released,
                 "open": [_ranges(batch) for batch in self._open]}  # fmt: skip
        replace_private_file(self.directory / "checkpoint.json", json.dumps(state).encode())

    def close(self) -> None:
        with self._append_lock:
            if self._fd is not None:
                with contextlib.suppress(OSError):
                    os.fsync(self._fd)
                os.close(self._fd)
                self._fd = None
        self._advance()  # with no current segment, fully written segments all go
        self._lock_file.close()


def _ranges(seqs: Sequence[int]) -> list[list[int]]:
    """Ascending seqs as [first, last] ranges of consecutive ones (a batch's seqs are mostly consecutive)."""
    ranges: list[list[int]] = []
    for seq in seqs:
        if ranges and seq == ranges[-1][1] + 1:
            ranges[-1][1] = seq
        else:
            ranges.append([seq, seq])
    return ranges


def _seqs(ranges: Iterable[Sequence[int]]) -> list[int]:
    return [seq for first, last in ranges for seq in range(first, last + 1)]


def _checked_ranges(ranges: Any) -> list[tuple[int, int]]:
    pairs = [(int(first), int(last)) for first, last in ranges]
    if any(last < first for first, last in pairs):
        raise ValueError("not a range of seqs")
    return pairs


def _record_at(data: bytes, offset: int, path: Path) -> Record | None:
    """The record whose header starts at ``offset``, or None where the bytes there are not an intact one."""
    if offset < 0 or offset + _HEADER.size > len(data):
        return None
    length, crc, seq, code = _HEADER.unpack_from(data, offset)
    start = offset + _HEADER.size
    end = start + length
    if end > len(data) or code not in _SIGNAL_NAMES or zlib.crc32(data[offset + 8 : end]) != crc:
        return None
    return Record(seq, _SIGNAL_NAMES[code], path, start, length)


def _first_seq(path: Path) -> int:
    digits = path.stem.partition("-")[2]  # segment-<first seq>
    return int(digits) if digits.isdigit() else 0


def _next_intact(data: bytes, offset: int, path: Path, last_seq: int) -> int | None:
    """Where the first intact record after a torn one at ``offset`` starts: one with a seq above ``last_seq``, by
    any gap (a spool from before failed appends were cut off used up a seq on each). A seq within 2**32 of the
    last one has its top four bytes or the next ones, followed by a signal code: that finds candidates fast."""
    top = (last_seq + 1) >> 32
    tops = b"|".join(re.escape(struct.pack("<I", high)) for high in (top, top + 1))
    codes = re.escape(bytes(sorted(_SIGNAL_NAMES)))
    candidates = re.compile(b"(?=(?:" + tops + b")[" + codes + b"])")
    for match in candidates.finditer(data, offset + 13):  # the top bytes sit 12 bytes into a header
        start = match.start() - 12
        seq = struct.unpack_from("<Q", data, start + 8)[0]
        if seq > last_seq and _record_at(data, start, path) is not None:
            return start
    return None


def _report_torn(path: Path, offset: int, size: int, resumed: bool) -> None:
    if resumed:
        log.error("spool segment %s: skipped %d unreadable byte(s) at offset %d (a torn record); replay goes on "
                  "with the intact records after them", path, size, offset)  # fmt: skip
    else:
        log.warning("spool segment %s: ignored %d torn byte(s) at its end (an append cut short, never "
                    "acknowledged)", path, size)  # fmt: skip


def _spool_error(message: str, exc: OSError) -> SpoolError:
    """SpoolFull for a full disk or quota (a client may retry), SpoolError for anything else."""
    kind = SpoolFull if exc.errno in _DISK_FULL else SpoolError
    return kind(f"{message}: {exc}")


def _write_all(fd: int | None, data: bytes) -> None:
    assert fd is not None
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fsync_directory(directory: Path) -> None:
    # A new segment's directory entry must survive a crash too (POSIX only; a no-op where unsupported).
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
